"""The precision rules of core/model/precision.py: what auto loads, fp32 masters, the training autocast."""

from __future__ import annotations

import pytest

from replicator.core.config.catalogue import build_plugins
from replicator.core.config.recipe import resolve
from replicator.core.model import precision

from ..conftest import RECIPES


def _loaded(recipe: str, *overrides: str, toggles=("tiny",)):
    from replicator.core.model.loading import load_model

    r = resolve(RECIPES / recipe, list(toggles), list(overrides), check_plugins=False)
    stage = r.final
    model, _, info = load_model(stage.model, build_plugins(stage.plugins, "x"))
    return stage, model, info


def test_the_cpu_bf16_flags_are_read_and_auto_is_in_the_run_id(monkeypatch, tmp_path):
    """A CPU's native bf16 flags (``/proc/cpuinfo``) are found and said; what auto loads is in the run key."""
    import torch

    from replicator.core.config.canonical import hash_of, run_key
    from replicator.core.run import fingerprint

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_tile\n\n"
                    "processor\t: 1\nflags\t\t: fpu\n")
    assert precision.cpu_bf16(precision.cpu_flags(str(info))) == ["avx512_bf16"]
    assert precision.cpu_flags(str(tmp_path / "none")) == set()  # not Linux: no flags
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx2", "amx_bf16"})
    assert "amx_bf16" in precision.why_auto() or torch.cuda.is_available()
    assert precision.auto_dtype("cpu") == "bfloat16"  # native bf16 matrix units: auto is bf16
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx2"})
    assert "emulated" in precision.why_auto() or torch.cuda.is_available()
    assert precision.auto_dtype("cpu") == "float32"  # none: bf16 would be emulated, auto stays fp32
    assert precision.load_dtype("bfloat16") == torch.bfloat16
    assert precision.load_dtype("auto") == getattr(torch, precision.auto_dtype())
    env = fingerprint.environment()
    assert env["auto_dtype"] == precision.auto_dtype()
    keys = []
    for auto in ("float32", "bfloat16"):
        info = {"config_hash": "c", "seed": 0, "data_hash": "d", "code": {"version": "v", "hash": "h"},
                "plugin_distributions": {}, "n_processes": 1, "environment": dict(env, auto_dtype=auto)}
        keys.append(hash_of(run_key(info)))
    assert keys[0] != keys[1]


def test_a_bf16_lora_model_trains_fp32_heads_and_adapters_over_bf16_frozen_weights():
    """16th's tiny member in bf16: peft keeps the adapters fp32 but its trainable copy of the head (and
    the auxiliary model-name heads) bf16, which a plain AdamW would not move (34a5fe5 stopped here)."""
    import torch

    stage, model, info = _loaded("16th.yaml", "model.dtype=bfloat16")
    assert info["dtype"] == "bfloat16"
    before = {n for n, p in model.named_parameters() if p.requires_grad and p.dtype == torch.bfloat16}
    assert any("score" in n for n in before), before  # the head: what the rule is for
    cast = precision.keep_masters(model, stage.train.optimizer)
    assert set(cast) == before
    trainable = {p.dtype for p in model.parameters() if p.requires_grad}
    frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
    assert trainable == {torch.float32} and frozen == {torch.bfloat16}
    assert precision.compute_precision(info["dtype"], stage.train.mixed_precision) == "bf16"
    assert precision.to_weights_dtype(model, info["dtype"]) > 0
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_kahan_keeps_16_bit_weights_and_fp32_models_keep_their_autocast_setting():
    import torch

    stage, model, info = _loaded("2nd.yaml", "model.dtype=bfloat16")
    assert stage.train.optimizer == "adamw_kahan" and stage.model.lora is None
    assert precision.keep_masters(model, "adamw_kahan") == []
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.bfloat16}
    assert precision.compute_precision("float32", "no") == "no"
    assert precision.compute_precision("float32", "bf16") == "bf16"
    assert precision.compute_precision("float16", "no") == "fp16"
    assert precision.to_weights_dtype(model, "float32") == 0


@pytest.mark.parametrize("optimizer", ["adamw", "adamw_kahan"])
def test_a_bf16_training_step_moves_the_head_at_a_small_learning_rate(optimizer, tmp_path):
    """The runner's own loop, bf16 weights, lr 1e-5: every head weight moves with fp32 masters (a bf16
    head under plain AdamW would keep most of them bit-identical) and the logits reach the loss in fp32."""
    import torch

    from replicator.core.train import trainer

    stage, model, info = _loaded("16th.yaml", "model.dtype=bfloat16", "train.lr=1e-5", "train.head_lr=1e-5",
                                 f"train.optimizer={optimizer}", "train.warmup_steps=0",
                                 "train.warmup_ratio=0", "train.schedule=constant")
    head = {n: p.detach().float().clone() for n, p in model.named_parameters()
            if p.requires_grad and "modules_to_save" in n and ".pref." in n}
    loop = trainer._start(stage, model, info, steps=1, init_from=None, artifacts=tmp_path)
    assert loop.acc.mixed_precision == "bf16"
    ids = torch.randint(3, 100, (4, 12))
    logits = trainer.forward_logits(loop.model, ids, torch.ones_like(ids))
    loss = torch.nn.functional.cross_entropy(logits.float()[:, :3], torch.tensor([0, 1, 2, 0]))
    loop.acc.backward(loss)
    loop.optimizer.step()
    after = dict(loop.acc.unwrap_model(loop.model).named_parameters())
    moved = [(after[n].detach().float() != v).float().mean().item() for n, v in head.items()]
    if optimizer == "adamw":
        assert {after[n].dtype for n in head} == {torch.float32}
        assert min(moved) > 0.9, moved
    else:  # Kahan keeps bf16 weights: the step lands partly in its compensation buffer
        assert {after[n].dtype for n in head} == {torch.bfloat16}


@pytest.mark.parametrize("quant", ["model.load_in_4bit=true", "model.load_in_8bit=true"])
def test_a_kbit_model_trained_with_bf16_compute_predicts_after_training(quant, rich_data_dir, isolated):
    """bf16 compute (auto on CUDA) with 4/8-bit weights: peft's k-bit preparation makes the unquantized
    weights fp32, so the trained head must stay fp32 for the prediction that follows training (casting it
    back to bf16 stopped it: m1 and m2 of different dtypes)."""
    from replicator.core.run.pipeline import run_recipe

    r = resolve(RECIPES / "smoke.yaml", ["single_split"],
                ["model.base=tiny:llama128", quant, "model.dtype=bfloat16", "train.max_rows=16",
                 "predict.max_rows=8", "train.max_steps=1", "train.max_length=64", "predict.max_length=64"],
                data_dir=rich_data_dir)
    _, m, _ = run_recipe(r, rich_data_dir, progress=False)
    assert m["stages"]["main"]["optimizer_steps"] == 1


def test_the_plan_uses_the_same_auto_rule_for_the_hardware_it_names():
    assert precision.planned_auto_dtype("V100-32GB") == precision.planned_auto_dtype("T4") == "float16"
    assert precision.planned_auto_dtype("A100-80GB") == "bfloat16"
    assert precision.planned_auto_dtype("cpu") == precision.auto_dtype("cpu")
