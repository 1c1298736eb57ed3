"""What the loss plugins share (core/lib/losses.py): the preference logits, auxiliary columns ignored."""

from __future__ import annotations

import torch

from replicator.plugins.cross_entropy import CrossEntropy
from replicator.plugins.focal_loss import FocalLoss
from replicator.plugins.label_smoothing import LabelSmoothing

from ..helpers import _logits_labels


def test_losses_ignore_auxiliary_columns():
    logits, hard, _ = _logits_labels()
    wide = torch.cat([logits, torch.randn(len(logits), 7) * 50], dim=1)
    for plugin in (CrossEntropy(), LabelSmoothing(), FocalLoss()):
        fn = plugin.loss()
        assert torch.equal(fn(wide, hard, {}), fn(logits, hard, {}))
