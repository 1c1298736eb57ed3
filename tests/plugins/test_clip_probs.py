"""Clipping and renormalising probabilities (plugins/clip_probs.py)."""

from __future__ import annotations

import numpy as np
import pytest

from replicator.core.config.catalogue import build_plugins
from replicator.core.errors import RecipeError
from replicator.plugins.clip_probs import ClipProbs


def test_clip_bounds_extremes_and_renormalises():
    p = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
    out = ClipProbs(eps=0.01).postprocess(probs=p, rows=[{}] * 3, fit=None)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(out[0], np.array([0.99, 0.01, 0.01]) / 1.01)
    np.testing.assert_allclose(out[1], np.array([0.5, 0.5, 0.01]) / 1.01)
    np.testing.assert_allclose(out[2], p[2])  # inside the bounds: unchanged
    assert np.isfinite(np.log(out)).all()


def test_default_eps_keeps_log_loss_finite_and_lists_become_arrays():
    out = ClipProbs().postprocess(probs=[[0, 0, 1]], rows=[{}], fit=None)
    assert out.dtype == np.float64 and out.shape == (1, 3)
    assert out[0, 0] == pytest.approx(1e-6 / (1 + 1e-6)) and -np.log(out[0, 0]) < 14
    # eps = 0 only renormalises
    np.testing.assert_allclose(ClipProbs(eps=0).postprocess(probs=[[0.4, 0.2, 0.2]], rows=[{}], fit=None),
                               [[0.5, 0.25, 0.25]])


def test_eps_of_a_third_or_more_is_refused_by_the_recipe():
    with pytest.raises(RecipeError):
        build_plugins({"data": {"use": "kaggle_csv"}, "clip": {"use": "clip_probs", "eps": 0.34}}, "t.yaml",
                      unused=("prompt_format", "head", "loss"))
