"""The report's numbers (core/report/compare.py): deltas, verdicts, references, flags."""

from __future__ import annotations

import math

import numpy as np
import pytest

from replicator.core.report import compare as C
from replicator.core.report.runs import discover_runs
from replicator.core.scoring.stats import row_log_loss

from ..report_runs import ablation, make_run, synthetic


@pytest.fixture(scope="module")
def computed(tmp_path_factory):
    root = tmp_path_factory.mktemp("cmp") / "reports"
    runs = ablation(root)
    return runs, C.compute(discover_runs([root]), runs["base"][0])


def test_verdicts_and_delta(computed):
    runs, (variants, data) = computed
    rows = {v["name"]: v for v in data["variants"]}
    assert data["base"] == "toy" and variants[0].name == "toy"
    assert rows["toy"]["is_base"] and rows["toy"]["delta"] is None
    assert rows["toy +focal"]["verdict"] == "better" and rows["toy +focal"]["delta"]["hi"] < 0
    assert rows["toy +no_swap"]["verdict"] == "unresolved"
    # Δ is the mean over paired rows of variant − base losses
    base_losses = np.concatenate([row_log_loss(*synthetic(s, 0.4)) for s in (1, 2)])
    focal_losses = np.concatenate([row_log_loss(*synthetic(s, 1.0)) for s in (1, 2)])
    expected = (focal_losses - base_losses).mean()
    assert rows["toy +focal"]["delta"]["delta"] == pytest.approx(expected, abs=1e-5)
    assert data["bootstrap"]["n_boot"] == C.N_BOOT and not data["flags"]


def test_verdict_rule():
    assert C._verdict({"lo": -0.2, "hi": -0.01}) == "better"
    assert C._verdict({"lo": 0.01, "hi": 0.2}) == "worse"
    assert C._verdict({"lo": -0.01, "hi": 0.01}) == "unresolved"


def test_references_uniform_and_prior(computed):
    _, (_, data) = computed
    refs = {r["name"]: r for r in data["references"]}
    assert refs[C.UNIFORM]["log_loss"] == pytest.approx(math.log(3))
    assert C.PRIOR in refs and refs[C.UNIFORM]["delta"] is not None
    assert data["length_buckets"]["variants"] and len(data["length_buckets"]["labels"]) >= 2


def test_crossfit_prior_predicts_each_half_by_the_other():
    labels = np.eye(3)[[0, 0, 1, 2]]
    out = C.crossfit_prior(labels, ["g1", "g1", "g2", "g2"])
    np.testing.assert_allclose(out[:2], [[0, 0.5, 0.5]] * 2)
    np.testing.assert_allclose(out[2:], [[1, 0, 0]] * 2)
    assert C.crossfit_prior(labels, ["g"] * 4) is None


def test_a_run_computed_in_another_dtype_is_flagged(tmp_path):
    """A variant measured where ``auto`` meant fp32, its base where it meant bf16 (issue 22's table mixes
    machines): the report says so."""
    from ..report_runs import ENV

    p, y = synthetic(1, 0.4)
    base = make_run(tmp_path / "r", seed=1, probs=p, labels=y, env=ENV | {"auto_dtype": "bfloat16"})
    other = make_run(tmp_path / "r", toggles=("focal",), seed=1, probs=p, labels=y,
                     env=ENV | {"auto_dtype": "float32"})
    _, data = C.compute([base, other], base)
    assert [f["run"] for f in data["flags"]] == [other.name]
    assert "environment auto_dtype float32 vs bfloat16" in " ".join(data["flags"][0]["differs"])


def test_a_run_on_other_data_is_flagged(tmp_path):
    p, y = synthetic(1, 0.4)
    base = make_run(tmp_path / "r", seed=1, probs=p, labels=y)
    other = make_run(tmp_path / "r", toggles=("focal",), seed=1, probs=p, labels=y, data_hash="e" * 64)
    _, data = C.compute([base, other], base)
    assert len(data["flags"]) == 1 and "data" in " ".join(data["flags"][0]["differs"])
    rows = {v["name"]: v for v in data["variants"]}
    assert rows["toy +focal"]["delta"]["delta"] == pytest.approx(0.0, abs=1e-9)  # the same predictions


def test_a_run_of_another_recipe_is_that_recipe_not_the_base_without_its_toggles(tmp_path):
    """Comparing a toggled recipe with another recipe (the stacked smoke runs against the cpu recipe's): the
    other recipe's variant is named as that recipe, with no direction, not as 'without the base's toggle'."""
    p, y = synthetic(1, 0.4)
    base = make_run(tmp_path / "r", recipe="smoke", toggles=("offset_features",), seed=1, probs=p, labels=y)
    same = make_run(tmp_path / "r", recipe="smoke", seed=1, probs=p, labels=y)
    other = make_run(tmp_path / "r", recipe="cpu", seed=1, probs=p, labels=y)
    _, data = C.compute([base, same, other], base)
    rows = {v["name"]: v for v in data["variants"]}
    assert rows["smoke"]["about"][0]["about"].startswith("without the base's offset_features")
    about = rows["cpu"]["about"]
    assert [a["kind"] for a in about] == ["other_recipe"] and rows["cpu"]["direction"] is None
    assert about[0]["about"] == "another recipe: recipes/cpu.yaml"
