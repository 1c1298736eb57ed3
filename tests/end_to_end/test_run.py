"""End-to-end runs on a tiny random model and synthetic rows: training, reuse, resume, predict, two stages."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from replicator.core.config.recipe import resolve
from replicator.core.data.files import data_dir
from replicator.core.errors import ReplicatorError
from replicator.core.run import pipeline
from replicator.core.run.pipeline import run_recipe as run
from replicator.core.run.submission import predict

from ..conftest import RECIPES, TINY


def _run(overrides=(), toggles=(), force=False):
    r = resolve(RECIPES / "smoke.yaml", list(toggles), TINY + list(overrides), data_dir=data_dir())
    return run(r, data_dir(), force=force, progress=False)


def test_run_writes_folder_learns_and_is_reused(isolated):
    run_dir, m, reused = _run()
    assert not reused
    assert (run_dir.parent.name == "smoke" and run_dir.name.startswith("smoke-")
            and run_dir.name.endswith("-s7"))
    for f in ("resolved.yaml", "fingerprint.json", "metrics.json"):
        assert (run_dir / f).exists()
    fp = json.loads((run_dir / "fingerprint.json").read_text())
    assert (fp["run_id"] == run_dir.name and fp["data_files"]
            and fp["environment"]["device"] in ("cpu", "cuda"))
    for k in ("log_loss", "tta_log_loss", "final_log_loss", "accuracy", "tta_accuracy"):
        assert np.isfinite(m[k])
    # the synthetic rows carry a clear signal (a refusal loses): the tiny model must beat uniform
    assert m["tta_log_loss"] < m["uniform_log_loss"]
    assert m["train_loss_last"] < m["train_loss_first"]
    assert (isolated / "artifacts" / "smoke" / run_dir.name / "main" / "final.safetensors").exists()
    # what reports need: loss curves, time, tokens, process count, the training label prior
    stage = m["stages"]["main"]
    assert len(stage["train_loss_history"]) == stage["optimizer_steps"] and "train_loss_history" not in m
    assert stage["seconds"] > 0 and stage["train_tokens"] > 0 and m["n_processes"] == 1
    prior = m["train_label_prior"]
    assert len(prior) == 3 and sum(prior) == pytest.approx(1, abs=1e-5) and all(0 < x < 1 for x in prior)
    from replicator.core.scoring.row_predictions import read_row_predictions

    rows = read_row_predictions(run_dir / "valid_predictions.csv.gz")
    assert len(rows) == m["n_valid_rows"] and list(rows.views) == ["identity", "swap_ab", "tta", "final",
                                                                  "baseline_prior", "baseline_length",
                                                                  "baseline_style"]
    assert read_row_predictions(run_dir / "valid_predictions.csv.gz").labels.sum() == pytest.approx(len(rows))
    again_dir, again, reused = _run()
    assert reused and again_dir == run_dir and again == m
    # a report without its artifacts (e.g. committed, then a fresh clone) is recomputed, not reused
    import shutil

    shutil.rmtree(isolated / "artifacts")
    rebuilt_dir, rebuilt, reused = _run()
    assert not reused and rebuilt_dir == run_dir and rebuilt["tta_log_loss"] == m["tta_log_loss"]
    forced_dir, forced, reused = _run(force=True)
    assert not reused and forced["tta_log_loss"] == pytest.approx(m["tta_log_loss"], abs=1e-9)


def test_resume_after_a_crash_gives_the_same_metrics(isolated, monkeypatch):
    _, straight, _ = _run(["seed=11"])
    reports, arts = isolated / "r2", isolated / "a2"
    monkeypatch.setenv("REPLICATOR_REPORTS", str(reports))
    monkeypatch.setenv("REPLICATOR_ARTIFACTS", str(arts))
    monkeypatch.setenv("REPLICATOR_CRASH_AFTER_STEP", "4")  # checkpoint_every=3: steps 4.. redone
    with pytest.raises(RuntimeError, match="simulated crash"):
        _run(["seed=11"])
    # the train step's folder (core/steps.py)
    ckpt = next(arts.glob("smoke/steps/main-train-*/checkpoint.pt"))
    assert torch.load(ckpt, weights_only=False)["step"] == 3
    monkeypatch.delenv("REPLICATOR_CRASH_AFTER_STEP")
    _, resumed, reused = _run(["seed=11"])
    assert not reused and resumed["resumed_at_step"] == 3
    for k in ("log_loss", "tta_log_loss", "final_log_loss", "accuracy", "train_loss_last"):
        assert resumed[k] == straight[k], k


def test_trainable_parameters_change(isolated):
    from safetensors.torch import load_file

    from replicator.core.config.catalogue import build_plugins
    from replicator.core.model.loading import load_model
    from replicator.core.model.tensors import trainable_state

    run_dir, _, _ = _run()
    r = resolve(run_dir / "resolved.yaml", check_plugins=False)
    torch.manual_seed(r.seed)
    model, _, _ = load_model(r.final.model, build_plugins(r.final.plugins, "x"), train=True)
    before = trainable_state(model)
    after = load_file(str(next(isolated.glob("artifacts/smoke/*/main/final.safetensors"))))
    assert set(before) == set(after)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert any("lora_B" in k for k in changed) and any("score" in k for k in changed)


def test_predict_writes_a_valid_submission(isolated, synthetic_data_dir):
    run_dir, _, _ = _run()
    out = isolated / "submission.csv"
    info = predict(str(run_dir), synthetic_data_dir / "lmsys-chatbot-arena" / "test.csv", out, progress=False)
    sub = pd.read_csv(out)
    test = pd.read_csv(synthetic_data_dir / "lmsys-chatbot-arena" / "test.csv")
    assert list(sub.columns) == ["id", "winner_model_a", "winner_model_b", "winner_tie"]
    assert info["rows"] == len(test) and sub["id"].tolist() == test["id"].tolist()
    probs = sub[["winner_model_a", "winner_model_b", "winner_tie"]].to_numpy()
    assert ((probs >= 0) & (probs <= 1)).all()
    assert (probs.sum(axis=1).round(6) == 1).all()
    # also by run id, and a clear error for an unknown run
    predict(run_dir.name, synthetic_data_dir / "lmsys-chatbot-arena" / "test.csv", out, progress=False)
    with pytest.raises(ReplicatorError, match="no run folder"):
        predict("nope", synthetic_data_dir / "lmsys-chatbot-arena" / "test.csv", out)


def test_two_stage_recipe_starts_from_earlier_weights(isolated, tmp_path):
    recipe = Path(tmp_path / "two.yaml")
    recipe.write_text((RECIPES / "smoke.yaml").read_text() + """
stages:
  pretrain: {train: {lr: 1.0e-3}}
  finetune: {from: pretrain, reinit_head: true}
""")
    r = resolve(recipe, [], TINY + ["train.epochs=1"], data_dir=data_dir())
    run_dir, m, _ = run(r, data_dir(), progress=False)
    assert set(m["stages"]) == {"pretrain", "finetune"} and m["final_stage"] == "finetune"
    art = isolated / "artifacts" / r.name / run_dir.name
    pre = torch.load(next(art.parent.glob("steps/pretrain-train-*/checkpoint.pt")),
                     weights_only=False)["trainable"]
    from safetensors.torch import load_file

    fin = load_file(str(art / "finetune" / "final.safetensors"))
    assert set(pre) == set(fin)
    # per-row predictions of every stage: the final one under the plain name
    assert ((run_dir / "valid_predictions.pretrain.csv.gz").exists()
            and (run_dir / "valid_predictions.csv.gz").exists())
    assert len(m["stages"]["pretrain"]["train_loss_history"]) == m["stages"]["pretrain"]["optimizer_steps"]


QUICK = ["train.epochs=1"]


def test_reuse_needs_the_outputs_the_run_vouches_for(isolated):
    run_dir, m, _ = _run(QUICK)
    art = isolated / "artifacts" / "smoke" / run_dir.name / "main"
    preds = art / "valid_predictions.json"
    preds.write_text("{not json")  # an interrupted copy, say
    _, again, reused = _run(QUICK)
    assert not reused and again["tta_log_loss"] == m["tta_log_loss"]
    (art / "done.json").unlink()  # no done marker: the stage is not finished, even with metrics.json
    assert not _run(QUICK)[2]
    assert _run(QUICK)[2]


def test_force_removes_the_old_metrics_before_anything_else(isolated, monkeypatch):
    run_dir, _, _ = _run(QUICK)

    def boom(*a, **k):
        raise RuntimeError("killed")

    monkeypatch.setattr(pipeline, "_train_and_evaluate", boom)  # after the data checks, before training
    with pytest.raises(RuntimeError, match="killed"):
        _run(QUICK, force=True)
    assert not (run_dir / "metrics.json").exists() and (run_dir / "failed.json").exists()
    assert not (isolated / "artifacts" / "smoke" / run_dir.name / "main" / "final.safetensors").exists()
