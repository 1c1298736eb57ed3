"""Incremental recomputation in runs (core/stages/steps.py): a variant recomputes only from the first step
its change touches; postprocessing is redone in every run from the cached views."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from replicator.core.config.recipe import resolve
from replicator.core.data.files import data_dir
from replicator.core.predict import views as predict
from replicator.core.run import pipeline
from replicator.core.train import trainer

from ..conftest import QUICK, RECIPES
from ..helpers import _resolved


def _run(toggles=(), overrides=(), force=False):
    return pipeline.run_recipe(_resolved(toggles, overrides), data_dir(), force=force, progress=False)


def _forbid(monkeypatch, module, name):
    def refuse(*a, **k):
        raise AssertionError(f"{module.__name__}.{name} ran: the step should have been reused")

    monkeypatch.setattr(module, name, refuse)


def test_tta_and_temperature_variants_reuse_the_base_training(isolated, monkeypatch):
    base_dir, base, _ = _run()
    _forbid(monkeypatch, trainer, "train_stage")  # no training step may run from here on
    _forbid(monkeypatch, predict, "_predict_view")  # nor any prediction: every view is cached
    tta_dir, no_tta, reused = _run(["tta"])
    assert not reused and tta_dir != base_dir
    stage = no_tta["stages"]["main"]
    assert stage["train_reused"] and stage["views_reused"] == ["identity"]
    assert no_tta["log_loss"] == base["log_loss"] and no_tta["tta_log_loss"] == no_tta["log_loss"]
    temp_dir, no_temp, _ = _run(["temperature"])
    stage = no_temp["stages"]["main"]
    assert stage["train_reused"] and stage["views_reused"] == ["identity", "swap_ab"]
    assert (no_temp["tta_log_loss"] == base["tta_log_loss"]
            and no_temp["final_log_loss"] != base["final_log_loss"])
    # the run folders hold the same weights (one file on disk, linked) and their own per-row predictions
    art = isolated / "artifacts" / "smoke"
    weights = [art / d.name / "main" / "final.safetensors" for d in (base_dir, tta_dir, temp_dir)]
    assert len({os.stat(w).st_ino for w in weights}) == 1
    assert (temp_dir / "valid_predictions.csv.gz").exists()


def test_a_prediction_change_predicts_again_without_training(isolated, monkeypatch):
    _, base, _ = _run()
    _forbid(monkeypatch, trainer, "train_stage")
    calls = []
    real = predict._predict_view
    monkeypatch.setattr(predict, "_predict_view", lambda *a, **k: calls.append(a[4].name) or real(*a, **k))
    _, shorter, _ = _run(overrides=["predict.max_length=48"])
    assert calls == ["identity", "swap_ab"] and shorter["stages"]["main"]["train_reused"]
    assert shorter["log_loss"] != base["log_loss"]


def test_a_training_change_trains_and_force_recomputes_the_shared_steps(isolated, monkeypatch):
    _, base, _ = _run()
    calls = []
    real = trainer.train_stage
    monkeypatch.setattr(trainer, "train_stage", lambda *a, **k: calls.append(1) or real(*a, **k))
    _, focal, _ = _run(["focal"])
    assert calls == [1] and not focal["stages"]["main"]["train_reused"]
    _, forced, reused = _run(force=True)
    assert calls == [1, 1] and not reused and not forced["stages"]["main"]["train_reused"]
    assert forced["stages"]["main"]["views_reused"] == []
    assert forced["tta_log_loss"] == pytest.approx(base["tta_log_loss"], abs=1e-9)


def test_cached_views_of_other_rows_are_predicted_again(isolated, caplog):
    base_dir, base, _ = _run()
    for f in (isolated / "artifacts" / "smoke" / "steps").glob("main-view-*.json"):
        data = json.loads(f.read_text())
        data["ids"] = data["ids"][::-1]  # a stale or foreign file under the key: never trusted
        f.write_text(json.dumps(data))
    with caplog.at_level("WARNING", logger="replicator"):
        _, again, _ = _run(["temperature"])
    assert "holds other rows" in caplog.text and again["stages"]["main"]["views_reused"] == []
    assert again["tta_log_loss"] == pytest.approx(base["tta_log_loss"], abs=1e-9)


def test_stage_outputs_are_reused_with_the_training(isolated, tmp_path, monkeypatch):
    recipe = tmp_path / "two.yaml"
    recipe.write_text((RECIPES / "smoke.yaml").read_text() + """
stages:
  teacher: {outputs: [train]}
  student: {from: teacher, reinit_head: true, plugins: {loss: {use: distill_kl_cos, teachers: [teacher]}}}
""")
    r = resolve(recipe, [], QUICK, data_dir=data_dir())
    pipeline.run_recipe(r, data_dir(), progress=False)
    # the student's temperature off: the teacher (training + outputs) and the student's training are reused
    r2 = resolve(recipe, ["temperature"], QUICK, data_dir=data_dir())
    _forbid(monkeypatch, trainer, "train_stage")
    _forbid(monkeypatch, predict, "_predict_view")
    run_dir, m, _ = pipeline.run_recipe(r2, data_dir(), progress=False)
    assert m["stages"]["teacher"]["train_reused"] and m["stages"]["student"]["train_reused"]
    art = isolated / "artifacts" / r.name / run_dir.name
    teacher = json.loads((art / "teacher" / "outputs.json").read_text())
    assert len(teacher["train"]) == m["stages"]["teacher"]["n_train_rows"]
    assert np.isfinite(m["final_log_loss"])
