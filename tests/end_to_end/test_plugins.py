"""Every built-in plugin (and the model options) inside a real tiny-model training run through a recipe."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest
import torch

from replicator.core.config.catalogue import BUILTINS
from replicator.core.config.recipe import resolve
from replicator.core.data.files import data_dir
from replicator.core.run.pipeline import run_recipe as run

from ..conftest import RECIPES, TINY

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
    used = set(re.findall(r"use: (\w+)", json.dumps(RUNS) + json.dumps(TINY)))  # TINY: default_head
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


def _run(overrides):
    from replicator.core.run.pipeline import run_recipe as run

    r = resolve(RECIPES / "smoke.yaml", [], TINY + ["train.epochs=2"] + overrides, data_dir=data_dir())
    return run(r, data_dir(), progress=False)


@pytest.mark.parametrize("overrides", [
    ["plugins.head={use: aux_model_heads}", "plugins.loss={use: focal_loss, gamma: 1.0}",
     "plugins.swap={use: swap_ab, train: full}", "plugins.temp={use: temperature_scaling}"],
    ["plugins.head={use: mlp_head}", "plugins.loss={use: label_smoothing}",
     "plugins.swap={use: swap_ab, train: alternate}", "plugins.platt={use: platt_scaling}",
     "plugins.rules={use: empty_identical_rules}"],
], ids=["aux-focal-full-temperature", "mlp-smoothing-alternate-platt-rules"])
def test_plugins_inside_a_tiny_run(isolated, overrides):
    torch.set_num_threads(1)
    _, m, _ = _run(overrides)
    for k in ("log_loss", "tta_log_loss", "final_log_loss"):
        assert math.isfinite(m[k])
    assert m["train_loss_last"] < m["train_loss_first"]
    if "train: full" in overrides[2]:
        assert m["n_train_rows_augmented"] == 2 * 2 * m["n_train_rows"]


def test_distillation_inside_a_two_stage_tiny_run(isolated):
    torch.set_num_threads(1)
    _, m, _ = _run(["stages={teacher: {outputs: [train]}, student: "
                    "{plugins: {loss: {use: distill_kl_cos, teachers: [teacher]}}}}"])
    assert m["final_stage"] == "student" and math.isfinite(m["final_log_loss"])
