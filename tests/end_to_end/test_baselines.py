"""Baseline-only runs (``model.base: baseline:<name>``) with reuse and ``replicate predict``, and the
baseline views and metrics of every run."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from replicator.core.config.recipe import resolve
from replicator.core.run.pipeline import run_recipe as run
from replicator.core.run.submission import predict
from replicator.core.scoring.metrics import log_loss
from replicator.core.scoring.row_predictions import read_row_predictions
from replicator.core.stages import baseline as B

from ..conftest import BASELINE, RECIPES, TINY

#: the shared data, read before the ``isolated`` fixture points REPLICATOR_DATA_DIR at synthetic rows
REAL_DATA = os.environ.get("REPLICATOR_DATA_DIR")


def _baseline_run(overrides=(), force=False):
    from replicator.core.data.files import data_dir

    r = resolve(BASELINE, [], list(overrides), data_dir=data_dir())
    return run(r, data_dir(), force=force, progress=False)


def test_baseline_run_writes_the_run_outputs_and_is_reused(isolated):
    run_dir, m, reused = _baseline_run()
    assert not reused and run_dir.parent.name == "baseline_length" and run_dir.name.endswith("-s7")
    assert m["log_loss"] == m["tta_log_loss"] == m["final_log_loss"] == m["baseline_length_log_loss"]
    assert m["baseline_prior_log_loss"] > m["log_loss"]  # the synthetic rows: a fuller answer tends to win
    assert m["baseline"] == "length_lr" and m["n_train_rows"] > 100 and m["optimizer_steps"] > 0
    for f in ("resolved.yaml", "fingerprint.json", "metrics.json", "valid_predictions.csv.gz"):
        assert (run_dir / f).is_file(), f
    art = isolated / "artifacts" / "baseline_length" / run_dir.name / "main"
    assert {p.name for p in art.iterdir()} == {"baseline.json", "done.json", "valid_predictions.json"}
    params = json.loads((art / "baseline.json").read_text())
    assert (params["kind"] == "length_lr" and len(params["coef"]) == 3
            and params["features"] == list(B.FEATURES))
    rp = read_row_predictions(run_dir / "valid_predictions.csv.gz")
    assert list(rp.views) == ["identity", "tta", "final", "baseline_prior", "baseline_length",
                              "baseline_style"]
    assert len(rp) == m["n_valid_rows"] and np.allclose(rp.views["final"], rp.views["baseline_length"])
    assert log_loss(rp.views["final"], rp.labels) == pytest.approx(m["final_log_loss"], abs=1e-5)
    again_dir, again, reused = _baseline_run()
    assert reused and again_dir == run_dir and again == m
    (art / "baseline.json").unlink()  # reuse never trusts a marker alone
    _, redone, reused = _baseline_run()
    assert not reused and redone["final_log_loss"] == m["final_log_loss"]


def test_prior_and_uniform_baseline_runs(isolated):
    _, prior, _ = _baseline_run(["model.base=baseline:prior"])
    _, uniform, _ = _baseline_run(["model.base=baseline:uniform"])
    assert prior["final_log_loss"] == pytest.approx(prior["baseline_prior_log_loss"])
    assert uniform["final_log_loss"] == pytest.approx(math.log(3)) and uniform["optimizer_steps"] == 0
    assert prior["run_id"] != uniform["run_id"]


def test_predict_on_a_baseline_run_writes_a_valid_submission(isolated, synthetic_data_dir):
    from replicator.core.data.competition import read_competition_csv

    run_dir, _, _ = _baseline_run()
    test_csv = synthetic_data_dir / "lmsys-chatbot-arena" / "test.csv"
    out = isolated / "submission.csv"
    info = predict(str(run_dir), test_csv, out, progress=False)
    sub = pd.read_csv(out)
    test = pd.read_csv(test_csv)
    assert list(sub.columns) == ["id", "winner_model_a", "winner_model_b", "winner_tie"]
    assert info["rows"] == len(test) and sub["id"].tolist() == test["id"].tolist()
    probs = sub[["winner_model_a", "winner_model_b", "winner_tie"]].to_numpy()
    assert ((probs >= 0) & (probs <= 1)).all() and (probs.sum(axis=1).round(6) == 1).all()
    art = isolated / "artifacts" / "baseline_length" / run_dir.name / "main"
    want = B.predict(json.loads((art / "baseline.json").read_text()), read_competition_csv(test_csv, False))
    assert np.allclose(probs, want, atol=1e-9)
    assert np.ptp(probs[:, 0]) > 0.05  # not a constant: lengths differ between test rows


def test_every_run_has_baseline_views_and_metrics_that_do_not_change_the_model(isolated, monkeypatch):
    from replicator.core.data.files import data_dir
    from replicator.core.run import pipeline

    r = resolve(RECIPES / "smoke.yaml", [], TINY + ["train.epochs=1"], data_dir=data_dir())
    run_dir, m, _ = run(r, data_dir(), progress=False)
    rp = read_row_predictions(run_dir / "valid_predictions.csv.gz")
    assert list(rp.views) == ["identity", "swap_ab", "tta", "final", "baseline_prior", "baseline_length",
                              "baseline_style"]
    assert np.allclose(rp.views["tta"], (rp.views["identity"] + rp.views["swap_ab"]) / 2, atol=2e-6)
    for name in ("baseline_prior", "baseline_length"):
        assert m[f"{name}_log_loss"] == pytest.approx(log_loss(rp.views[name], rp.labels), abs=1e-5)
        assert f"view_{name}_log_loss" not in m
    assert np.allclose(rp.views["baseline_prior"], m["train_label_prior"], atol=1e-6)
    _, baseline_run, _ = _baseline_run(["train.max_rows=0"])
    # same rows, same fit
    assert m["baseline_length_log_loss"] == pytest.approx(baseline_run["final_log_loss"])
    # without the baselines the model's numbers are the same
    monkeypatch.setenv("REPLICATOR_REPORTS", str(isolated / "r2"))
    monkeypatch.setenv("REPLICATOR_ARTIFACTS", str(isolated / "a2"))
    monkeypatch.setattr(pipeline.baselines, "every_run", lambda train, valid: {})
    _, bare, _ = run(r, data_dir(), progress=False)
    assert "baseline_length_log_loss" not in bare
    for k in ("log_loss", "tta_log_loss", "final_log_loss", "train_loss_last"):
        assert bare[k] == m[k], k


@pytest.mark.real_data
def test_length_baseline_on_the_real_smoke_split(isolated, monkeypatch):
    """On the real rows (smoke's split: 222 validation rows) length features beat the class prior."""
    if not REAL_DATA:
        pytest.skip("REPLICATOR_DATA_DIR is not set")
    real = Path(REAL_DATA)
    monkeypatch.setenv("REPLICATOR_DATA_DIR", str(real))
    _, m, _ = run(resolve(BASELINE, [], [], data_dir=real), real, progress=False)
    assert m["n_valid_rows"] == 222 and m["n_train_rows"] == 1256
    assert m["final_log_loss"] < m["baseline_prior_log_loss"] - 0.02
