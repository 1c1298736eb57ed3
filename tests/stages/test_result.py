"""What a stage hands back to the runner (core/stages/result.py), as a baseline stage builds it and as
``run_stage`` (core/run/pipeline.py) consumes it: its results become ``done.json``, and its scored rows,
predictions and labels the per-row predictions file of the report."""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import numpy as np
import pytest

from replicator.core.config.recipe import resolve
from replicator.core.rows import make_row
from replicator.core.run import pipeline
from replicator.core.scoring.metrics import log_loss
from replicator.core.scoring.row_predictions import read_row_predictions
from replicator.core.stages import baseline as B
from replicator.core.stages.result import StageResult
from replicator.core.util.layout import BASELINE_PARAMS, DONE, VALID_PREDICTIONS, row_predictions_path

from ..conftest import BASELINE


def _rows(n, start=0, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(start, start + n):
        la, lb = int(rng.integers(1, 40)), int(rng.integers(1, 40))
        label = [1, 0, 0] if la > lb + 5 else [0, 1, 0] if lb > la + 5 else [0, 0, 1]
        rows.append(make_row(f"r{i}", [f"Question {i}?"], [" ".join(["word"] * la)],
                             [" ".join(["word"] * lb)], label=label, source="kaggle_csv"))
    return rows


def _stage(base="baseline:length_lr", name="main"):
    return SimpleNamespace(name=name, outputs={}, model=SimpleNamespace(base=base))


def test_stage_result_fields():
    assert [f.name for f in dataclasses.fields(StageResult)] == ["results", "predictions", "labels",
                                                                 "scored_rows"]
    rows = _rows(2)
    p = np.full((2, 3), 1 / 3)
    r = StageResult({"log_loss": 1.1}, {"identity": p}, np.eye(3)[:2], rows)
    assert r.results == {"log_loss": 1.1} and r.predictions["identity"] is p and r.scored_rows is rows
    r.results.update(stage="main")  # the runner adds to it in place
    assert r.results == {"log_loss": 1.1, "stage": "main"}


def test_baseline_stage_scores_the_validation_rows(tmp_path):
    train, valid = _rows(80, seed=1), _rows(20, start=100, seed=2)
    out = B.run_baseline(_stage(), train, valid, tmp_path / "main")
    assert isinstance(out, StageResult)
    assert out.scored_rows is valid
    assert np.array_equal(out.labels, B.labels_of(valid)) and out.labels.shape == (20, 3)
    assert list(out.predictions) == ["identity", "tta", "final", "baseline_prior", "baseline_length",
                                     "baseline_style"]
    for view, p in out.predictions.items():
        assert p.shape == (20, 3), view
        assert np.allclose(p.sum(axis=1), 1), view
    assert np.array_equal(out.predictions["final"], out.predictions["baseline_length"])
    assert np.allclose(out.predictions["baseline_prior"], B.labels_of(train).mean(axis=0))
    res = out.results
    assert res["baseline"] == "length_lr" and res["n_train_rows"] == 80
    assert res["n_train_rows_augmented"] == 160
    assert res["final_log_loss"] == pytest.approx(log_loss(out.predictions["final"], out.labels), abs=1e-6)
    assert res["model"]["base"] == "baseline:length_lr" and res["model"]["n_features"] == len(B.FEATURES)
    assert {p.name for p in (tmp_path / "main").iterdir()} == {BASELINE_PARAMS, VALID_PREDICTIONS}


def test_prior_baseline_result_has_no_features(tmp_path):
    train, valid = _rows(30), _rows(5, start=50)
    out = B.run_baseline(_stage("baseline:prior"), train, valid, tmp_path / "s")
    assert out.scored_rows is valid and out.results["model"]["n_features"] is None
    assert out.results["optimizer_steps"] == 0
    assert np.array_equal(out.predictions["identity"], out.predictions["baseline_prior"])


def test_row_predictions_are_written_from_the_result(tmp_path):
    train, valid = _rows(60, seed=3), _rows(12, start=200, seed=4)
    out = B.run_baseline(_stage(name="pre"), train, valid, tmp_path / "art" / "pre")
    run_dir = tmp_path / "report"
    run_dir.mkdir()
    for stage, final in (("pre", "main"), ("main", "main")):
        pipeline.write_row_predictions(run_dir, _stage(name=stage), final, out.scored_rows, out.predictions,
                                       out.labels)
    assert sorted(p.name for p in run_dir.iterdir()) == ["valid_predictions.csv.gz",
                                                         "valid_predictions.pre.csv.gz"]
    rp = read_row_predictions(row_predictions_path(run_dir, "pre", "main"))
    assert rp.ids == [r["id"] for r in valid] and rp.groups == [r["group"] for r in valid]
    assert list(rp.views) == list(out.predictions)
    assert np.array_equal(rp.labels, out.labels)
    assert np.allclose(rp.views["final"], out.predictions["final"], atol=1e-6)


def _baseline_run():
    from replicator.core.data.files import data_dir

    r = resolve(BASELINE, [], [], data_dir=data_dir())
    return pipeline.run_recipe(r, data_dir(), progress=False)


def test_run_stage_writes_the_results_and_the_scored_rows(isolated, monkeypatch):
    seen = []
    real = B.run_baseline

    def spy(stage, train_rows, valid_rows, stage_artifacts):
        out = real(stage, train_rows, valid_rows, stage_artifacts)
        seen.append((out, valid_rows, stage_artifacts))
        return out

    monkeypatch.setattr(B, "run_baseline", spy)
    run_dir, metrics, _ = _baseline_run()
    [(out, valid_rows, stage_artifacts)] = seen
    assert out.scored_rows is valid_rows
    # the runner adds the stage name and its time to the results, which done.json holds
    assert out.results["stage"] == "main" and out.results["seconds"] >= 0
    assert json.loads((stage_artifacts / DONE).read_text()) == out.results
    assert metrics["final_log_loss"] == out.results["final_log_loss"]
    rp = read_row_predictions(run_dir / "valid_predictions.csv.gz")
    assert rp.ids == [r["id"] for r in out.scored_rows]
    assert list(rp.views) == list(out.predictions) and np.array_equal(rp.labels, out.labels)


def test_run_stage_writes_every_scored_row_not_only_the_validation_rows(isolated, monkeypatch):
    """A cross-fitted frozen-feature stage scores more rows than the validation rows: the report's
    per-row file follows ``scored_rows``."""

    scored = []

    def cross_fitted(stage, train_rows, valid_rows, stage_artifacts):
        rows = train_rows[:5] + valid_rows
        scored.append([r["id"] for r in rows])
        labels = B.labels_of(rows)
        p = np.full((len(rows), 3), 1 / 3)
        stage_artifacts.mkdir(parents=True, exist_ok=True)
        (stage_artifacts / BASELINE_PARAMS).write_text(json.dumps({"kind": "uniform", "probs": [1 / 3] * 3}))
        (stage_artifacts / VALID_PREDICTIONS).write_text("{}")
        return StageResult({"marker": "cross-fitted", "final_log_loss": 1.0986, "log_loss": 1.0986},
                           {"final": p, "identity": p}, labels, rows)

    monkeypatch.setattr(B, "run_baseline", cross_fitted)
    run_dir, metrics, _ = _baseline_run()
    assert metrics["marker"] == "cross-fitted" and metrics["stages"]["main"]["stage"] == "main"
    rp = read_row_predictions(run_dir / "valid_predictions.csv.gz")
    [ids] = scored
    assert rp.ids == ids and len(ids) > 5
    assert list(rp.views) == ["final", "identity"]
