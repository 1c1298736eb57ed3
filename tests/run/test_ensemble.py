"""Ensembles, the pure parts (core/run/ensemble.py): member views, gates, blends, fitted weights. No model is
trained here (tests/end_to_end/test_combination.py runs them on tiny models)."""

from __future__ import annotations

import numpy as np
import pytest

from replicator.core.errors import ReplicatorError
from replicator.core.run import ensemble as E
from replicator.core.scoring.metrics import log_loss

from ..helpers import _preds


def test_member_views_and_a_clear_error_without_the_swap_view():
    p = _preds(["1", "2"])
    assert np.array_equal(E.member_view("m", p, E.MemberConfig(input="swapped"), "run-x"), p.views["swap_ab"])
    assert np.array_equal(E.member_view("m", p, E.MemberConfig(input="both"), "run-x"), p.views["tta"])
    assert np.array_equal(E.member_view("m", p, E.MemberConfig(), "run-x"), p.views["final"])
    no_swap = _preds(["1", "2"], views=("identity", "tta", "final"))
    with pytest.raises(ReplicatorError, match=r"member armorm: input swapped needs .* run-x has only "
                                              r"identity, tta, final: enable swap TTA for that member, "
                                              r"e.g. toggles: \[\.\.\., tta\]"):
        E.member_view("armorm", no_swap, E.MemberConfig(input="swapped"), "run-x")


def test_members_must_share_their_validation_rows():
    a, b = _preds(["1", "2", "3"]), _preds(["3", "1", "2"])
    pos = E.align_members({"a": ("run-a", a), "b": ("run-b", b)})
    assert list(pos["b"]) == [1, 2, 0]  # b's rows in a's order
    with pytest.raises(ReplicatorError, match=r"members a \(run-a\) and c \(run-c\) do not share their "
                                              r"validation rows: 2 shared, 1 only in a, 1 only in c "
                                              r"\(e.g. id '9'\)"):
        E.align_members({"a": ("run-a", a), "c": ("run-c", _preds(["1", "2", "9"]))})


def test_the_gate_admits_rows_by_estimated_tokens():
    gate = E.GateConfig(tokens_le=512, tokens_ge=1500)  # 4 characters per token
    chars = np.array([2048, 2049, 3000, 5999, 6000, 100_000])
    assert E.estimated_tokens(chars, 4.0).tolist() == [512, 513, 750, 1500, 1500, 25000]
    assert E.gate_mask(chars, gate).tolist() == [True, False, False, True, True, True]
    half = E.GateConfig(tokens_ge=1500, chars_per_token=2.0)
    assert E.gate_mask(chars, half).tolist() == [False] * 2 + [True] * 4
    assert E.gate_mask(chars, None).all()
    with pytest.raises(ValueError, match="tokens_le and/or tokens_ge"):
        E.GateConfig()


def test_fixed_weights_blend_is_the_hand_computed_mean_and_the_gate_applies_per_row():
    p1 = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3]])
    p2 = np.array([[0.3, 0.3, 0.4], [0.1, 0.1, 0.8]])
    both = E.blend([p1, p2], [2, 1])
    assert np.allclose(both, [[(2 * 0.6 + 0.3) / 3, (2 * 0.3 + 0.3) / 3, (2 * 0.1 + 0.4) / 3],
                              [(2 * 0.2 + 0.1) / 3, (2 * 0.5 + 0.1) / 3, (2 * 0.3 + 0.8) / 3]])
    gated = E.blend([p1, p2], [2, 1], [np.array([True, True]), np.array([False, True])])
    assert np.allclose(gated[0], p1[0]) and np.allclose(gated[1], both[1])  # row 0: member 2 is gated out
    with pytest.raises(ReplicatorError, match="1 row.* no member with a positive weight"):
        E.blend([p1, p2], [0, 1], [np.array([True, True]), np.array([False, True])])


def test_fitted_weights_recover_the_better_member_and_are_scored_out_of_fold():
    rng = np.random.default_rng(0)
    n = 600
    y = np.eye(3)[rng.integers(0, 3, n)]
    good = 0.6 * y + 0.4 * rng.dirichlet([1, 1, 1], n)  # informative
    bad = rng.dirichlet([1, 1, 1], n)  # noise
    w = E.fit_weights([bad, good], y)
    assert w.sum() == pytest.approx(1) and (w >= 0).all() and w[1] > 0.9
    fitted = log_loss(E.blend([bad, good], w), y)
    # the optimum may be the better member alone (w = [0, 1]): equal up to rounding, which differs by CPU
    assert fitted <= min(log_loss(good, y), log_loss(E.blend([bad, good], [1, 1]), y)) + 1e-12
    groups = [f"g{i // 2}" for i in range(n)]
    honest, per_fold = E.crossfit_blend([bad, good], y, None, groups, 5, seed=0)
    assert len(per_fold) == 5 and all(fw[1] > 0.9 for fw in per_fold)
    assert log_loss(honest, y) >= fitted - 1e-9  # in-sample is the optimistic one
    folds = E.group_folds(groups, 5, seed=0)
    assert all(len(set(folds[[i for i, g in enumerate(groups) if g == gg]])) == 1 for gg in set(groups[:20]))
    with pytest.raises(ReplicatorError, match="only 2 group"):
        E.group_folds(["a", "b", "a"], 5, seed=0)


def test_blend_members_writes_the_views_and_checks_the_labels():
    ids = [str(i) for i in range(40)]
    a = _preds(ids, seed=1, views=("identity", "swap_ab", "tta", "final", "baseline_prior"))
    b = _preds(list(reversed(ids)), seed=2, labels=a.labels[::-1].copy())
    specs = {"a": E.MemberConfig(weight=3), "b": E.MemberConfig(weight=1, input="swapped", gate=E.GateConfig(
        tokens_le=500))}
    cfg = E.EnsembleConfig(members={})
    preds, info = E.blend_members(specs, {"a": ("ra", a), "b": ("rb", b)}, cfg, seed=0)
    b_swap = b.views["swap_ab"][::-1]  # b's rows in a's order
    mask = a.chars / 4 <= 500
    hand = np.where(mask[:, None], (3 * a.views["final"] + b_swap) / 4, a.views["final"])
    assert np.allclose(preds.views["final"], hand)
    assert list(preds.views) == ["final", "member_a", "member_b", "baseline_prior"]
    assert info["weights"] == {"a": 0.75, "b": 0.25} and info["coverage"]["b"] == pytest.approx(mask.mean())
    summary = E.summarize_blend(preds, info, n_boot=200)
    assert summary["blend"]["log_loss"] == pytest.approx(log_loss(hand, a.labels), abs=1e-9)
    d = summary["members"]["b"]["blend_minus_member"]
    assert d["delta"] == pytest.approx(summary["blend"]["log_loss"] - summary["members"]["b"]["log_loss"])
    assert d["lo"] <= d["delta"] <= d["hi"]
    bad = _preds(ids, seed=3, labels=np.roll(a.labels, 1, axis=0))
    with pytest.raises(ReplicatorError, match="member b .*labels differ"):
        E.blend_members(specs, {"a": ("ra", a), "b": ("rb", bad)}, cfg, seed=0)
