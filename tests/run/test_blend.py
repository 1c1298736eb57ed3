"""Blends of finished runs measured after the fact (core/run/blend.py, ``replicate blend``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from replicator.core.cli import app
from replicator.core.errors import ReplicatorError
from replicator.core.run.blend import blend_runs

from ..conftest import ROOT
from ..report_runs import make_run, synthetic

REPORTS = ROOT / "reports"


def _two_views(root, seeds=(1, 2), recipes=("a", "b")):
    """Two recipes that see the same latent score through independent noise, per seed; a weak style view."""
    out = []
    for s in seeds:
        weak, y = synthetic(s + 900, 0.05)
        for k, recipe in enumerate(recipes):
            p, _ = synthetic(100 * k + s, 0.6, noise=0.6)
            out.append(make_run(root, recipe=recipe, seed=s, probs=p, labels=y,
                                baselines={"baseline_style": weak}))
    return out


def test_a_blend_of_two_noisy_views_beats_each_and_pools_the_seeds(tmp_path):
    _two_views(tmp_path)
    r = blend_runs([tmp_path], progress=lambda _: None)
    assert r["members"] == ["a", "b"] and [s["seed"] for s in r["per_seed"]] == [1, 2]
    for s in r["per_seed"]:
        ll = s["log_loss"]
        assert ll["blend"] < min(ll["a"], ll["b"])
        assert all(0.2 < w < 0.8 for w in s["weights_mean"].values())  # both views carry signal
    assert set(r["pooled"]) == {"a", "b", "style regression"}
    assert all(r["pooled"][m]["delta"] < 0 and r["pooled"][m]["p_better"] > 0.9 for m in "ab")


def test_runs_that_cannot_be_blended_are_refused_by_name(tmp_path):
    runs = _two_views(tmp_path / "ok")
    with pytest.raises(ReplicatorError, match="at least two variants"):
        blend_runs([runs[0], runs[2]])  # recipe a, seeds 1 and 2
    with pytest.raises(ReplicatorError, match="b has no run of split seed 2"):
        blend_runs(runs[:3])
    p, y = synthetic(5, 0.5, n=120)
    other = make_run(tmp_path / "short", recipe="c", seed=1, probs=p, labels=y)
    with pytest.raises(ReplicatorError, match="do not share their validation rows"):
        blend_runs([runs[0], other])
    p, y = synthetic(6, 0.5)
    again = make_run(tmp_path / "twice", recipe="a", seed=1, probs=p, labels=y)
    with pytest.raises(ReplicatorError, match="two runs of a with split seed 1"):
        blend_runs([runs[0], again, runs[1]])


def test_the_command_writes_its_table(tmp_path):
    _two_views(tmp_path / "runs")
    out = CliRunner().invoke(app, ["blend", str(tmp_path / "runs"), "-o", str(tmp_path / "bl")])
    assert out.exit_code == 0, out.output
    assert "| pooled |" in out.output and "weight of a" in out.output
    assert json.loads((tmp_path / "bl" / "blend.json").read_text())["members"] == ["a", "b"]
    bad = CliRunner().invoke(app, ["blend", str(tmp_path / "runs" / "a")])
    assert bad.exit_code != 0 and "at least two variants" in bad.output


@pytest.mark.parametrize("folder", sorted(p.parent.name for p in REPORTS.glob("*/blend-*/blend.json")))
def test_the_committed_blends_are_what_the_code_gives(folder):
    """Each committed blend report, recomputed from the committed runs it names: the same scores."""
    (path,) = REPORTS.glob(f"*/{folder}/blend.json")
    committed = json.loads(path.read_text())
    dirs = [next(REPORTS.glob(f"*/{run_id}")) for s in committed["per_seed"] for run_id in s["runs"].values()]
    got = blend_runs(dirs, progress=lambda _: None)
    assert got["members"] == committed["members"]
    for a, b in zip(got["per_seed"], committed["per_seed"], strict=True):
        assert a["log_loss"] == pytest.approx(b["log_loss"], abs=1e-6)
    for k, d in committed["pooled"].items():
        assert got["pooled"][k]["delta"] == pytest.approx(d["delta"], abs=1e-6)
    assert np.isfinite([s["log_loss"]["blend"] for s in got["per_seed"]]).all()
