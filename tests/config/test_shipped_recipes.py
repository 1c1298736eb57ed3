"""The shipped recipes state their batch as the write-ups do: ``train.global_batch`` (rows per optimizer step
over all processes, core/config/batch.py) in every training stage, with every toggle and every ensemble
member, and never ``grad_accum`` (which makes the global batch grow with the process count); the
full-size global batches are the sources' (SOLUTIONS.md)."""

from __future__ import annotations

import pytest
import yaml

from replicator.core.config.batch import batching
from replicator.core.config.recipe import resolve
from replicator.core.config.sections import build_ensemble, member_file

from ..conftest import ALL, RECIPES


def _mentions_grad_accum(node) -> list[str]:
    """Where a recipe's YAML names grad_accum: a key anywhere, or an override string."""
    found = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "grad_accum":
                found.append(str(k))
            found += [f"{k}.{w}" for w in _mentions_grad_accum(v)]
    elif isinstance(node, list):
        for v in node:
            found += _mentions_grad_accum(v)
    elif isinstance(node, str) and "grad_accum" in node:
        found.append(node)
    return found


def _variants(name: str):
    """(label, resolved) for the recipe, each of its toggles, and each ensemble member (with and without
    each toggle)."""
    path = RECIPES / name
    toggles = list(yaml.safe_load(path.read_text()).get("toggles") or {})
    for t in [None, *toggles]:
        chosen = [t] if t else []
        r = resolve(path, chosen, check_plugins=False)
        yield t or "(base)", r
        if r.config.get("ensemble") is None:
            continue
        _, members = build_ensemble(r.config["ensemble"], str(path))
        for m_name, m in members.items():
            file = member_file(m.recipe, str(path), m_name) if m.recipe else path
            tog = [*m.toggles, *(x for x in chosen if x not in m.toggles)]
            member = resolve(file, tog, list(m.overrides), check_plugins=False)
            yield f"{t or '(base)'} member {m_name}", member


def _training_stages(r):
    """The stages that fine-tune a model (a baseline or a frozen-feature stage has no optimizer steps)."""
    return [s for s in r.stages if not s.unused_hooks]


@pytest.mark.parametrize("name", ALL)
def test_recipe_file_never_names_grad_accum(name):
    assert _mentions_grad_accum(yaml.safe_load((RECIPES / name).read_text())) == []


@pytest.mark.parametrize("name", ALL)
def test_every_training_stage_states_its_global_batch(name):
    for label, r in _variants(name):
        for s in _training_stages(r):
            where = f"{name} {label} stage {s.name}"
            assert s.train.global_batch is not None, where
            assert s.train.grad_accum == 1, where
            # the rows per step do not depend on the process count
            for n in (1, 2, 4, 8):
                if s.train.batch_tokens or s.train.global_batch % n == 0:
                    assert batching(s.train, n).global_rows == s.train.global_batch, where


def _global(path, toggles=()):
    r = resolve(RECIPES / path, list(toggles), check_plugins=False)
    return {s.name: s.train.global_batch for s in r.stages}


def test_full_size_global_batches_are_the_sources():
    assert set(_global("1st.yaml").values()) == {64}  # [P1] "global batch_size = 64", [R1]
    # [R2]: 80 samples (400 in stage 3) per step, each as PAB + PAPB (stage 1) and its swap; m3 (ArmoRM) 16
    assert _global("2nd.yaml") == {"stage1": 320, "stage1_27b": 320, "stage1_armorm": 64, "stage2": 160,
                                   "stage3": 800}
    assert _global("2nd.yaml", ["armorm"]) == {"stage1": 320, "stage1_27b": 320, "stage1_armorm": 64,
                                               "stage2": 32, "stage3": 32}
    assert set(_global("3rd.yaml").values()) == {16}  # [P3], [R3m] configs
    assert set(_global("3rd.yaml", ["raja"]).values()) == {32}  # [R3r] 1 x accum 4 x 8 processes
    assert set(_global("9th.yaml").values()) == {16}  # [P9]
    assert set(_global("16th.yaml").values()) == {8}  # [P16] "full batch 8"
    assert set(_global("5th.yaml").values()) == {8}  # unknown in [P5]: our choice
    assert set(_global("author.yaml").values()) == {8}  # unknown in [JP]: the public notebook's, our choice


def test_2nd_full_size_stages_use_flash_attention_and_token_budgets_the_cpu_toggles_do_not():
    """[R2]: flash attention, micro-batches of at most 16k tokens (2k for the 27B)."""
    full = resolve(RECIPES / "2nd.yaml", check_plugins=False)
    for s in full.stages:
        assert s.model.attn_implementation == "flash_attention_2", s.name
        assert s.train.batch_tokens == (2048 if s.name == "stage1_27b" else 16384), s.name
        assert s.train.batch_tokens <= 16384
    for toggle in ("tiny", "smoke"):
        for s in resolve(RECIPES / "2nd.yaml", [toggle], check_plugins=False).stages:
            assert s.model.attn_implementation == "auto" and not s.train.batch_tokens, (toggle, s.name)


def test_2nd_armorm_member_pseudo_labels_are_the_gemma_members():
    """[R2] used one label file (9B + 27B + ArmoRM, no TTA) for both final models: the ArmoRM member's
    stage 1 is the Gemma member's, and it predicts at [R2]'s 2048 conversation tokens + the template."""
    gemma = resolve(RECIPES / "2nd.yaml", check_plugins=False)
    armorm = resolve(RECIPES / "2nd.yaml", ["armorm", "tta"], check_plugins=False)
    first = [s for s in gemma.stages if s.outputs]
    assert [s.name for s in first] == ["stage1", "stage1_27b", "stage1_armorm"]
    for s in first:
        other = next(x for x in armorm.stages if x.name == s.name)
        assert (other.model, other.train, other.predict, other.plugins) == \
            (s.model, s.train, s.predict, s.plugins)
        assert s.plugins["swap"]["test_time"] is False
    assert armorm.final.model.base == "RLHFlow/ArmoRM-Llama3-8B-v0.1"
    assert armorm.final.train.max_length == armorm.final.predict.max_length == 2048 + (4340 - 4096)


def test_deviation_fixes_hold():
    first = resolve(RECIPES / "1st.yaml", check_plugins=False)
    st = {s.name: s for s in first.stages}
    assert all(s.train.betas == [0.9, 0.95] for s in first.stages)  # [R1]
    assert st["student"].train.eval_every == 100  # [R1]: every 400 micro-batches, 4 per step
    assert st["teacher_llama"].predict.max_length == st["teacher_llama"].train.max_length == 1024
    assert st["pretrain_gemma"].plugins["extra"]["temperature"] == 0.0  # hard labels [P1]
    assert first.final.plugins["prompt"]["append_eos"] is False  # [R1] pooled the token before the EOS
    third = {s.name: s for s in resolve(RECIPES / "3rd.yaml", check_plugins=False).stages}
    assert third["base"].model.lora.dropout == 0.0 and third["pseudo"].model.lora.dropout == 0.05  # [R3m]
    sixteenth = resolve(RECIPES / "16th.yaml", check_plugins=False).final
    assert sixteenth.predict.load_in_8bit and sixteenth.predict.merge_lora
    assert sixteenth.plugins["head"]["naming"] == "arena"  # the 58 classes of [P16]'s copy
