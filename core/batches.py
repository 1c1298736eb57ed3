"""Rows -> token ids -> padded batches -> logits: what training and prediction share.

:class:`Encoder` tokenizes through the ``prompt_format`` hook once per (row, view, budget);
:func:`length_grouped_batches` makes training micro-batches of similar lengths; :func:`collate`
right-pads; :func:`forward_logits` runs the sequence classifier.
"""

from __future__ import annotations

import random

from .errors import ReplicatorError


class Encoder:
    """Tokenizes rows through the prompt_format hook, once per (row, view, budget)."""

    def __init__(self, plugins, tokenizer):
        self.plugins, self.tok, self.cache = plugins, tokenizer, {}
        self.truncated = 0
        self.count = 0

    def __call__(self, row: dict, max_length: int) -> list[int]:
        key = (row["id"], row.get("swapped", False), row.get("view", ""), row.get("layout"), max_length)
        if key not in self.cache:
            enc = self.plugins.one("prompt_format", row=row, tokenizer=self.tok, max_length=max_length)
            if len(enc.input_ids) > max_length:
                raise ReplicatorError(f"prompt_format returned {len(enc.input_ids)} tokens for row "
                                      f"{row['id']}, over the budget {max_length}")
            self.cache[key] = enc.input_ids
            self.count += 1
            self.truncated += bool(enc.truncated)
        return self.cache[key]


def length_grouped_batches(lengths: list[int], units: list[list[int]], batch_size: int, rng: random.Random):
    """Micro-batches of about ``batch_size`` rows with similar lengths; rows of a unit stay together.

    Units (a row, or rows sharing a ``pair`` key) are shuffled, taken in mega-batches of 32
    micro-batches, sorted by length inside each, cut into micro-batches, and the micro-batches
    are shuffled: little padding, still random.
    """
    units = list(units)
    rng.shuffle(units)
    mega = batch_size * 32
    batches: list[list[int]] = []
    for start in range(0, len(units), mega):
        chunk = sorted(units[start:start + mega], key=lambda u: -max(lengths[i] for i in u))
        cur: list[int] = []
        for u in chunk:
            if cur and len(cur) + len(u) > batch_size:
                batches.append(cur)
                cur = []
            cur = cur + u
        if cur:
            batches.append(cur)
    rng.shuffle(batches)
    return batches


def units_of(rows: list[dict]) -> list[list[int]]:
    """Indices of the rows grouped into units: a row alone, or all rows sharing a ``pair`` key."""
    groups: dict[str, list[int]] = {}
    out: list[list[int]] = []
    for i, r in enumerate(rows):
        if r.get("pair") is None:
            out.append([i])
        else:
            if r["pair"] not in groups:
                groups[r["pair"]] = []
                out.append(groups[r["pair"]])
            groups[r["pair"]].append(i)
    return out


def collate(seqs: list[list[int]], pad_id: int, device):
    """(input ids, attention mask), right-padded to the longest sequence, on ``device``."""
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids.to(device), mask.to(device)


def forward_logits(model, ids, mask):
    """Preference (+ auxiliary) logits: the sequence-classification model pools its head at the last
    non-pad token of each row (inputs are right-padded)."""
    out = model(input_ids=ids, attention_mask=mask)
    return out.logits
