"""The focal loss (plugins/focal_loss.py)."""

from __future__ import annotations

import pytest
import torch

from replicator.plugins.cross_entropy import CrossEntropy
from replicator.plugins.focal_loss import FocalLoss

from ..helpers import _logits_labels


@pytest.mark.parametrize("kind", ["hard", "soft"])
def test_focal_gamma_zero_equals_cross_entropy(kind):
    logits, hard, soft = _logits_labels()
    labels = hard if kind == "hard" else soft
    ce = CrossEntropy().loss()(logits, labels, {})
    focal0 = FocalLoss(gamma=0.0).loss()(logits, labels, {})
    assert torch.allclose(focal0, ce, rtol=0, atol=1e-6)
    focal2 = FocalLoss(gamma=2.0).loss()(logits, labels, {})
    assert focal2 < ce  # the focusing factor only down-weights
    # the hard-label form is Lin et al.'s -(1 - p_t)^gamma log p_t
    p = torch.softmax(logits, -1)
    pt = (p * hard).sum(-1)
    expected = (-(1 - pt) ** 2 * torch.log(pt)).mean()
    assert torch.allclose(FocalLoss(gamma=2.0).loss()(logits, hard, {}), expected, atol=1e-6)
