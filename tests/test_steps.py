"""Incremental recomputation (core/steps.py): a variant recomputes only from the first step its change
touches. Training, stage outputs and each TTA view have their own keys; postprocessing is redone in
every run from the cached views."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from replicator.core.config.recipe import resolve
from replicator.core.data.files import data_dir
from replicator.core.predict import views as predict
from replicator.core.run import pipeline
from replicator.core.run.fingerprint import fingerprint
from replicator.core.stages import steps
from replicator.core.train import trainer

from .conftest import RECIPES, TINY

QUICK = TINY + ["train.epochs=1", "train.max_rows=48", "predict.max_rows=24"]


def _resolved(toggles=(), overrides=(), recipe="smoke.yaml"):
    return resolve(RECIPES / recipe, list(toggles), QUICK + list(overrides), data_dir=data_dir())


def _keys(r):
    return steps.stage_keys(r, fingerprint(r, data_dir()))


def _run(toggles=(), overrides=(), force=False):
    return pipeline.run_recipe(_resolved(toggles, overrides), data_dir(), force=force, progress=False)


def _forbid(monkeypatch, module, name):
    def refuse(*a, **k):
        raise AssertionError(f"{module.__name__}.{name} ran: the step should have been reused")

    monkeypatch.setattr(module, name, refuse)


# ---------------------------------------------------------------- which step each change touches


def test_each_shared_toggle_changes_the_steps_it_touches_only(isolated):
    base = _keys(_resolved())["main"]

    def changed(toggle):
        k = _keys(_resolved([toggle]))["main"]
        return {"train": k.train != base.train, "predict": k.predict != base.predict}

    # prediction and postprocessing only: the trained weights are the base's
    assert changed("tta") == {"train": False, "predict": False}  # the identity view is the base's too
    assert changed("temperature") == {"train": False, "predict": False}
    assert changed("int8_inference") == {"train": False, "predict": True}
    # training changes
    for toggle in ("swap", "focal", "label_smoothing", "lengths", "truncate_start"):
        assert changed(toggle)["train"], toggle
    # a training setting, a data setting, the seed
    assert _keys(_resolved(overrides=["train.lr=0.01"]))["main"].train != base.train
    assert _keys(_resolved(overrides=["plugins.data.valid_fraction=0.3"]))["main"].train != base.train
    assert _keys(_resolved(overrides=["seed=8"]))["main"].train != base.train
    # predict settings are prediction, unless the training evaluates periodically (they pick the weights)
    assert _keys(_resolved(overrides=["predict.max_length=64"]))["main"].train == base.train
    periodic = _keys(_resolved(overrides=["train.eval_every=2"]))["main"].train
    assert _keys(_resolved(overrides=["train.eval_every=2",
                                      "predict.max_length=64"]))["main"].train != periodic


def test_a_later_stage_keys_on_what_it_reads_from_earlier_stages(isolated, tmp_path):
    recipe = tmp_path / "two.yaml"
    recipe.write_text((RECIPES / "smoke.yaml").read_text() + """
stages:
  teacher: {outputs: [train]}
  student: {from: teacher, reinit_head: true}
""")

    def keys(*overrides):
        r = resolve(recipe, [], QUICK + list(overrides), data_dir=data_dir())
        return _keys(r)

    base = keys()
    # the teacher's TTA changes its outputs (teacher probabilities averaged over the views), so the student
    # retrains
    no_tta = keys("stages.teacher.plugins.swap.test_time=false")
    assert (no_tta["teacher"].train == base["teacher"].train
            and no_tta["teacher"].outputs != base["teacher"].outputs)
    assert no_tta["student"].train != base["student"].train
    # 8-bit inference of the teacher: outputs come before the 8-bit reload, nothing downstream changes
    int8 = keys("stages.teacher.predict.load_in_8bit=true")
    assert (int8["teacher"].outputs == base["teacher"].outputs
            and int8["student"].train == base["student"].train)
    gptq = keys("stages.teacher.predict.load_in_8bit=true", "stages.teacher.predict.quantizer=gptq")
    assert (gptq["teacher"].outputs == base["teacher"].outputs
            and gptq["student"].train == base["student"].train)
    assert gptq["teacher"].predict != int8["teacher"].predict  # its views are predicted again
    # the teacher's training changes everything after it
    lr = keys("stages.teacher.train.lr=0.01")
    assert lr["teacher"].train != base["teacher"].train and lr["student"].train != base["student"].train


def test_plugin_parameters_go_to_the_step_that_reads_them(isolated):
    r = _resolved()
    parts = steps.plugin_parts(r.final, r.file)
    by_alias = {step: {a: b for a, b in blocks} for step, blocks in parts.items()}
    assert by_alias["train"]["swap"] == {"use": "swap_ab", "train": "random", "p": 0.5}
    assert by_alias["predict"]["swap"] == {"use": "swap_ab", "test_time": True}
    assert set(by_alias["postprocess"]) == {"temp", "clip"} and "temp" not in by_alias["train"]
    assert [a for a, _ in parts["train"]] == ["data", "prompt", "head", "loss", "swap"]  # recipe order kept


# ---------------------------------------------------------------- runs


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


def test_the_plan_estimates_a_prediction_only_variant_from_the_prediction_time_of_earlier_runs():
    from replicator.core.run.ablate import predict_seconds

    trained = {"stages": {"main": {"seconds": 100.0, "train_seconds": 80.0, "optimizer_steps": 5}}}
    reused = {"stages": {"main": {"seconds": 12.0, "train_seconds": 80.0, "train_reused": True,
                                  "optimizer_steps": 5}}}
    older = {"stages": {"main": {"seconds": 100.0, "optimizer_steps": 5}}}  # training time not recorded apart
    baseline = {"stages": {"prior": {"seconds": 0.5}}}
    assert predict_seconds(trained) == 20.0 and predict_seconds(reused) == 12.0
    assert predict_seconds(older) is None and predict_seconds(baseline) == 0.5
