"""The common row schema every data source produces and every other hook consumes.

A row is a plain dict:

``id`` (str)
    unique within its source; Kaggle ids keep their original text.
``prompt``, ``response_a``, ``response_b`` (list[str])
    one entry per turn, all three the same length (see :mod:`replicator.core.data.competition` for the rules
    that make them so).
``label`` (list[float] of 3, or None)
    P(A wins), P(B wins), P(tie): hard one-hot for human labels, soft for rated or pseudo labels.
``model_a``, ``model_b`` (str or None)
    model names where known (auxiliary heads).
``source`` (str)
    the data plugin that produced it.
``group`` (str)
    the grouping key for splits and de-duplication (hash of the normalised prompt).
``pair`` (str, optional)
    rows with the same ``pair`` go into the same optimizer step (full-swap augmentation).
``teacher`` (dict[str, list[float]], optional)
    teacher probabilities produced by earlier stages (distillation).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import unicodedata
from pathlib import Path
from typing import Any

LABELS = ("winner_model_a", "winner_model_b", "winner_tie")
SWAP_PERM = (1, 0, 2)  # A<->B, tie stays
#: the ``source`` of a row read from the competition's CSV format (a data label: pair keys hash it, and
#: committed per-row files carry it); the data plugin that reads that format takes its name from it
COMPETITION_SOURCE = "kaggle_csv"
#: the name of the A/B-swapped test-time view (a column prefix of committed per-row prediction files);
#: the swap plugin names its view so, and ensembles read a member's swapped predictions from it
SWAPPED_VIEW = "swap_ab"


def prompt_group(prompt: list[str]) -> str:
    """Stable hash of a prompt, normalised (NFKC, case-folded, whitespace collapsed)."""
    text = "\x1f".join(" ".join(unicodedata.normalize("NFKC", t).casefold().split()) for t in prompt)
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def make_row(id, prompt, response_a, response_b, label=None, model_a=None, model_b=None, source="") -> dict:
    return {
        "id": str(id),
        "prompt": list(prompt),
        "response_a": list(response_a),
        "response_b": list(response_b),
        "label": None if label is None else [float(x) for x in label],
        "model_a": model_a,
        "model_b": model_b,
        "source": source,
        "group": prompt_group(prompt),
    }


def pair_key(row: dict) -> str:
    """The ``pair`` key that keeps a row and its copies (swap, other layouts) in one micro-batch, hence one
    optimizer step (an existing key is kept)."""
    if row.get("pair") is not None:
        return row["pair"]
    return f"swap:{row.get('source', '')}:{row['id']}"


def swap_row(row: dict) -> dict:
    """The same comparison with A and B exchanged and the label (and teachers) flipped."""
    out = dict(row)
    out["response_a"], out["response_b"] = row["response_b"], row["response_a"]
    out["model_a"], out["model_b"] = row.get("model_b"), row.get("model_a")
    if row.get("label") is not None:
        out["label"] = [row["label"][i] for i in SWAP_PERM]
    if row.get("teacher"):
        out["teacher"] = {k: [v[i] for i in SWAP_PERM] for k, v in row["teacher"].items()}
    out["swapped"] = not row.get("swapped", False)
    return out


@dataclasses.dataclass
class Encoded:
    """What a prompt format returns: the token ids and what truncation did."""

    input_ids: list[int]
    truncated: bool = False
    #: per field, how many tokens (or words) were removed; free-form, reported in statistics
    removed: dict[str, int] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class DataContext:
    """What data plugins get besides the split name."""

    data_dir: Path
    seed: int
    stage: str = ""
    #: prompt groups of the validation rows (the runner checks no training row shares one)
    valid_groups: set[str] = dataclasses.field(default_factory=set)
    #: prompt groups of the test rows, when a source feeds the test split
    test_groups: set[str] = dataclasses.field(default_factory=set)
    #: predictions of earlier stages: stage name -> {"train" | "pool": {row id: [p_a, p_b, p_tie]},
    #: "pool_rows": [rows]} (only what that stage's ``outputs`` asked for)
    stage_outputs: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: where a source may cache converted files
    cache_dir: Path | None = None

    @property
    def held_out_groups(self) -> set[str]:
        """Validation and test prompt groups: external data (extra sets, pseudo-label pools) drops
        rows in them, so neither a validation score nor a test prediction is contaminated."""
        return self.valid_groups | self.test_groups


def rows_digest(rows: list[dict]) -> str:
    h = hashlib.sha256()
    for r in rows:
        h.update(json.dumps([r["id"], r["prompt"], r["response_a"], r["response_b"], r["label"]],
                            ensure_ascii=True).encode())
    return h.hexdigest()[:16]
