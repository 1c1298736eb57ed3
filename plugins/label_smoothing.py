"""Cross-entropy against label-smoothed targets."""

from __future__ import annotations

import dataclasses

from replicator.core.hookspecs import hookimpl
from replicator.core.lib.losses import preference_logits
from replicator.core.lib.toggles import SharedToggle, provider_toggle
from replicator.core.params import param


@dataclasses.dataclass(frozen=True)
class LabelSmoothing:
    """Cross-entropy with targets ``(1 - eps)·y + eps/3`` (hard or soft ``y``).

    3rd place, Raja's Llama baseline: label smoothing **0.03** [P3] (no ablation number); Mark's
    scripts have ``label_smoothing_factor=0.1`` commented out [R3m]. ``eps = 0`` is exactly
    ``cross_entropy``.
    """

    eps: float = param(0.03, "smoothing mass spread uniformly over the 3 classes ([P3] Raja: 0.03)",
                       ge=0, lt=1)

    @hookimpl
    def loss(self):
        import torch.nn.functional as F

        eps = self.eps

        def label_smoothing(logits, labels, batch):
            logits = preference_logits(logits).float()
            target = labels.float() * (1.0 - eps) + eps / logits.shape[-1]
            return F.cross_entropy(logits, target)

        return label_smoothing


#: ``-t label_smoothing``: the block providing the loss becomes label_smoothing (on: from cross_entropy
#: only) or cross_entropy (off)
SHARED_TOGGLES = [
    SharedToggle("label_smoothing", "label smoothing",
                 *provider_toggle("loss", "label_smoothing", "cross_entropy",
                                  "adding label_smoothing is defined from cross_entropy only (it would also "
                                  "remove the current loss)"),
                 "cross-entropy instead of label smoothing", "label smoothing instead of cross-entropy",
                 rank=40, claimed="no number given; did not work for the write-up's author [JP]; 3rd (Raja) "
                 "used 0.03 in a Llama baseline, no ablation [P3]"),
]
