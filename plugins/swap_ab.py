"""Swap responses A and B: training augmentation and test-time augmentation."""

from __future__ import annotations

import dataclasses
import random
from typing import Literal

from replicator.core.hookspecs import hookimpl
from replicator.core.lib.toggles import NotApplicable, SharedToggle, ToggleView, plugins_patch
from replicator.core.params import param
from replicator.core.rows import SWAP_PERM, SWAPPED_VIEW, pair_key, swap_row


@dataclasses.dataclass(frozen=True)
class SwapView:
    """TTA view: present B as A; inverting maps the swapped probabilities back to the original order."""

    name: str = SWAPPED_VIEW

    def apply(self, row):
        return swap_row(row)

    def invert(self, probs):
        return probs[:, list(SWAP_PERM)]


@dataclasses.dataclass(frozen=True)
class SwapAB:
    """Exchange A and B (label, model names and teacher probabilities flipped) in training and/or \
at test time.

    ``train`` modes (one optimizer-step schedule per epoch; the runner calls ``augment`` per epoch):

    * ``none``: rows as they are.
    * ``random``: each row swapped with probability ``p``, per epoch, seeded (the public-notebook
      habit; 2nd place's baseline "random swap" [P2]).
    * ``duplicate``: every row plus its swapped copy, batched independently (1st place
      ``train_reverse`` [R1]).
    * ``full``: every row plus its swap sharing a ``pair`` key, so the runner's batcher puts both
      orders in the same micro-batch and thus the same optimizer step (2nd place "full swap",
      +0.003 vs random swap for Gemma-2-9B [P2]; [R2] ``LMSYSDataset(include_swap=True)``). A
      micro-batch then holds about ``batch_size`` rows, i.e. about ``batch_size / 2`` originals.
    * ``alternate``: the whole data set in the original order on even epochs (0, 2, ...) and
      swapped on odd epochs. Our reading of 5th place "same config trained twice with A/B order
      swapped for one run" [P5] (and 9th's second model on swapped data [P9]) for a single run of
      several epochs; with ``epochs: 1`` it is the original order only.
    * ``swapped``: every row swapped, every epoch: the 5th/9th place's second model trained on
      the swapped order [P5]/[P9] (ensembled by the user with a model trained on the original order).

    ``test_time``: predict on the swapped view too and average the un-swapped probabilities
    (1st [P1] 0.882 -> 0.876; 16th [P16] 0.941 -> 0.926; 3rd [P3] about 0.007).
    """

    train: Literal["none", "random", "duplicate", "full", "alternate", "swapped"] = param(
        "random", "none | random | duplicate | full (both orders in one step) | alternate (per epoch) | "
                  "swapped")
    p: float = param(0.5, "probability of swapping a row (train: random)", ge=0, le=1)
    test_time: bool = param(True, "TTA: average the prediction over the original and the swapped order",
                            step="predict")

    @hookimpl
    def augment(self, rows, epoch, seed):
        if self.train == "none":
            return rows
        if self.train == "duplicate":
            return list(rows) + [swap_row(r) for r in rows]
        if self.train == "full":
            out = []
            for r in rows:
                key = pair_key(r)
                out.append(dict(r, pair=key))
                out.append(dict(swap_row(r), pair=key))
            return out
        if self.train == "alternate":
            return [swap_row(r) for r in rows] if epoch % 2 == 1 else list(rows)
        if self.train == "swapped":
            return [swap_row(r) for r in rows]
        rng = random.Random(f"swap_ab:{seed}:{epoch}")
        return [swap_row(r) if rng.random() < self.p else r for r in rows]

    @hookimpl
    def tta(self):
        return [SwapView()] if self.test_time else []

    def train_copies(self) -> dict[str, int]:
        """Training rows made of each row: 2 when every row is trained with its swap (``duplicate``,
        ``full``) (``replicate plan``; core/lib/full_size.py)."""
        return {"swap_multiplier": 2 if self.train in ("duplicate", "full") else 1}


# ---------------------------------------------------------------- shared toggles: swap, tta

#: the ``train`` modes that are augmentation (``swapped`` is a model trained on the other order)
SWAP_AUGMENT = ("random", "duplicate", "full", "alternate")


def _swap_block(v: ToggleView) -> str | None:
    return v.one_by_use("swap_ab")


def _has_swap(v: ToggleView) -> bool:
    alias = _swap_block(v)
    if alias is None:
        return False
    mode = v.params(alias).train
    if mode == "swapped":
        raise NotApplicable(f"{v.at('plugins.' + alias + '.train')} is 'swapped' (a model trained on the "
                            "swapped order, not augmentation); set the mode with an override instead")
    return mode in SWAP_AUGMENT


def _swap_off(v: ToggleView) -> list[dict]:
    return [plugins_patch({_swap_block(v): {"train": "none"}})]


def _swap_on(v: ToggleView) -> list[dict]:
    alias = _swap_block(v)
    if alias is not None:
        return [plugins_patch({alias: {"train": "random"}})]
    added = {"use": "swap_ab", "train": "random", "test_time": False}
    return [plugins_patch({v.free_alias("swap", "swap_ab"): added})]


def _has_tta(v: ToggleView) -> bool:
    alias = _swap_block(v)
    return alias is not None and bool(v.params(alias).test_time)


def _tta_off(v: ToggleView) -> list[dict]:
    return [plugins_patch({_swap_block(v): {"test_time": False}})]


def _tta_on(v: ToggleView) -> list[dict]:
    alias = _swap_block(v)
    if alias is not None:
        return [plugins_patch({alias: {"test_time": True}})]
    added = {"use": "swap_ab", "train": "none", "test_time": True}
    return [plugins_patch({v.free_alias("swap", "swap_ab"): added})]


SHARED_TOGGLES = [
    SharedToggle("swap", "swap augmentation in training", _has_swap, _swap_off, _swap_on,
                 "removing swap augmentation in training (swap_ab train: none)",
                 "adding random swap augmentation in training (swap_ab train: random)", rank=10,
                 claimed="no number for swap vs none; FULL swap (each row and its swap in one optimizer "
                 "step) vs RANDOM swap: +0.003 for Gemma-2-9B [P2]; 1st trains on every row and its swap "
                 "[R1]"),
    SharedToggle("tta", "swap test-time augmentation", _has_tta, _tta_off, _tta_on,
                 "removing swap test-time augmentation (swap_ab test_time: false)",
                 "adding swap test-time augmentation (swap_ab test_time: true)", rank=20,
                 claimed="0.941 → 0.926 public notebook (old LB) [P16]; ≈ 0.007 depending on backbone (3rd, "
                 "non-PL), ≈ 0.003 on its PL models [P3]; 0.882 → 0.876 old LB (1st) [P1]"),
]
