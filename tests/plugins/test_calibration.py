"""Temperature and Platt scaling (plugins/calibration.py)."""

from __future__ import annotations

import numpy as np

from replicator.core.scoring.metrics import log_loss
from replicator.plugins.calibration import PlattScaling, TemperatureScaling


def _overconfident(n=400, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    logits = rng.normal(size=(n, 3))
    logits[np.arange(n), y] += 1.0  # some signal...
    logits *= 4.0  # ...far too confident
    p = np.exp(logits - logits.max(1, keepdims=True))
    return p / p.sum(1, keepdims=True), np.eye(3)[y]


def test_temperature_one_and_identity_platt_change_nothing():
    probs, labels = _overconfident()
    for plugin in (TemperatureScaling(), TemperatureScaling(fixed_temperature=1.0), PlattScaling()):
        np.testing.assert_allclose(plugin.postprocess(probs=probs, rows=[], fit=None), probs, atol=1e-12)
    # a fixed temperature wins over the fit
    np.testing.assert_allclose(
        TemperatureScaling(fixed_temperature=1.0).postprocess(probs=probs, rows=[], fit=(probs, labels)),
        probs, atol=1e-12)
    from replicator.plugins.calibration import apply_platt, apply_temperature

    np.testing.assert_allclose(apply_temperature(probs, 1.0), probs, atol=1e-12)
    np.testing.assert_allclose(apply_platt(probs, [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]), probs, atol=1e-12)
    np.testing.assert_allclose(apply_platt(probs, np.ones(3) * (1 + 1e-12), np.zeros(3)), probs, atol=1e-9)


def test_fitted_calibration_improves_log_loss_of_overconfident_predictions():
    fit_p, fit_y = _overconfident(seed=0)
    test_p, test_y = _overconfident(seed=1)
    ts = TemperatureScaling()
    assert ts.temperature((fit_p, fit_y)) > 1.5  # softer
    before = log_loss(test_p, test_y)
    after_t = log_loss(ts.postprocess(probs=test_p, rows=[], fit=(fit_p, fit_y)), test_y)
    after_p = log_loss(PlattScaling().postprocess(probs=test_p, rows=[], fit=(fit_p, fit_y)), test_y)
    assert after_t < before - 0.1 and after_p < before - 0.1
    out = PlattScaling().postprocess(probs=test_p, rows=[], fit=(fit_p, fit_y))
    np.testing.assert_allclose(out.sum(1), 1.0, atol=1e-12)
