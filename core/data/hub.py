"""The Hugging Face hub: whether it answers, its datasets, and its copy of the competition train set
(validated like the competition CSV, :mod:`replicator.core.data.competition`)."""

from __future__ import annotations

import os
import urllib.request

from replicator.core.data.competition import rows_from_records
from replicator.core.errors import ReplicatorError
from replicator.core.rows import COMPETITION_SOURCE


def hub_reachable(timeout: float = 3) -> bool:
    """Whether huggingface.co answers (False at once when ``HF_HUB_OFFLINE`` is set)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return False
    try:
        req = urllib.request.Request("https://huggingface.co", method="HEAD")
        with urllib.request.urlopen(req, timeout=timeout):
            return True
    except Exception:
        return False


def load_hub_55k(hub_id: str, source: str = COMPETITION_SOURCE) -> list[dict]:
    """The hub copy of the competition train set, validated like :func:`read_competition_csv`."""
    ds = load_hub_dataset(hub_id)
    return rows_from_records(ds, f"hf://datasets/{hub_id}", require_labels=True, source=source)


def load_hub_dataset(hub_id: str, split: str = "train", what: str = "the dataset", hint: str = ""):
    """Split ``split`` of the Hugging Face dataset ``hub_id`` (``datasets.load_dataset``).

    Any failure -> :class:`ReplicatorError` ``"hf://datasets/<hub_id>: could not load <what> from the
    Hugging Face hub<hint>: <error>"`` (``hint``: e.g. how to get access to a gated dataset).
    """
    try:
        from datasets import load_dataset

        return load_dataset(hub_id, split=split)
    except Exception as e:
        raise ReplicatorError(f"hf://datasets/{hub_id}: could not load {what} from the Hugging Face "
                              f"hub{hint}: {type(e).__name__}: {e}") from None
