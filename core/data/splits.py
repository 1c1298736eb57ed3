"""Splitting, sampling and copying rows.

:func:`split_valid` is a random hold-out grouped by ``row["group"]`` (the normalised prompt hash),
so duplicate prompts never straddle train/valid; :func:`split_fold` is a
``StratifiedGroupKFold`` on the argmax label. Both are deterministic for a seed.
:func:`sample_rows`, :func:`seeded_coin` and :func:`drop_valid_groups` serve the extra-data sources
(arena 33k, UltraFeedback pairs, HH-RLHF, pseudo-label pools).
"""

from __future__ import annotations

import hashlib
import logging
import random

import numpy as np

from replicator.core.errors import ReplicatorError

log = logging.getLogger(__name__)


def split_valid(rows: list[dict], valid_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Random hold-out of about ``valid_fraction`` of the rows, whole prompt groups at a time.

    Groups are shuffled with ``seed`` (independently of the input order) and moved to valid until
    it holds at least ``round(valid_fraction * len(rows))`` rows. Both parts keep input order.
    """
    if not 0 <= valid_fraction < 1:
        raise ValueError(f"valid_fraction must be in [0, 1), got {valid_fraction}")
    target = round(valid_fraction * len(rows))
    sizes: dict[str, int] = {}
    for r in rows:
        sizes[r["group"]] = sizes.get(r["group"], 0) + 1
    groups = sorted(sizes)
    random.Random(seed).shuffle(groups)
    valid_groups, n = set(), 0
    for g in groups:
        if n >= target:
            break
        valid_groups.add(g)
        n += sizes[g]
    train = [r for r in rows if r["group"] not in valid_groups]
    valid = [r for r in rows if r["group"] in valid_groups]
    return train, valid


def split_fold(rows: list[dict], folds: int, fold: int, seed: int) -> tuple[list[dict], list[dict]]:
    """Fold ``fold`` of a ``StratifiedGroupKFold`` (stratified on the argmax label, grouped by prompt)."""
    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    if not 0 <= fold < folds:
        raise ValueError(f"fold must be in [0, {folds}), got {fold}")
    unlabeled = [r["id"] for r in rows if r.get("label") is None]
    if unlabeled:
        raise ValueError(f"split_fold needs labelled rows; {len(unlabeled)} have none "
                         f"(e.g. id {unlabeled[0]})")
    n_groups = len({r["group"] for r in rows})
    if n_groups < folds:  # the data's fault, not the caller's: an error shown without a traceback
        raise ReplicatorError(f"cannot make {folds} folds from {n_groups} distinct prompt group(s) of "
                              f"{len(rows)} row(s): ask for at most {n_groups} (the recipe's folds.k, or "
                              "its data block's folds)")
    from sklearn.model_selection import StratifiedGroupKFold

    y = np.array([int(np.argmax(r["label"])) for r in rows])
    groups = np.array([r["group"] for r in rows])
    skf = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for k, (tr, va) in enumerate(skf.split(np.zeros(len(rows)), y, groups)):
        if k == fold:
            return [rows[i] for i in sorted(tr)], [rows[i] for i in sorted(va)]
    raise AssertionError("unreachable")


def copy_row(row: dict) -> dict:
    """A copy deep enough that editing it cannot reach the original (strings are immutable)."""
    out = dict(row)
    for k in ("prompt", "response_a", "response_b", "label"):
        if out.get(k) is not None:
            out[k] = list(out[k])
    if out.get("teacher"):
        out["teacher"] = {k: list(v) for k, v in out["teacher"].items()}
    return out


def seeded_coin(seed: int, key: str) -> bool:
    """A fair coin flip that depends only on ``seed`` and ``key`` (e.g. a row id), not on row order."""
    return hashlib.sha256(f"{seed}\x1f{key}".encode("utf-8", "surrogatepass")).digest()[0] & 1 == 1


def drop_valid_groups(rows: list[dict], valid_groups, source: str) -> list[dict]:
    """Copies of the rows whose prompt group is not held out (``ctx.held_out_groups``: validation and
    test prompts); the count dropped is logged."""
    valid = valid_groups or set()
    out = [copy_row(r) for r in rows if r["group"] not in valid]
    if len(out) < len(rows):
        log.info("%s: dropped %d of %d row(s) whose prompt is in the validation or test split",
                 source, len(rows) - len(out), len(rows))
    return out


def sample_rows(rows: list[dict], max_rows: int, seed: int) -> list[dict]:
    """At most ``max_rows`` rows sampled with ``seed`` in their original order (0 = all)."""
    if not max_rows or len(rows) <= max_rows:
        return rows
    keep = sorted(random.Random(seed).sample(range(len(rows)), max_rows))
    return [rows[i] for i in keep]
