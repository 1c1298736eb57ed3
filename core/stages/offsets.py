"""What a cross-fitted stage's ``model.offset`` adds to the model's logits, per fold and for ``predict``.

A baseline offset (``length_lr``, ``style_lr``) is fitted on a fold's training rows and predicts any row
from its texts' counts: the same function serves the fold's training and its held-out rows (a regression
on a few dozen counts barely overfits its training rows).

``offset: features`` stacks the fine-tuned model on the frozen-feature head of the ``cpu`` recipe
(:mod:`replicator.core.stages.frozen_features`, settings in ``model.offset_features``): the model learns
the residual over the best cheap model that reads the LM. That head reads ~30 inputs, twelve of them
from the LM, and a head's predictions on its own training rows are more confident than on new rows: the
residual learnt over them would be the wrong one. So, as in stacking, the offset of a fold's **training**
rows is out of fold (``offset_features.crossfit`` grouped inner folds, each head's ``C`` chosen by CV inside
its own training rows), and the offset of its **held-out** rows comes from the head fitted on all the
fold's training rows. Each response's vector is encoded once per text and cached
(``REPLICATOR_CACHE/features``, shared with the ``cpu`` recipe): every fold, seed and variant after the
first reads them from disk.

Rows are found again by their two texts (:func:`pair_key`), in either order: a view or augmentation that
swaps A and B gets the swapped offset (the head is exactly swap-symmetric).
"""

from __future__ import annotations

import dataclasses
import gc
import logging

import numpy as np

from replicator.core.config.recipe import FeaturesConfig
from replicator.core.errors import ReplicatorError
from replicator.core.stages import baseline as B
from replicator.core.stages import frozen_features as F

log = logging.getLogger(__name__)

#: ``kind`` of the saved offset (``offset.json``) of ``offset: features``
FEATURES_KIND = "frozen_features"


def pair_key(row: dict) -> tuple[str, str]:
    """(key of the prompt and response A, key of the prompt and response B)."""
    return F.text_key(row["prompt"], row["response_a"]), F.text_key(row["prompt"], row["response_b"])


class PairOffset:
    """rows -> (N, 3) log-probabilities looked up by the rows' texts, in either order (swapped rows get the
    swapped classes). A row it was not built for is an error that names it, never a silent zero."""

    def __init__(self, rows: list[dict], probs: np.ndarray, what: str):
        self.what = what
        self.table = {pair_key(r): np.log(np.clip(p, 1e-6, 1.0)) for r, p in zip(rows, probs, strict=True)}

    def __call__(self, rows: list[dict]) -> np.ndarray:
        out = []
        for r in rows:
            ka, kb = pair_key(r)
            if (ka, kb) in self.table:
                out.append(self.table[ka, kb])
            elif (kb, ka) in self.table:
                out.append(self.table[kb, ka][list(B.SWAP)])
            else:
                raise ReplicatorError(f"model.offset features: row {r.get('id', '?')} (source "
                                      f"{r.get('source', '?')}) is not among the rows its {self.what} "
                                      "offset was computed for")
        return np.stack(out) if out else np.zeros((0, 3))


def _vectors(model_cfg, features_config, row_sets: list[list[dict]], progress: bool) -> list:
    """The frozen model's (N, 2, D) vectors of each list of rows (cached per text), the model freed after."""
    if not features_config.lm:
        return [None for _ in row_sets]
    model, tokenizer, path = F.load_backbone(model_cfg)
    try:
        return [F.row_features(model, tokenizer, path, rows, features_config, progress) for rows in row_sets]
    finally:
        del model
        gc.collect()


def _take(f, ix):
    return None if f is None else f[ix]


class BaselineOffsets:
    """``offset: length_lr | style_lr``: the baseline fitted on each fold's training rows."""

    def __init__(self, kind: str):
        self.kind = kind

    def fold(self, rows: list[dict], held: list[dict], tr, va):
        return B.log_probs(B.fit(self.kind, rows))

    def saved(self, rows: list[dict]) -> dict:
        return B.fit(self.kind, rows)


class FeatureOffsets:
    """``offset: features``: the frozen-feature head, stacked (module doc). Built once per stage: it
    encodes (or reads from the cache) every scored and extra row's responses."""

    def __init__(self, model_cfg, features_config, scored: list[dict], extra: list[dict], seed: int,
                 progress: bool):
        self.config, self.seed = features_config, seed
        self.f_scored, self.f_extra = _vectors(model_cfg, features_config, [scored, extra], progress)

    def fold(self, rows: list[dict], held: list[dict], tr, va):
        """The offset of one fold: ``rows`` (the scored rows ``tr`` plus the extra rows) out of fold,
        ``held`` (the scored rows ``va``) from the head fitted on all of ``rows``."""
        f_rows = F._stack(_take(self.f_scored, tr), self.f_extra)
        p_rows, _, k = F.crossfit_predictions(self.config, rows, f_rows, [], None, self.seed, baselines=False)
        params, _ = F._fit_final(self.config, rows, f_rows, self.seed)
        p_held = F.head_probs(params, _take(self.f_scored, va), F.row_inputs(held, self.config))
        log.info("offset: frozen-feature head, %d training rows out of %d inner folds, %d held rows from "
                 "the head fitted on them (C=%g)", len(rows), k, len(held), params["C"])
        return PairOffset(rows + held, np.concatenate([p_rows, p_held]), "fold's")

    def saved(self, rows: list[dict]) -> dict:
        """What ``predict`` reads (``offset.json``): the head fitted on every row and its settings."""
        params, _ = F._fit_final(self.config, rows, F._stack(self.f_scored, self.f_extra), self.seed)
        return {"kind": FEATURES_KIND, "features": dataclasses.asdict(self.config), "head": params}


def stage_offsets(stage, scored: list[dict], extra: list[dict], seed: int, progress: bool):
    """The offset maker of a cross-fitted stage (None without ``model.offset``)."""
    kind = stage.model.offset
    if not kind:
        return None
    if kind == "features":
        return FeatureOffsets(stage.model, stage.model.offset_features, scored, extra, seed, progress)
    return BaselineOffsets(kind)


def saved_offset(model_cfg, params: dict, rows: list[dict], progress: bool = True):
    """rows -> (N, 3) log-probabilities of a finished run's saved offset, for ``rows`` (and their swaps)."""
    if params.get("kind") != FEATURES_KIND:
        return B.log_probs(params)
    config = FeaturesConfig(**params["features"])
    [f] = _vectors(model_cfg, config, [rows], progress)
    return PairOffset(rows, F.head_probs(params["head"], f, F.row_inputs(rows, config)), "saved")
