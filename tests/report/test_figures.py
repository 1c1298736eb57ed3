"""The HTML report's figures (core/report/figures.py)."""

from __future__ import annotations

import numpy as np

from replicator.core.report import compare, figures
from replicator.core.report.runs import discover_runs

from ..report_runs import ablation, make_run, synthetic


def test_figures_of_an_ablation(tmp_path):
    runs = ablation(tmp_path / "reports")
    variants, data = compare.compute(discover_runs([tmp_path / "reports"]), runs["base"][0])
    figs = figures.report_figures(data, variants)
    ids = [f["id"] for f in figs]
    assert ids == ["plot-delta", "plot-reliability", "plot-confusion", "plot-loss", "plot-length"]
    assert all(f["src"].startswith("data:image/svg+xml;base64,") for f in figs)
    assert "seeds pooled" in figs[1]["caption"]
    again = figures.report_figures(data, variants)
    assert [f["src"] for f in again] == [f["src"] for f in figs]


def test_only_a_base_without_history_falls_back_and_says_what_is_missing(tmp_path):
    p, y = synthetic(1, 0.4)
    d = make_run(tmp_path / "r", seed=1, probs=p, labels=y, history=False)
    variants, data = compare.compute([d])
    figs = {f["id"]: f for f in figures.report_figures(data, variants)}
    assert figs["plot-delta"]["src"].startswith("data:image/svg+xml")  # the references against the base
    assert "no training loss to draw" in figs["plot-loss"]["missing"]
    assert "no variant" in figs["plot-length"]["missing"]
    assert "seeds pooled" not in figs["plot-reliability"]["caption"]


def test_confusion_counts():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1], [0.2, 0.2, 0.6]])
    labels = np.eye(3)[[0, 1, 1, 2]]
    np.testing.assert_array_equal(figures._confusion(probs, labels), [[1, 0, 0], [1, 1, 0], [0, 0, 1]])
