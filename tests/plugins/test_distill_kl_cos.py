"""1st place's distillation loss (plugins/distill_kl_cos.py): CE + KL + cosine against teachers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from replicator.core.config.catalogue import build_plugins
from replicator.core.errors import RecipeError, ReplicatorError
from replicator.plugins.distill_kl_cos import DistillKLCos

from ..helpers import _logits_labels


def test_distillation_against_teachers_equal_to_labels_has_closed_form():
    logits, hard, _ = _logits_labels(n=8, seed=2)
    rows = [{"id": str(i), "teacher": {"llama": lab.tolist(), "qwen": lab.tolist()}}
            for i, lab in enumerate(hard)]
    loss = DistillKLCos(teachers=["llama", "qwen"]).loss()(logits, hard, {"rows": rows})
    # one-hot teacher q = y: KL(q || s) = -log s_y = CE per row; CosEmb = 1 - s_y / |s|
    p = torch.softmax(logits, -1).double()
    y = hard.argmax(-1)
    ce = -torch.log(p[torch.arange(len(y)), y]).mean()
    cos = (1 - p[torch.arange(len(y)), y] / p.norm(dim=-1)).mean()
    expected = (ce + 2 * (ce + cos)) / 5
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # one teacher: (CE + KL + Cos) / 3
    one = DistillKLCos(teachers=["qwen"]).loss()(logits, hard, {"rows": rows})
    assert one.item() == pytest.approx(((ce + ce + cos) / 3).item(), rel=1e-5)


def test_distillation_with_soft_teachers_and_temperature():
    logits, hard, soft = _logits_labels(n=8, seed=3)
    rows = [{"id": str(i), "teacher": {"t": s.tolist()}} for i, s in enumerate(soft)]
    loss = DistillKLCos(teachers=["t"]).loss()(logits, hard, {"rows": rows})
    logs = torch.log_softmax(logits, -1)
    kl = (soft * (torch.log(soft) - logs)).sum(-1).mean()
    cos = (1 - F.cosine_similarity(soft, logs.exp(), dim=-1)).mean()
    assert loss.item() == pytest.approx(((F.cross_entropy(logits, hard) + kl + cos) / 3).item(), rel=1e-5)
    # T = 2: the teacher becomes softmax(log p / 2)
    loss2 = DistillKLCos(teachers=["t"], temperature=2.0).loss()(logits, hard, {"rows": rows})
    q = torch.softmax(torch.log(soft) / 2, -1)
    logs2 = torch.log_softmax(logits / 2, -1)
    kl2 = (q * (torch.log(q) - logs2)).sum(-1).mean()
    cos2 = (1 - F.cosine_similarity(q, logs2.exp(), dim=-1)).mean()
    assert loss2.item() == pytest.approx(((F.cross_entropy(logits, hard) + kl2 + cos2) / 3).item(), rel=1e-5)


def test_distillation_missing_teacher_names_row_and_stage():
    logits, hard, _ = _logits_labels(n=2)
    rows = [{"id": "a1", "teacher": {"t": [0.2, 0.3, 0.5]}},
            {"id": "b2", "teacher": {"other": [0.2, 0.3, 0.5]}}]
    with pytest.raises(ReplicatorError, match=r"row 'b2'.*stage 't'"):
        DistillKLCos(teachers=["t"]).loss()(logits, hard, {"rows": rows})
    with pytest.raises(RecipeError, match="teachers"):
        build_plugins({"loss": {"use": "distill_kl_cos"}}, "x.yaml")
