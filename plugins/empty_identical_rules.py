"""The 4th place's fixed probabilities for empty or identical responses."""

from __future__ import annotations

import dataclasses

import numpy as np

from replicator.core.hookspecs import hookimpl
from replicator.core.params import param


def is_empty(turns) -> bool:
    """A response with no text: ``[]``, ``[""]``, ``[null]`` (read as ``""`` by our data rule), or
    only whitespace in every turn."""
    return all(t is None or not str(t).strip() for t in (turns or []))


def is_identical(a, b) -> bool:
    """Same number of turns and the same text in each turn (surrounding whitespace ignored)."""
    a, b = list(a or []), list(b or [])
    return len(a) == len(b) and all(
        ("" if x is None else str(x).strip()) == ("" if y is None else str(y).strip())
        for x, y in zip(a, b, strict=True))


def rule_of(row: dict) -> str | None:
    """``identical``, ``empty_a``, ``empty_b`` or None. Identical wins, so both empty = identical."""
    if is_identical(row["response_a"], row["response_b"]):
        return "identical"
    if is_empty(row["response_a"]):
        return "empty_a"
    if is_empty(row["response_b"]):
        return "empty_b"
    return None


def _check_vector(v: list[float]) -> None:
    if len(v) != 3 or any(x < 0 for x in v) or abs(sum(v) - 1.0) > 1e-6:
        raise ValueError(f"must be 3 non-negative probabilities summing to 1, got {v}")


@dataclasses.dataclass(frozen=True)
class EmptyIdenticalRules:
    """Overwrite the prediction of rows whose responses are empty or identical with fixed vectors
    (4th place [R4] readme): empty A -> [0.04, 0.88, 0.08]; empty B -> [0.88, 0.04, 0.08];
    identical A and B -> [0.06, 0.06, 0.88] (P(A wins), P(B wins), P(tie)).

    Empty = every turn empty or whitespace (``[]``, ``[""]``, ``[null]``, which our data rule reads
    as ``""``). Identical = same turns after stripping surrounding whitespace. Precedence (ours,
    not stated by [R4]): identical first, so two empty responses get the tie vector; then empty A,
    then empty B. Scores for the rule alone: unknown ([R4] gives none).
    """

    empty_a: list[float] = param([0.04, 0.88, 0.08], "probabilities when response A is empty ([R4])",
                                 check=_check_vector)
    empty_b: list[float] = param([0.88, 0.04, 0.08], "probabilities when response B is empty ([R4])",
                                 check=_check_vector)
    identical: list[float] = param([0.06, 0.06, 0.88], "probabilities when A and B are identical ([R4])",
                                   check=_check_vector)

    @hookimpl
    def postprocess(self, probs, rows, fit):

        out = np.array(probs, dtype=np.float64, copy=True)
        for i, row in enumerate(rows):
            rule = rule_of(row)
            if rule is not None:
                out[i] = getattr(self, rule)
        return out
