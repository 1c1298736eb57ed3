"""The write-up author's own solution [JP] (recipes/author.yaml): SOLUTIONS.md §4b, as resolved."""

from __future__ import annotations

import pytest
import yaml

from replicator.core.config.recipe import resolve
from replicator.core.run.combination import plan_combination

from ..conftest import RECIPES

AUTHOR = RECIPES / "author.yaml"
SEVEN = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.mark.parametrize("toggles", [[], ["tiny"], ["smoke"], ["llama3"], ["llama3", "tiny"],
                                     ["llama3", "smoke"]])
def test_author_resolves_with_its_toggles(toggles):
    r = resolve(AUTHOR, toggles)
    assert r.name == "author" and [s.name for s in r.stages] == ["main"]
    assert r.final.plugins["prompt"]["truncate"] == "longest_first"
    assert r.final.model.lora.targets == SEVEN and r.final.model.freeze_layers == 0


def test_gemma_member_is_the_write_ups():
    """[JP]: Gemma-2, 3072 tokens, LoRA on the seven linear projections, FREEZE_LAYERS 0, the 33k data,
    truncation from the longest of prompt / A / B, 2x A100 40GB; global batch 8 as the public notebook."""
    raw = yaml.safe_load(AUTHOR.read_text())
    assert raw["model"]["freeze_layers"] == 0  # stated, not left to the default
    s = resolve(AUTHOR).final
    assert s.model.base == "google/gemma-2-9b-it" and s.model.load_in_4bit
    assert s.model.lora.targets == SEVEN and (s.model.lora.r, s.model.lora.alpha) == (16, 32)
    assert s.train.max_length == s.predict.max_length == 3072
    assert s.plugins["prompt"] == {"use": "plain_turns", "truncate": "longest_first"}
    assert s.plugins["extra"]["use"] == "arena_33k"
    assert s.plugins["swap"]["test_time"] is False and "temp" not in s.plugins  # no TTA, no calibration [JP]
    assert (s.train.global_batch, s.train.batch_size, s.train.grad_accum) == (8, 2, 1)
    assert (s.train.lr, s.train.warmup_steps, s.train.epochs) == (2e-4, 20, 1)
    assert s.train.optimizer == "adamw_8bit"
    assert (s.launch.gpus, s.launch.gpu, s.launch.parallel) == (2, "A100-40GB", "ddp")


def test_llama_member_keeps_the_gemma_settings():
    gemma, llama = resolve(AUTHOR).final, resolve(AUTHOR, ["llama3"]).final
    assert llama.model.base == "meta-llama/Meta-Llama-3-8B-Instruct"
    assert llama.model.lora == gemma.model.lora
    assert llama.train == gemma.train and llama.predict == gemma.predict
    assert llama.plugins == gemma.plugins


@pytest.mark.parametrize("toggles, bases, runs", [
    (["tiny"], {"gemma": "tiny:gemma2", "llama": "tiny:llama"}, 2),
    # smoke: one embedded model stands in for both, the Llama member with another LoRA rank (two runs)
    (["smoke"], {"gemma": "embedded:gemma-3-270m", "llama": "embedded:gemma-3-270m"}, 2),
])
def test_ensemble_is_gemma_071_and_llama_029(toggles, bases, runs, rich_data_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("REPLICATOR_REPORTS", str(tmp_path / "reports"))
    monkeypatch.setenv("REPLICATOR_ARTIFACTS", str(tmp_path / "artifacts"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    p = plan_combination(AUTHOR, toggles, data_dir=rich_data_dir)
    assert p.cfg.weights == "fixed"
    assert {n: m.weight for n, m in p.specs.items()} == {"gemma": 0.71, "llama": 0.29}
    members = p.members()
    assert [m.label for m in members] == ["gemma", "llama"] and len({m.run_id for m in members}) == runs
    assert {m.label: m.resolved.final.model.base for m in members} == bases
    for m in members:
        assert m.resolved.final.plugins["prompt"]["truncate"] == "longest_first"
        assert m.resolved.final.model.lora.targets == SEVEN and m.resolved.final.model.freeze_layers == 0


def test_the_plan_fits_two_a100_40gb(monkeypatch):
    """4-bit 9B LoRA at 3072 tokens: both members fit an A100 40GB by the plan (the stated choice)."""
    from replicator.core.run.resources import plan_resources

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    for toggles in ([], ["llama3"]):
        plan = plan_resources(AUTHOR, toggles, [])
        assert plan["fits"], (toggles, plan)
