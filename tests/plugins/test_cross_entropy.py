"""Cross-entropy on the three preference classes (plugins/cross_entropy.py)."""

from __future__ import annotations

import torch

from replicator.plugins.cross_entropy import CrossEntropy

from ..helpers import _logits_labels


def test_hard_and_soft_labels_match_the_formula():
    logits, hard, soft = _logits_labels()
    loss = CrossEntropy().loss()
    logp = torch.log_softmax(logits, -1)
    assert torch.allclose(loss(logits, hard, {}), -(hard * logp).sum(-1).mean(), atol=1e-6)
    assert torch.allclose(loss(logits, soft, {}), -(soft * logp).sum(-1).mean(), atol=1e-6)
    uniform = loss(torch.zeros(4, 3), torch.eye(3)[[0, 1, 2, 0]], {})
    assert torch.allclose(uniform, torch.log(torch.tensor(3.0)))


def test_auxiliary_columns_are_ignored_and_half_precision_is_computed_in_float():
    logits, hard, _ = _logits_labels()
    loss = CrossEntropy().loss()
    wide = torch.cat([logits, 100 * torch.randn(len(logits), 4)], dim=1)
    assert torch.allclose(loss(wide, hard, {}), loss(logits, hard, {}))
    out = loss(logits.half(), hard.half(), {})
    assert out.dtype == torch.float32
    assert torch.allclose(out, loss(logits.half().float(), hard, {}), atol=1e-6)


def test_gradient_is_softmax_minus_target():
    logits, hard, _ = _logits_labels(n=5)
    logits.requires_grad_(True)
    CrossEntropy().loss()(logits, hard, {}).backward()
    expected = (torch.softmax(logits.detach(), -1) - hard) / len(hard)
    assert torch.allclose(logits.grad, expected, atol=1e-6)
