"""The write-up author's second stage measured after the fact (core/report/second_stage.py): out of fold,
learning, and the command on the committed smoke runs."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from typer.testing import CliRunner

from replicator.core.cli import app
from replicator.core.errors import ReplicatorError
from replicator.core.report.second_stage import cross_fitted_gbdt, second_stage
from replicator.core.stages.baseline import STYLE_FEATURES
from replicator.core.stages.crossfit import fold_splits

from ..conftest import ROOT
from ..report_runs import make_run, synthetic

REAL_DATA = os.environ.get("REPLICATOR_DATA_DIR")

SMOKE = ROOT / "reports" / "smoke"


def _problem(n: int = 400, seed: int = 0):
    rng = np.random.default_rng(seed)
    groups = [f"{i // 2:016x}" for i in range(n)]  # two rows per prompt
    signal = rng.normal(size=n)
    cls = np.where(signal > 0.4, 0, np.where(signal < -0.4, 1, 2))
    flip = rng.random(n) < 0.2
    cls[flip] = rng.integers(0, 3, flip.sum())
    labels = np.eye(3)[cls]
    log_probs = np.log(np.stack([np.exp(signal), np.exp(-signal), np.ones(n)], 1)
                       / (np.exp(signal) + np.exp(-signal) + 1)[:, None])
    style = rng.normal(size=(n, len(STYLE_FEATURES)))
    return log_probs, style, labels, groups


def test_the_second_stage_learns_and_never_sees_the_labels_of_the_rows_it_scores():
    log_probs, style, labels, groups = _problem()
    p = cross_fitted_gbdt(log_probs, style, labels, groups, seed=3)
    assert p.shape == labels.shape and np.allclose(p.sum(1), 1)
    loss = -np.log((p * labels).sum(1)).mean()
    assert loss < np.log(3) - 0.1  # the first stage's signal is learnt
    # the rows of one held-out fold: their labels changed, their predictions are not
    _, held = fold_splits([{"group": g} for g in groups], 5, 3)[0]
    changed = labels.copy()
    changed[held] = np.roll(labels[held], 1, axis=1)
    q = cross_fitted_gbdt(log_probs, style, changed, groups, seed=3)
    assert np.array_equal(q[held], p[held])
    others = np.setdiff1d(np.arange(len(p)), held)
    assert not np.allclose(q[others], p[others])  # the changed rows trained every other fold


def test_a_run_without_cross_fitted_style_views_is_refused(tmp_path):
    """A finished run whose per-row predictions lack the style regression's view (not cross-fitted) is
    refused by name before any data is read; a folder that is no run at all, too."""
    probs, labels = synthetic(seed=1, strength=1.0)
    run = make_run(tmp_path / "runs", probs=probs, labels=labels)
    with pytest.raises(ReplicatorError, match="needs per-row predictions with a 'tta' and a 'baseline_style"):
        second_stage([run], [], tmp_path / "no-such.csv")
    with pytest.raises(ReplicatorError, match="is not a finished run"):
        second_stage([tmp_path], [], tmp_path / "no-such.csv")


@pytest.mark.real_data
def test_the_command_on_the_committed_seed_7_runs(tmp_path, monkeypatch):
    """The LM alone (`-t offset_off`) and the recipe of split seed 7, as committed in reports/smoke/."""
    if not REAL_DATA:
        pytest.skip("REPLICATOR_DATA_DIR is not set")
    monkeypatch.setenv("REPLICATOR_DATA_DIR", REAL_DATA)
    out = CliRunner().invoke(app, ["second-stage", str(SMOKE / "smoke-a79bab36-s7"), "--base",
                                   str(SMOKE / "smoke-c8f4455f-s7"), "-o", str(tmp_path / "ss")])
    assert out.exit_code == 0, out.output
    result = json.loads((tmp_path / "ss" / "second_stage.json").read_text())
    (seed,) = result["per_seed"]
    ll = seed["log_loss"]
    assert seed["seed"] == 7
    assert set(ll) == {"second_stage", "gbdt_style", "style_regression", "lm_alone", "base"}
    # the committed runs' own numbers are read back, and the trees learn from the style features
    assert round(ll["lm_alone"], 4) == 1.0776 and round(ll["base"], 4) == 1.0339
    assert ll["second_stage"] < ll["lm_alone"]
    assert "| 7 |" in (tmp_path / "ss" / "second_stage.md").read_text()
