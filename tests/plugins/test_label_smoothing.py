"""Label smoothing (plugins/label_smoothing.py)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from replicator.plugins.cross_entropy import CrossEntropy
from replicator.plugins.label_smoothing import LabelSmoothing

from ..helpers import _logits_labels


def test_label_smoothing_zero_equals_cross_entropy_and_matches_formula():
    logits, hard, soft = _logits_labels(seed=1)
    for labels in (hard, soft):
        ce = CrossEntropy().loss()(logits, labels, {})
        assert torch.allclose(LabelSmoothing(eps=0.0).loss()(logits, labels, {}), ce, rtol=0, atol=1e-7)
    smoothed = LabelSmoothing(eps=0.03).loss()(logits, hard, {})
    expected = -(((1 - 0.03) * hard + 0.01) * torch.log_softmax(logits, -1)).sum(-1).mean()
    assert torch.allclose(smoothed, expected, atol=1e-6)
    assert torch.allclose(smoothed, F.cross_entropy(logits, hard.argmax(-1), label_smoothing=0.03), atol=1e-6)
    assert not torch.allclose(smoothed, CrossEntropy().loss()(logits, hard, {}))
