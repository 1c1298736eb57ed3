"""The catalogue as a whole: meta-tests over hooks and plugins, and every built-in plugin (and the
model options) inside a real tiny-model training run through a recipe."""

from __future__ import annotations

import inspect
import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest

from replicator.core import hookspecs
from replicator.core.config.catalogue import BUILTINS, catalogue, describe, plugin_hooks
from replicator.core.config.recipe import resolve
from replicator.core.run.pipeline import run_recipe as run

from .conftest import RECIPES, TINY

TESTS = Path(__file__).parent

# ---------------------------------------------------------------- meta-tests


def test_every_hook_is_documented_with_its_kind():
    for hook, kind in hookspecs.HOOK_KINDS.items():
        doc = inspect.getdoc(getattr(hookspecs, hook))
        assert doc and doc.startswith(f"{kind}: return"), hook


def test_every_hook_has_a_builtin_implementation():
    implemented = {h for cls in catalogue().values() for h in plugin_hooks(cls)}
    assert implemented == set(hookspecs.HOOK_KINDS)


def test_every_hook_is_named_in_a_test():
    text = "\n".join(p.read_text() for p in TESTS.glob("test_*.py") if p.name != Path(__file__).name)
    for hook in hookspecs.HOOK_KINDS:
        assert re.search(rf"\b{hook}\b", text), f"hook {hook} is not named in any test"


def test_every_builtin_plugin_and_parameter_is_documented():
    entries = {e["name"]: e for e in describe()}
    assert set(entries) == set(BUILTINS)
    for name, e in entries.items():
        assert e["hooks"], f"{name} implements no hook"
        assert len(e["doc"]) > 40, f"{name} has no docstring"
        for pname, _tp, _default, doc in e["params"]:
            assert doc.strip(), f"{name}.{pname} has no documentation"


def test_cli_plugins_lists_every_plugin_with_hooks_and_params():
    from typer.testing import CliRunner

    from replicator.core.cli import app

    out = CliRunner().invoke(app, ["plugins"]).output
    for name in BUILTINS:
        assert re.search(rf"^{name}  \[", out, re.M), name
    assert "- truncate:" in out and "- test_time:" in out and "- gamma:" in out


def test_third_party_plugins_load_through_the_entry_point_group(monkeypatch):
    from importlib.metadata import EntryPoint

    from replicator.core.config import catalogue as manager

    ep = EntryPoint(name="my_clip", value="replicator.plugins.clip_probs:ClipProbs",
                    group=manager.ENTRY_POINT_GROUP)
    monkeypatch.setattr(manager, "entry_points",
                        lambda group: [ep] if group == manager.ENTRY_POINT_GROUP else [])
    cat = manager.catalogue()
    assert "my_clip" in cat and cat["my_clip"].__name__ == "ClipProbs"
    shadow = EntryPoint(name="clip_probs", value="x:y", group=manager.ENTRY_POINT_GROUP)
    monkeypatch.setattr(manager, "entry_points", lambda group: [shadow])
    with pytest.raises(Exception, match="shadows a built-in"):
        manager.catalogue()


# ---------------------------------------------------------------- every plugin in a tiny run


POOL = ("stages={label: {outputs: [pool], plugins: {pool: {use: pseudo_labels, file: pool/unlabelled.csv}}}, "
        "student: {plugins: {pool: {use: pseudo_labels, file: pool/unlabelled.csv, from_stage: label}}}}")
DISTILL = ("stages={teacher: {outputs: [train]}, "
           "student: {plugins: {loss: {use: distill_kl_cos, teachers: [teacher]}}}}")
FORMATS = ["plain_turns", "qa_triple_quotes", "judge_pab", "judge_papb", "judge_multi", "tagged_turns",
           "context_result", "round_headers", "context_last", "turn_rounds"]
RUNS = {
    **{f"format-{f}": [f"plugins.prompt={{use: {f}}}"] for f in FORMATS},
    "format-budgets-policy": ["plugins.prompt={use: turn_rounds, truncate: budgets}", "train.max_length=48"],
    "data-arena_33k": ["plugins.extra={use: arena_33k, file: arena-33k/battles.json}"],
    "data-ultrafeedback_pairs": ["plugins.extra={use: ultrafeedback_pairs}"],
    "data-hh_rlhf": ["plugins.extra={use: hh_rlhf}"],
    "data-mt_bench": ["plugins.extra={use: mt_bench, aggregate: soft}"],
    "data-alpacaeval_pairs": ["plugins.extra={use: alpacaeval_pairs}"],
    "data-folds": ["plugins.data={use: kaggle_csv, folds: 4, fold: 1}"],
    "data-pseudo_labels": [POOL],
    "head-mlp-smoothing-duplicate-temperature": [
        "plugins.head={use: mlp_head}", "plugins.loss={use: label_smoothing, eps: 0.03}",
        "plugins.swap={use: swap_ab, train: duplicate}", "plugins.temp={use: temperature_scaling}"],
    "head-aux-focal-full-platt-rules": [
        "plugins.head={use: aux_model_heads}", "plugins.loss={use: focal_loss, gamma: 2.0}",
        "plugins.swap={use: swap_ab, train: full}", "plugins.platt={use: platt_scaling}",
        "plugins.rules={use: empty_identical_rules}"],
    "swap-alternate-swapped": ["plugins.swap={use: swap_ab, train: alternate}", "train.epochs=2"],
    "loss-distill": [DISTILL],
}


def _tiny_run(overrides, data: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("REPLICATOR_REPORTS", str(tmp_path / "reports"))
    monkeypatch.setenv("REPLICATOR_ARTIFACTS", str(tmp_path / "artifacts"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    r = resolve(RECIPES / "smoke.yaml", [], TINY + ["train.epochs=1"] + overrides, data_dir=data)
    return r, run(r, data, progress=False)[1]


def test_every_builtin_plugin_is_in_a_run():
    used = set(re.findall(r"use: (\w+)", json.dumps(RUNS)))
    smoke = {b["use"]
             for b in resolve(RECIPES / "smoke.yaml", check_plugins=False).config["plugins"].values()}
    assert set(BUILTINS) - used - smoke == set()


@pytest.mark.parametrize("name", list(RUNS))
def test_plugin_inside_a_tiny_run(name, rich_data_dir, tmp_path, monkeypatch):
    r, m = _tiny_run(RUNS[name], rich_data_dir, tmp_path, monkeypatch)
    for stage in m["stages"].values():
        for k in ("log_loss", "tta_log_loss", "final_log_loss"):
            assert math.isfinite(stage[k]), (name, k)
        assert stage["optimizer_steps"] > 0
    base_rows = 51  # the synthetic train.csv minus the grouped validation share
    if name.startswith("data-") and name not in ("data-folds",):
        assert m["n_train_rows"] > base_rows, m["n_train_rows"]
    if name == "data-pseudo_labels":
        assert m["stages"]["label"]["outputs"]["pool"] == 4
    if "full" in name:
        assert m["n_train_rows_augmented"] == 2 * m["n_train_rows"]


def test_model_options_inside_a_tiny_run(rich_data_dir, tmp_path, monkeypatch):
    """Gemma-2 switches (softcap off, sliding window off), frozen layers, a head learning rate."""
    r, m = _tiny_run(["model.base=tiny:gemma2", "model.attn_softcap=false", "model.sliding_window=false",
                      "model.freeze_layers=1", "train.head_lr=0.01"],
                     rich_data_dir, tmp_path, monkeypatch)
    assert math.isfinite(m["tta_log_loss"])
    from replicator.core.config.catalogue import build_plugins
    from replicator.core.model.loading import load_model

    model, _, _ = load_model(r.final.model, build_plugins(r.final.plugins, "x"))
    cfg = model.base_model.model.config
    assert cfg.attn_logit_softcapping is None and set(cfg.layer_types) == {"full_attention"}
    lora_layers = {int(k.split("layers.")[1].split(".")[0]) for k, p in model.named_parameters()
                   if "lora_" in k and p.requires_grad}
    assert lora_layers == {1}  # layer 0 frozen: no adapters there


def test_model_switch_errors_name_the_key(monkeypatch):
    from replicator.core.config.catalogue import build_plugins
    from replicator.core.errors import ReplicatorError
    from replicator.core.model.loading import load_model

    r = resolve(RECIPES / "smoke.yaml", [], TINY + ["model.sliding_window=false"])
    with pytest.raises(ReplicatorError, match="model.sliding_window"):
        load_model(r.final.model, build_plugins(r.final.plugins, "x"))


def test_full_fine_tuning_and_8bit_inference(rich_data_dir, tmp_path, monkeypatch):
    pytest.importorskip("bitsandbytes")
    r, m = _tiny_run(["model.lora=null", "predict.load_in_8bit=true"], rich_data_dir, tmp_path, monkeypatch)
    assert m["stages"]["main"]["model"]["trainable_params"] == m["stages"]["main"]["model"]["all_params"]
    assert math.isfinite(m["tta_log_loss"])


def test_submission_postprocess_uses_validation_fit(rich_data_dir, tmp_path, monkeypatch):
    from replicator.core.run.submission import predict

    r, m = _tiny_run(["plugins.temp={use: temperature_scaling}"], rich_data_dir, tmp_path, monkeypatch)
    run_dir = next((tmp_path / "reports").glob("smoke/*"))
    out = tmp_path / "sub.csv"
    predict(str(run_dir), rich_data_dir / "pool" / "unlabelled.csv", out, progress=False)
    sub = pd.read_csv(out)
    assert len(sub) == 4 and (sub.iloc[:, 1:].sum(1).round(6) == 1).all()


@pytest.mark.parametrize("quant", ["model.load_in_4bit=true", "model.load_in_8bit=true"])
def test_quantised_lora_training_inside_a_tiny_run(quant, rich_data_dir, tmp_path, monkeypatch):
    """QLoRA (nf4) and 8-bit backbones train on this CPU through bitsandbytes (tiny:llama128: 4-bit
    blocks need layers at least 64 wide)."""
    pytest.importorskip("bitsandbytes")
    r, m = _tiny_run(["model.base=tiny:llama128", quant, "train.max_steps=4"], rich_data_dir, tmp_path,
                     monkeypatch)
    assert math.isfinite(m["tta_log_loss"]) and m["optimizer_steps"] == 4
