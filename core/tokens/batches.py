"""Rows -> token ids -> padded batches -> logits: what training and prediction share.

:class:`Encoder` tokenizes through the ``prompt_format`` hook once per (row, view, budget), into the
persistent token cache (:mod:`replicator.core.tokens.store`);
:func:`length_grouped_batches` makes training micro-batches of similar lengths (a fixed number of rows),
:func:`token_budget_batches` ones filled up to a padded-token budget; :func:`collate`
right-pads; :func:`forward_logits` runs the sequence classifier; :func:`forward_packed_logits` runs it
on a micro-batch packed into one sequence without padding (``train.packed``).
"""

from __future__ import annotations

import random

import numpy as np

from replicator.core.errors import ReplicatorError
from replicator.core.tokens.encoding import encode_one, group_order, tokenise_into
from replicator.core.tokens.keys import row_key
from replicator.core.tokens.store import open_store


class Encoder:
    """Tokenizes rows through the prompt_format hook, once per (row content, view, budget), into the
    persistent token cache (:mod:`replicator.core.tokens.store`: memory-mapped Arrow, int32 ids, shared by
    every stage and recipe that tokenises the same way).

    ``encoder(row, max_length)`` returns the row's token ids as a read-only int32 array;
    :meth:`prepare` looks up many rows at once and tokenises only the misses (in worker processes
    when there are thousands). ``count``: distinct rows (id, content, view, budget) tokenised or
    looked up; ``truncated``: how many of them the format truncated.
    """

    def __init__(self, plugins, tokenizer):
        self.plugins, self.tokenizer = plugins, tokenizer
        self.truncated = 0
        self.count = 0
        self._stores: dict = {}
        self._counted: dict[int, set] = {}

    def store(self, max_length: int):
        """The token store of this format, tokenizer and budget (opened on first use)."""
        if max_length not in self._stores:
            self._stores[max_length] = open_store(self.plugins, self.tokenizer, max_length)
        return self._stores[max_length]

    def _count(self, row: dict, key: bytes, max_length: int, truncated: bool) -> None:
        seen = self._counted.setdefault(max_length, set())
        mark = (row.get("id"), key)
        if mark not in seen:
            seen.add(mark)
            self.count += 1
            self.truncated += bool(truncated)

    def __call__(self, row: dict, max_length: int):
        store = self.store(max_length)
        key = row_key(row)
        hit = store.get(key)
        if hit is None:
            hit = encode_one(self.plugins, self.tokenizer, row, max_length)
            store.add_pending(key, *hit)
        self._count(row, key, max_length, hit[1])
        return hit[0]

    def prepare(self, rows: list[dict], max_length: int, views=None, progress: bool = True) -> None:
        """Look up every row (under each of ``views``: ``dict(view.apply(row), view=view.name)``, as
        prediction presents them; None = the rows as they are), tokenise the misses and store them."""
        store = self.store(max_length)
        store.flush()
        store.refresh()
        todo = rows if views is None else [dict(v.apply(r), view=v.name) for v in views for r in rows]
        keys = [row_key(r) for r in todo]
        first: dict[bytes, int] = {}
        for i, k in enumerate(keys):
            if k not in first and k not in store:
                first[k] = i
        if first:
            order = group_order(todo, first.values())
            tokenise_into(store, self.plugins, self.tokenizer, max_length, [todo[i] for i in order],
                          [keys[i] for i in order], progress)
        for r, k in zip(todo, keys, strict=True):
            hit = store.get(k)
            if hit is None:  # its new shard could not be read back (warned): tokenised again, kept in memory
                self(r, max_length)
            else:
                self._count(r, k, max_length, hit[1])


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


def token_budget_batches(lengths: list[int], units: list[list[int]], batch_tokens: int, rng: random.Random,
                         mega_budgets: int = 32):
    """Micro-batches filled up to a padded-token budget: rows x the longest row <= ``batch_tokens``;
    a unit (a row, or rows sharing a ``pair`` key) that alone is over the budget is a micro-batch of
    its own. Units are shuffled, taken in mega-batches of about ``mega_budgets`` budgets of tokens,
    sorted by length inside each and packed greedily, and the micro-batches are shuffled: short rows
    share a micro-batch with many others, long rows with few, and there is little padding.
    """
    if batch_tokens < 1:
        raise ReplicatorError(f"train.batch_tokens: {batch_tokens} must be at least 1")
    units = [list(u) for u in units]
    rng.shuffle(units)
    batches: list[list[int]] = []
    start = 0
    while start < len(units):
        end, mass = start, 0
        while end < len(units) and (mass < mega_budgets * batch_tokens or end == start):
            mass += sum(lengths[i] for i in units[end])
            end += 1
        chunk = sorted(units[start:end], key=lambda u: -max(lengths[i] for i in u))
        cur: list[int] = []
        width = 0
        for u in chunk:
            w = max(width, max(lengths[i] for i in u))
            if cur and (len(cur) + len(u)) * w > batch_tokens:
                batches.append(cur)
                cur, w = [], max(lengths[i] for i in u)
            cur, width = cur + u, w
        if cur:
            batches.append(cur)
        start = end
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


def pack(seqs: list, device):
    """The rows of a micro-batch as one padding-free sequence: (input ids [1, T], position ids [1, T]
    restarting at 0 for every row, index of each row's last token)."""
    import torch

    lengths = [len(s) for s in seqs]
    ids = torch.from_numpy(np.concatenate([np.asarray(s, dtype=np.int64) for s in seqs]))[None]
    pos = torch.cat([torch.arange(n) for n in lengths])[None]
    ends = torch.tensor(lengths).cumsum(0) - 1
    return ids.to(device), pos.to(device), ends.to(device)


def forward_packed_logits(model, head, seqs: list, device):
    """Logits of the rows of ``seqs`` computed as one packed sequence (``train.packed``): transformers
    masks attention between the rows from the position ids (a block-diagonal causal mask with sdpa or
    eager attention; padding-free kernels with flash attention on CUDA). The head (``head``: the model's
    ``score`` module) runs on every token; each row's logits are its output at the row's last token,
    what the sequence classifier pools from a right-padded row."""
    ids, pos, ends = pack(seqs, device)
    out = []
    hook = head.register_forward_hook(lambda module, args, output: out.append(output))
    try:
        model(input_ids=ids, position_ids=pos, use_cache=False)
    finally:
        hook.remove()
    return out[-1][0, ends]


def forward_logits(model, ids, mask):
    """Preference (+ auxiliary) logits: the sequence-classification model pools its head at the last
    non-pad token of each row (inputs are right-padded)."""
    out = model(input_ids=ids, attention_mask=mask, use_cache=False)
    return out.logits
