"""Micro-batches (core/tokens/batches.py): length-grouped row batches (pinned), token-budget batches, and
packed rows against padded ones."""

from __future__ import annotations

import random

import pytest
import torch

from replicator.core.config.catalogue import build_plugins
from replicator.core.config.recipe import resolve
from replicator.core.errors import ReplicatorError
from replicator.core.model.loading import load_model
from replicator.core.model.tensors import head_module
from replicator.core.tokens.batches import (
    collate,
    forward_logits,
    forward_packed_logits,
    length_grouped_batches,
    pack,
    token_budget_batches,
    units_of,
)

from ..conftest import RECIPES
from ..helpers import NO_DROPOUT, _rows_and_lengths


def test_row_batches_are_what_they_were():
    """batch_tokens unset: the length-grouped batches of a small case, pinned (the same batches as before
    token budgets existed, so the same numbers)."""
    lengths = [7, 3, 9, 1, 4, 8, 2, 6, 5, 10]
    units = [[0], [1], [2, 3], [4], [5], [6, 7], [8], [9]]
    got = length_grouped_batches(lengths, units, 3, random.Random("7:0"))
    assert got == [[5, 0], [9, 2, 3], [4, 1], [6, 7, 8]]


@pytest.mark.parametrize("budget", [64, 400, 1000, 3000])
def test_token_budget_batches_respect_the_budget_keep_pairs_and_cover_every_row_once(budget):
    rows, lengths = _rows_and_lengths()
    units = units_of(rows)
    batches = token_budget_batches(lengths, units, budget, random.Random("1:0"))
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(rows)))  # every row once
    unit_of = {i: k for k, u in enumerate(units) for i in u}
    for b in batches:
        padded = len(b) * max(lengths[i] for i in b)
        in_units = {unit_of[i] for i in b}
        assert padded <= budget or len(in_units) == 1, (budget, b, padded)  # over: one unit alone
        for k in in_units:
            assert set(units[k]) <= set(b)  # a pair is never split
    if budget >= 1000:  # short rows share a micro-batch with many others, long ones with few
        sizes = {len(b) for b in batches}
        assert max(sizes) > 2 * min(sizes)
    padding = 1 - sum(lengths) / sum(len(b) * max(lengths[i] for i in b) for b in batches)
    assert padding < 0.2


def test_a_row_over_the_budget_is_a_micro_batch_of_its_own():
    lengths = [500, 20, 30, 40]
    batches = token_budget_batches(lengths, [[0], [1], [2], [3]], 100, random.Random(0))
    assert [0] in batches and sorted(i for b in batches for i in b) == [0, 1, 2, 3]
    assert all(len(b) * max(lengths[i] for i in b) <= 100 for b in batches if b != [0])
    with pytest.raises(ReplicatorError, match="batch_tokens"):
        token_budget_batches(lengths, [[0]], 0, random.Random(0))


def test_token_budget_batches_are_seeded_and_shuffled():
    rows, lengths = _rows_and_lengths()
    a = token_budget_batches(lengths, units_of(rows), 800, random.Random("7:0"))
    assert a == token_budget_batches(lengths, units_of(rows), 800, random.Random("7:0"))
    b = token_budget_batches(lengths, units_of(rows), 800, random.Random("7:1"))
    assert a != b and sorted(map(sorted, a)) != sorted(map(sorted, b))
    widths = [max(lengths[i] for i in x) for x in a]
    assert widths != sorted(widths) and widths != sorted(widths, reverse=True)  # not in length order


def test_pack_restarts_positions_per_row():
    ids, pos, ends = pack([[5, 6, 7], [8], [9, 10]], "cpu")
    assert ids.tolist() == [[5, 6, 7, 8, 9, 10]] and pos.tolist() == [[0, 1, 2, 0, 0, 1]]
    assert ends.tolist() == [2, 3, 5]


@pytest.mark.parametrize("arch,head", [("llama", "default_head"), ("qwen2", "default_head"),
                                       ("gemma2", "mlp_head"), ("gemma3", "default_head")])
def test_packed_rows_give_the_logits_and_gradients_of_padded_rows(arch, head):
    r = resolve(RECIPES / "smoke.yaml", ["single_split"],
                [f"model.base=tiny:{arch}", "model.dtype=float32", NO_DROPOUT, f"plugins.head.use={head}"])
    torch.manual_seed(0)
    model, tok, _ = load_model(r.final.model, build_plugins(r.final.plugins, r.file))
    model.eval()  # no dropout (the mlp head has its own); gradients flow all the same
    for p in head_module(model)[1].parameters():  # the default head starts at zero: every logit would be 0
        torch.nn.init.normal_(p, std=0.5)
    gen = torch.Generator().manual_seed(1)
    seqs = [torch.randint(4, 60, (n,), generator=gen).tolist() for n in (5, 23, 17, 40)]  # windows of 16
    labels = torch.tensor([0, 2, 1, 2])

    def run(fn):
        model.zero_grad()
        logits = fn()
        torch.nn.functional.cross_entropy(logits, labels).backward()
        grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.requires_grad}
        return logits.detach(), grads

    padded, g_pad = run(lambda: forward_logits(model, *collate(seqs, tok.pad_token_id, "cpu")))
    packed, g_pack = run(lambda: forward_packed_logits(model, head_module(model)[1], seqs, "cpu"))
    assert packed.shape == (4, 3) and torch.allclose(packed, padded, atol=1e-5), (packed - padded).abs().max()
    assert g_pad.keys() == g_pack.keys() and any(g.abs().max() > 0 for g in g_pad.values())
    for k in g_pad:
        assert torch.allclose(g_pack[k], g_pad[k], atol=1e-5, rtol=1e-4), k
    # without the restarting positions the rows would see each other: the check above can fail
    ids, _, ends = pack(seqs, "cpu")
    with torch.no_grad():
        joined = []
        h = head_module(model)[1].register_forward_hook(lambda m, a, o: joined.append(o))
        model(input_ids=ids, use_cache=False)
        h.remove()
    assert not torch.allclose(joined[-1][0, ends], padded, atol=1e-3)
