"""Swap responses A and B: training augmentation and test-time augmentation."""

from __future__ import annotations

import dataclasses
import random
from typing import Literal

from replicator.core.hookspecs import hookimpl
from replicator.core.params import param
from replicator.core.rows import SWAP_PERM, swap_row


@dataclasses.dataclass(frozen=True)
class SwapView:
    """TTA view: present B as A; inverting maps the swapped probabilities back to the original order."""

    name: str = "swap_ab"

    def apply(self, row):
        return swap_row(row)

    def invert(self, probs):
        return probs[:, list(SWAP_PERM)]


@dataclasses.dataclass(frozen=True)
class SwapAB:
    """Exchange A and B (label flipped) in training and/or at test time.

    ``train``: ``none``; ``random`` swaps each row with probability ``p`` (per epoch, seeded);
    ``duplicate`` adds a swapped copy of every row (1st place [R1] ``train_reverse``).
    ``test_time``: predict on the swapped view too and average the un-swapped probabilities
    (1st [P1] 0.882 -> 0.876; 16th [P16] 0.941 -> 0.926; 3rd [P3] about 0.007).
    """

    train: Literal["none", "random", "duplicate"] = param("random", "none | random | duplicate")
    p: float = param(0.5, "probability of swapping a row (train: random)")
    test_time: bool = param(True, "TTA: average the prediction over the original and the swapped order")

    def __post_init__(self):
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {self.p}")

    @hookimpl
    def augment(self, rows, epoch, seed):
        if self.train == "none":
            return rows
        if self.train == "duplicate":
            return list(rows) + [swap_row(r) for r in rows]
        rng = random.Random(f"swap_ab:{seed}:{epoch}")
        return [swap_row(r) if rng.random() < self.p else r for r in rows]

    @hookimpl
    def tta(self):
        return [SwapView()] if self.test_time else []
