"""Log loss as the Kaggle grader computes it (core/scoring/metrics.py)."""

from __future__ import annotations

import numpy as np
import pytest


def test_log_loss_matches_sklearn_on_hard_soft_and_extreme_probabilities():
    from sklearn.metrics import log_loss as sk_log_loss

    from replicator.core.scoring.metrics import log_loss

    rng = np.random.default_rng(0)
    p = rng.dirichlet([1, 1, 1], size=50)
    p[:5] = [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1e-20, 1 - 1e-20, 0], [0.5, 0.5, 0]]  # extremes, exact 0 and 1
    y = rng.integers(0, 3, size=50)
    y[:5] = [1, 1, 2, 0, 2]  # confidently wrong rows included
    assert log_loss(p, np.eye(3)[y]) == pytest.approx(sk_log_loss(y, p, labels=[0, 1, 2]), rel=1e-12)
    # soft labels: sklearn with each row expanded into its three classes, weighted by the label
    soft = rng.dirichlet([2, 2, 1], size=50)
    want = sk_log_loss(np.tile([0, 1, 2], 50), np.repeat(p, 3, axis=0), sample_weight=soft.ravel(),
                       labels=[0, 1, 2])
    assert log_loss(p, soft) == pytest.approx(want, rel=1e-12)
