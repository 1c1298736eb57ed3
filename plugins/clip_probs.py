"""Probability clipping + renormalisation, the last safety step before a submission."""

from __future__ import annotations

import dataclasses

import numpy as np

from replicator.core.hookspecs import hookimpl
from replicator.core.params import param


@dataclasses.dataclass(frozen=True)
class ClipProbs:
    """Clip every probability to [eps, 1 - eps] and renormalise rows to sum to 1.

    Log loss punishes a confident mistake without bound; the mle-bench grader does not clip
    (SOLUTIONS.md §3 [MLE]), so clipping is ours to do.
    """

    eps: float = param(1e-6, "lower bound of every probability (below 1/3: three classes must fit)",
                       ge=0, lt=1 / 3)

    @hookimpl
    def postprocess(self, probs, rows, fit):

        p = np.clip(np.asarray(probs, dtype=np.float64), self.eps, 1 - self.eps)
        return p / p.sum(axis=1, keepdims=True)
