"""Swap augmentation and swap TTA (plugins/swap_ab.py)."""

from __future__ import annotations

import random

import numpy as np

from replicator.core.rows import SWAP_PERM, make_row, swap_row
from replicator.core.tokens.batches import length_grouped_batches, units_of
from replicator.plugins.swap_ab import SwapAB, SwapView


def _rows(n=6, seed=0):
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        lab = [0.0, 0.0, 0.0]
        lab[rng.randrange(3)] = 1.0
        r = make_row(f"r{i}", [f"question {i}"], [f"answer a {i}" * (i + 1)], [f"b {i}"], lab,
                     model_a="gpt-4-0613", model_b="claude-2.1", source="test")
        r["teacher"] = {"t1": [0.6, 0.3, 0.1], "t2": [0.2, 0.5, 0.3]}
        rows.append(r)
    return rows


def test_swap_twice_is_identity_on_rows_labels_and_teachers():
    rows = _rows()
    swap = SwapAB(train="swapped")
    once = swap.augment(rows=rows, epoch=0, seed=0)
    assert all(o["label"] == [r["label"][i] for i in SWAP_PERM] for o, r in zip(once, rows, strict=True))
    assert once[0]["teacher"]["t1"] == [0.3, 0.6, 0.1] and once[0]["model_a"] == "claude-2.1"
    twice = swap.augment(rows=once, epoch=1, seed=0)
    for r, t in zip(rows, twice, strict=True):
        assert ({k: v for k, v in t.items() if k != "swapped"}
                == {k: v for k, v in r.items() if k != "swapped"})
        assert not t["swapped"]
        back = swap_row(swap_row(r))
        assert (back["label"] == r["label"] and back["teacher"] == r["teacher"]
                and back["response_a"] == r["response_a"])


def _fake_model(row):
    """A swap-consistent but permutation-sensitive 'model': scores from response lengths."""
    la, lb = len(" ".join(row["response_a"])), len(" ".join(row["response_b"]))
    z = np.array([0.3 * la - 0.1 * lb, 0.3 * lb - 0.1 * la, 0.05 * abs(la - lb) + 1.0]) / 10
    e = np.exp(z - z.max())
    return e / e.sum()


def test_tta_invert_apply_restores_probabilities():
    rows = _rows()
    view = SwapView()
    base = np.array([_fake_model(r) for r in rows])
    swapped = np.array([_fake_model(view.apply(r)) for r in rows])
    assert not np.allclose(base, swapped)  # the view does change what the model sees
    np.testing.assert_allclose(view.invert(swapped), base, atol=1e-12)
    synthetic = np.random.default_rng(0).dirichlet([1, 1, 1], size=10)
    np.testing.assert_array_equal(view.invert(view.invert(synthetic)), synthetic)
    assert ([v.name for v in SwapAB(test_time=True).tta()] == ["swap_ab"]
            and SwapAB(test_time=False).tta() == [])


def test_full_swap_batches_contain_both_orders_of_each_row():
    rows = _rows(n=40, seed=1)
    aug = SwapAB(train="full").augment(rows=rows, epoch=0, seed=0)
    assert len(aug) == 80
    units = units_of(aug)
    assert len(units) == 40 and all(len(u) == 2 for u in units)
    lengths = [len(r["response_a"][0]) + len(r["response_b"][0]) for r in aug]
    batches = length_grouped_batches(lengths, units, batch_size=6, rng=random.Random(0))
    seen = set()
    for b in batches:
        orders: dict[str, set] = {}
        for i in b:
            orders.setdefault(aug[i]["id"], set()).add(aug[i].get("swapped", False))
        assert all(o == {False, True} for o in orders.values()), b
        seen |= set(orders)
    assert seen == {r["id"] for r in rows}
    # a plain duplicate does not pair them
    dup = SwapAB(train="duplicate").augment(rows=rows, epoch=0, seed=0)
    assert len(units_of(dup)) == 80


def test_alternate_flips_per_epoch_and_random_is_seeded():
    rows = _rows(n=10)
    swap = SwapAB(train="alternate")
    for epoch in range(4):
        out = swap.augment(rows=rows, epoch=epoch, seed=0)
        assert len(out) == len(rows)
        assert all(r.get("swapped", False) == (epoch % 2 == 1) for r in out)
    rnd = SwapAB(train="random", p=0.5)
    a = [r.get("swapped", False) for r in rnd.augment(rows=rows, epoch=0, seed=3)]
    assert a == [r.get("swapped", False) for r in rnd.augment(rows=rows, epoch=0, seed=3)]
    assert SwapAB(train="none").augment(rows=rows, epoch=1, seed=0) == rows
