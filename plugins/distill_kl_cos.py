"""The 1st place's distillation loss: CE + (KL + cosine) per teacher, averaged over the terms."""

from __future__ import annotations

import dataclasses

from replicator.core.errors import ReplicatorError
from replicator.core.hookspecs import hookimpl
from replicator.core.lib.losses import preference_logits
from replicator.core.params import ParamError, param


def teacher_probs(rows: list[dict], stage: str):
    """Teacher probabilities of ``stage`` for each row (a list of 3 floats each); a clear error when
    missing."""
    out = []
    for r in rows:
        t = (r.get("teacher") or {}).get(stage)
        if t is None:
            known = ", ".join(sorted(r.get("teacher") or {})) or "none"
            raise ReplicatorError(
                f"distill_kl_cos: row {r.get('id')!r} has no teacher probabilities from stage {stage!r} "
                f"(teachers on this row: {known}); that stage needs `outputs: [train]` and must have "
                "predicted on the same training rows")
        if len(t) != 3:
            raise ReplicatorError(f"distill_kl_cos: row {r.get('id')!r}: teacher {stage!r} has {len(t)} "
                                  "values, expected 3")
        out.append([float(x) for x in t])
    return out


def distill_loss(student_logits, labels, teachers, temperature: float = 1.0, eps: float = 1e-7):
    """``(CE(s, y) + Σ_t [KL(log_softmax(s/T) ‖ q_t) + CosEmb(q_t, softmax(s/T))]) / (1 + 2·n)``.

    ``teachers`` is a list of (B, 3) tensors of teacher *probabilities*. ``q_t`` is the teacher
    distribution at temperature T: the probabilities themselves (renormalised) at T = 1, else
    ``softmax(log(clip(p, eps)) / T)`` (log of clipped probabilities = teacher logits up to a
    per-row constant, which softmax ignores). KL is ``F.kl_div(..., reduction="batchmean")``;
    CosEmb is ``CosineEmbeddingLoss`` with target 1, i.e. ``mean(1 - cos(q_t, softmax(s/T)))``.
    No T² factor (none in the formula of [R1]; with T = 1 it would not matter).
    """
    import torch
    import torch.nn.functional as F

    s = student_logits.float()
    total = F.cross_entropy(s, labels.float())
    log_s_t = torch.log_softmax(s / temperature, dim=-1)
    s_t = log_s_t.exp()
    for p in teachers:
        p = p.float().to(s.device)
        if temperature == 1.0:
            q = p / p.sum(dim=-1, keepdim=True)
        else:
            q = torch.softmax(torch.log(p.clamp(min=eps)) / temperature, dim=-1)
        total = total + F.kl_div(log_s_t, q, reduction="batchmean")
        total = total + (1.0 - F.cosine_similarity(q, s_t, dim=-1)).mean()
    return total / (1 + 2 * len(teachers))


@dataclasses.dataclass(frozen=True)
class DistillKLCos:
    """Distillation from earlier stages' predictions (1st place [R1]/[P1]):
    ``(CE(s, y) + Σ_teachers [KL(log_softmax(s/T) ‖ softmax(t/T)) + \
CosEmb(softmax(t/T), softmax(s/T))]) / (1 + 2·n)``,
    with T = 1 and KL ``reduction='batchmean'`` [R1]; the 1st place used two teachers (Llama-3-70B,
    Qwen2-72B), so its divisor is 5.

    Teachers are stages named in ``teachers`` that wrote ``outputs: [train]``; the runner puts
    their (TTA) *probabilities* in ``row["teacher"][stage]`` (flipped with the row by swap
    augmentation). [R1] applied softmax to teacher *logits*; we only have probabilities, so at
    T = 1 we use them directly and otherwise take ``log(clip(p, 1e-7))`` as the teacher logits
    (our reading). A training row without a teacher value raises an error naming the row and stage.
    """

    teachers: list[str] = param(doc="stage names whose training-row predictions are the teachers")
    temperature: float = param(1.0, "distillation temperature T ([R1]: 1)", gt=0)

    def __post_init__(self):
        if not self.teachers:
            raise ParamError("teachers", "teachers must name at least one earlier stage")

    @hookimpl
    def loss(self):
        import torch

        names, temp = list(self.teachers), self.temperature

        def distill_kl_cos(logits, labels, batch):
            rows = batch["rows"]
            teachers = [torch.tensor(teacher_probs(rows, n), dtype=torch.float32, device=logits.device)
                        for n in names]
            return distill_loss(preference_logits(logits), labels, teachers, temp)

        return distill_kl_cos
