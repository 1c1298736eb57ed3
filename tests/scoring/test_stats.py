"""The paired bootstrap resamples prompt groups (and seeds); calibration error; per-row log loss
(core/scoring/stats.py)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from replicator.core.scoring.metrics import log_loss
from replicator.core.scoring.stats import (
    expected_calibration_error,
    paired_bootstrap,
    reliability_bins,
    row_log_loss,
)


def _groups(n_groups: int, per_group: int) -> np.ndarray:
    return np.repeat([f"g{i:04d}" for i in range(n_groups)], per_group)


def test_row_log_loss_mean_is_the_project_log_loss():
    rng = np.random.default_rng(0)
    p = rng.dirichlet([1, 1, 1], size=50)
    p[0] = [1.0, 0.0, 0.0]  # clipping matters here
    y = np.eye(3)[rng.integers(0, 3, 50)]
    y[0] = [0, 1, 0]
    assert row_log_loss(p, y).mean() == pytest.approx(log_loss(p, y), rel=1e-12)
    assert np.isfinite(row_log_loss(p, y)).all()


def test_identical_predictions_give_zero_delta_and_zero_width():
    loss = np.random.default_rng(1).uniform(0.5, 1.5, 300)
    r = paired_bootstrap(loss, loss.copy(), _groups(60, 5))
    assert r["delta"] == 0 and r["lo"] == 0 and r["hi"] == 0 and r["se"] == 0
    assert r["p_better"] == 0
    assert (r["n_rows"], r["n_groups"], r["n_seeds"]) == (300, 60, 1)


def test_planted_difference_is_resolved():
    rng = np.random.default_rng(2)
    groups = _groups(80, 4)
    base = rng.uniform(0.8, 1.3, groups.size)
    better = base - 0.05 + rng.normal(0, 0.03, groups.size)  # better on almost every group
    r = paired_bootstrap(base, better, groups)
    assert r["hi"] < 0 and r["lo"] < r["delta"] < r["hi"]
    assert r["p_better"] == 1.0
    worse = paired_bootstrap(better, base, groups)  # the other way round: mirrored
    assert worse["lo"] > 0 and worse["delta"] == pytest.approx(-r["delta"])


def test_small_random_perturbation_is_not_resolved():
    rng = np.random.default_rng(3)
    groups = _groups(100, 3)
    base = rng.uniform(0.8, 1.3, groups.size)
    r = paired_bootstrap(base, base + rng.normal(0, 0.05, groups.size), groups)
    assert r["lo"] < 0 < r["hi"]
    assert 0.05 < r["p_better"] < 0.95


def test_resamples_whole_groups_not_rows():
    # six big prompt groups; inside a group every row moves the same way (perfectly correlated)
    per_group = 60
    group_delta = np.array([-0.30, -0.25, -0.20, -0.10, 0.15, 0.30])
    groups = _groups(len(group_delta), per_group)
    base = np.full(groups.size, 1.0)
    var = base + np.repeat(group_delta, per_group)
    by_row = paired_bootstrap(base, var, np.arange(groups.size).astype(str))  # every row its own group
    by_group = paired_bootstrap(base, var, groups)
    assert by_row["delta"] == pytest.approx(by_group["delta"]) == pytest.approx(group_delta.mean())
    assert by_row["hi"] < 0, "treating rows as independent makes the difference look real"
    assert by_group["lo"] < 0 < by_group["hi"], "six groups cannot resolve it"
    assert by_group["se"] > 5 * by_row["se"]


def test_seed_resampling_widens_the_interval_when_seeds_disagree():
    rng = np.random.default_rng(4)
    groups = np.tile(_groups(50, 4), 3)  # three seeds, same split
    seeds = np.repeat([1, 2, 3], 200)
    base = rng.uniform(0.8, 1.3, groups.size)
    per_seed = np.repeat([-0.06, 0.0, 0.05], 200)  # one seed helped, one hurt
    var = base + per_seed + rng.normal(0, 0.01, groups.size)
    pooled = paired_bootstrap(base, var, groups)  # seeds ignored
    with_seeds = paired_bootstrap(base, var, groups, seeds=seeds)
    assert with_seeds["delta"] == pytest.approx(pooled["delta"])
    assert with_seeds["n_seeds"] == 3
    assert (with_seeds["hi"] - with_seeds["lo"]) > 3 * (pooled["hi"] - pooled["lo"])
    # seeds that agree widen it far less (resampling both levels counts row noise twice: conservative)
    agree = base - 0.02 + rng.normal(0, 0.01, groups.size)
    a1 = paired_bootstrap(base, agree, groups)
    a3 = paired_bootstrap(base, agree, groups, seeds=seeds)
    assert (a3["hi"] - a3["lo"]) < 2 * (a1["hi"] - a1["lo"])


def test_seeds_with_disjoint_splits():
    rng = np.random.default_rng(5)
    groups = np.concatenate([_groups(40, 3), np.char.add(_groups(40, 3), "x")])  # no group in common
    seeds = np.repeat([7, 8], 120)
    base = rng.uniform(0.8, 1.3, 240)
    r = paired_bootstrap(base, base - 0.03 + rng.normal(0, 0.02, 240), groups, seeds=seeds)
    assert r["n_groups"] == 80 and r["hi"] < 0


def test_deterministic_and_fast():
    rng = np.random.default_rng(6)
    groups = _groups(500, 3)
    base = rng.uniform(0.8, 1.3, groups.size)
    var = base + rng.normal(0, 0.1, groups.size)
    seeds = np.tile([1, 2, 3], 500)
    t = time.perf_counter()
    r1 = paired_bootstrap(base, var, groups, seeds=seeds, seed=11)
    elapsed = time.perf_counter() - t
    assert r1 == paired_bootstrap(base, var, groups, seeds=seeds, seed=11)
    assert r1 != paired_bootstrap(base, var, groups, seeds=seeds, seed=12)
    assert elapsed < 2.0  # about 0.1 s; generous for a shared 2-core machine


def test_bootstrap_rejects_bad_input():
    with pytest.raises(ValueError, match="one length"):
        paired_bootstrap([1.0, 2.0], [1.0], ["a", "b"])
    with pytest.raises(ValueError, match="no paired rows"):
        paired_bootstrap([], [], [])
    with pytest.raises(ValueError, match="finite"):
        paired_bootstrap([1.0, np.nan], [1.0, 1.0], ["a", "b"])


def test_expected_calibration_error():
    y = np.eye(3)[[0, 0, 0, 0, 1, 1, 1, 1, 2, 2]]
    # perfectly calibrated: confidence 0.5 in a bin where half are right
    p = np.tile([0.5, 0.3, 0.2], (10, 1))
    assert expected_calibration_error(p[:2].tolist() + [[0.2, 0.5, 0.3]] * 2,
                                      y[[0, 4, 4, 8]]) == pytest.approx(0.0)
    # always 0.9 confident on class 0, right 4 times out of 10
    q = np.tile([0.9, 0.05, 0.05], (10, 1))
    assert expected_calibration_error(q, y) == pytest.approx(0.5)
    # two bins: 0.9-confident and right (|1-0.9| = 0.1), 0.4-confident and wrong (0.4); equal weights
    r = np.array([[0.9, 0.05, 0.05], [0.4, 0.3, 0.3]])
    assert expected_calibration_error(r, np.eye(3)[[0, 1]]) == pytest.approx(0.25)
    bins = reliability_bins(r, np.eye(3)[[0, 1]])
    # sklearn's calibration_curve bins, closed on the right: 0.9 is in (0.8, 0.9], 0.4 in (0.3, 0.4]
    assert bins["count"].sum() == 2 and bins["count"][8] == 1 and bins["count"][3] == 1
    assert bins["accuracy"][8] == 1.0 and bins["confidence"][3] == pytest.approx(0.4)
    assert np.isnan(bins["accuracy"][0])
