"""Folds as a recipe construct: the recipe run once per fold, the folds' validation rows joined into
out-of-fold (OOF) predictions, and the fold models combined into one for ``predict``.

A recipe's top-level section::

    folds: {plugin: data, k: 5, run: [0, 1, 2, 3, 4], average: adapters}

runs the recipe once per fold in ``run`` with ``plugins.<plugin>.folds = k`` and
``plugins.<plugin>.fold = i`` (:func:`fold_overrides`). Each fold run is an ordinary run with its own
run id, reused when finished: adding a fold or changing ``average`` never retrains another fold. The
orchestration lives in :mod:`replicator.core.run.combination`; this module holds the schema and the pure
functions it calls:

* :func:`concat_oof`: every fold's per-row validation predictions concatenated, each row once (an id
  in two folds is an error naming both fold runs), every view kept;
* :func:`average_weights`: the plain mean of the folds' trainable weights, key by key (1st place's
  ``merge_lora.py`` averaged the five fold LoRA state dicts, head included [R1]); different keys or
  shapes are an error naming the fold run and the key.

The averaged model has no honest validation score on the OOF rows: each row was in the training
data of every fold model but one. The OOF numbers score each fold model on the rows it did not see.
"""

from __future__ import annotations

import numpy as np

from replicator.core.config.sections import FoldsConfig
from replicator.core.errors import ReplicatorError
from replicator.core.scoring.row_predictions import RowPreds

AVERAGES = ("adapters", "probs")
NO_HONEST_SCORE = ("the averaged model (average: adapters) has no honest validation score on these rows: "
                   "each row was in the training data of every fold model but its own, so none is given; "
                   "the OOF numbers score each fold model on the rows it did not train on")


def fold_overrides(cfg: FoldsConfig, fold: int) -> list[str]:
    """The overrides that make a recipe run fold ``fold`` (applied after every other override)."""
    return [f"plugins.{cfg.plugin}.folds={cfg.k}", f"plugins.{cfg.plugin}.fold={fold}"]


def fold_name(fold: int) -> str:
    return f"fold{fold}"


def concat_oof(parts: list[tuple[str, RowPreds]]) -> RowPreds:
    """The folds' per-row predictions ``[(fold run id, RowPreds), ...]`` concatenated in that order:
    each row once, the views every fold has (in the first fold's order). An id that appears in two
    folds, or a view one fold lacks, is an error naming the runs."""
    if not parts:
        raise ReplicatorError("no fold predictions to combine")
    seen: dict[str, str] = {}
    for label, p in parts:
        for rid in p.ids:
            if rid in seen:
                raise ReplicatorError(f"row id {rid!r} is a validation row of both {seen[rid]} and {label}: "
                                      "the folds overlap (did the fold runs use different seeds, data or k?)")
            seen[rid] = label
    first_label, first = parts[0]
    for label, p in parts[1:]:
        if list(p.views) != list(first.views):
            raise ReplicatorError(f"{label} has the prediction views {', '.join(p.views)} and {first_label} "
                                  f"has {', '.join(first.views)}: the fold runs must predict the same views")
    return RowPreds(ids=[i for _, p in parts for i in p.ids], groups=[g for _, p in parts for g in p.groups],
                    chars=np.concatenate([p.chars for _, p in parts]),
                    labels=np.concatenate([p.labels for _, p in parts]),
                    views={v: np.concatenate([p.views[v] for _, p in parts]) for v in first.views})


def average_weights(states: list[tuple[str, dict]]) -> dict:
    """The key-by-key mean of ``[(fold run id, {name: tensor}), ...]``, computed in float32 and cast
    back to each tensor's dtype. Every state must have the same keys and shapes (else an error
    naming the fold run and the key)."""
    import torch

    if not states:
        raise ReplicatorError("no fold weights to average")
    first_label, first = states[0]
    for label, state in states[1:]:
        missing, extra = sorted(set(first) - set(state)), sorted(set(state) - set(first))
        if missing or extra:
            key = (missing or extra)[0]
            where = (f"lacks {key!r} that {first_label} has" if missing
                     else f"has {key!r} that {first_label} lacks")
            raise ReplicatorError(f"{label}: its weights {where} ({len(missing)} missing, {len(extra)} extra "
                                  "keys): the fold runs were built with different LoRA or head settings")
        for key, t in state.items():
            if tuple(t.shape) != tuple(first[key].shape):
                raise ReplicatorError(f"{label}: weight {key!r} has shape {tuple(t.shape)}, {first_label} "
                                      f"has {tuple(first[key].shape)}")
    out = {}
    for key, t0 in first.items():
        total = torch.zeros(t0.shape, dtype=torch.float32)
        for _, state in states:
            total += state[key].to(torch.float32)
        out[key] = (total / len(states)).to(t0.dtype)
    return out
