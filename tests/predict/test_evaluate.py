"""Scoring a stage's validation predictions (core/predict/evaluate.py)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from replicator.core.predict import evaluate as E
from replicator.core.scoring.metrics import log_loss


def _rows(labels):
    return [{"id": f"r{i}", "label": list(lab)} for i, lab in enumerate(labels)]


def _probs(n, seed):
    return np.random.default_rng(seed).dirichlet([1, 1, 1], size=n)


def test_labels_of_and_label_prior_count_soft_labels_fractionally():
    rows = _rows([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0.5, 0.25, 0.25]])
    y = E.labels_of(rows)
    assert y.dtype == np.float64 and y.shape == (4, 3)
    np.testing.assert_array_equal(y[3], [0.5, 0.25, 0.25])
    assert E.label_prior(rows) == [round(1.5 / 4, 6), round(1.25 / 4, 6), round(1.25 / 4, 6)]
    assert E.label_prior(_rows([[1, 0, 0], [1, 0, 0], [0, 1, 0]])) == [0.666667, 0.333333, 0.0]


def test_scores_name_every_view_with_its_prefix():
    n = 12
    y = np.eye(3)[np.arange(n) % 3]
    preds = {name: _probs(n, k) for k, name in
             enumerate(["identity", "swap_ab", "tta", "final", "baseline_prior"])}
    preds["identity"] = y * 0.8 + 0.2 / 3  # right every time
    s = E.scores(preds, y)
    assert s["n_valid_rows"] == n and s["uniform_log_loss"] == pytest.approx(math.log(3))
    assert s["accuracy"] == 1.0 and s["log_loss"] == pytest.approx(-math.log(0.8 + 0.2 / 3))
    for prefix, name in [("tta_", "tta"), ("final_", "final"), ("view_swap_ab_", "swap_ab"),
                         ("baseline_prior_", "baseline_prior")]:
        assert s[f"{prefix}log_loss"] == pytest.approx(log_loss(preds[name], y))
        assert 0 <= s[f"{prefix}accuracy"] <= 1
    assert "view_tta_log_loss" not in s and "view_baseline_prior_log_loss" not in s
    assert "view_identity_log_loss" not in s and "view_final_log_loss" not in s


def test_valid_predictions_round_trip(tmp_path):
    n = 5
    rows = _rows(np.eye(3)[[0, 1, 2, 0, 1]])
    y = E.labels_of(rows)
    preds = {"identity": _probs(n, 0), "tta": _probs(n, 1), "final": _probs(n, 2)}
    path = tmp_path / "valid_predictions.json"
    E.write_valid_predictions(path, rows, preds, y)
    cols = json.loads(path.read_text())
    assert cols["id"] == [r["id"] for r in rows]
    assert set(cols) == {"id"} | {f"{v}_{c}" for v in [*preds, "label"] for c in E.CLASSES}
    np.testing.assert_allclose(cols["final_tie"], preds["final"][:, 2])
    probs, labels = E.read_valid_fit(path)
    np.testing.assert_allclose(probs, preds["tta"])  # the TTA mean is what calibrators fit on
    np.testing.assert_array_equal(labels, y)
    assert probs.shape == labels.shape == (n, 3)
