"""``replicate ablate`` (core/run/ablate.py): the plan, its errors, the estimates."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from replicator.core.cli import app
from replicator.core.errors import RecipeError, ReplicatorError
from replicator.core.run.ablate import parse_seeds, plan_ablation

from ..conftest import ROOT, SMOKE
from ..helpers import PLAN_LINE


def test_plan_lists_every_run_before_anything_runs(isolated):
    p = plan_ablation(SMOKE, ["swap", "tta"], [0, 1], ["tiny"])
    assert [(r.label, r.seed) for r in p.runs] == [(v, s) for s in (0, 1)
                                                   for v in ("base", "swap:off", "tta:off")]
    assert len({r.run_id for r in p.runs}) == 6 and all(r.run_id.endswith(f"-s{r.seed}") for r in p.runs)
    assert [r.resolved.toggles for r in p.runs[:3]] == [["tiny"], ["tiny", "swap:off"], ["tiny", "tta:off"]]
    assert all(r.resolved.seed == r.seed and not r.exists and r.estimate is None for r in p.runs)
    assert p.out_dir == isolated / "reports" / "smoke" / "ablation-swap+tta-s0-1-on-tiny"
    text = p.text()
    assert len(PLAN_LINE.findall(text)) == 6 and text.count("will compute") == 4 and "est. unknown" in text
    # swap TTA off changes prediction only: that variant reuses its base's training (core/steps.py)
    assert [r.shares_training for r in p.runs] == [False, False, True] * 2
    assert text.count("will predict (base's training)") == 2
    assert ("swap:off: removing swap augmentation in training" in text
            and "plugins.swap.train: random -> none" in text)
    assert "0 to reuse, 6 to compute, estimated unknown" in text
    assert not (isolated / "reports" / "smoke").exists()  # planning writes nothing


def test_default_recipe_as_typed_and_dry_run(isolated, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = CliRunner().invoke(app, ["ablate", "--toggle", "swap", "--dry-run"])
    assert out.exit_code == 0, out.output
    assert "ablation of recipes/smoke.yaml (smoke): 2 runs, seeds 7" in out.output  # the recipe's own seed
    assert len(PLAN_LINE.findall(out.output)) == 2
    assert not (isolated / "reports" / "smoke").exists()
    listed = CliRunner().invoke(app, ["ablate", "--list"])
    assert listed.exit_code == 0 and re.search(r"swap\s+off\s+removing swap augmentation", listed.output)
    assert re.search(r"head_reinit\s+n/a\s+needs a stage", listed.output)


@pytest.mark.parametrize("args, words", [
    (["--toggle", "head_reinit"], f"{SMOKE}: toggle 'head_reinit': cannot apply to this recipe"),
    (["--toggle", "swap", "--toggle", "swap"], "--toggle swap is given twice"),
    (["-b", "tiny", "--toggle", "tiny"], "--toggle tiny is also a base toggle"),
    (["--toggle", "swap", "--seeds", "0,x"], "--seeds '0,x': 'x' is not an integer"),
    ([], "give at least one --toggle"),
    (["--toggle", "swap", "--set", "plugins.swap.train=none"], "toggle 'swap' changes nothing"),
])
def test_ablate_errors_name_what_is_wrong(isolated, args, words):
    out = CliRunner().invoke(app, ["ablate", str(SMOKE), "--dry-run", *args])
    assert out.exit_code == 2 and words in out.output, out.output
    assert not (isolated / "reports" / "smoke").exists()


def test_parse_seeds_and_unknown_base_toggle(isolated):
    assert parse_seeds("0, 1,2") == [0, 1, 2] and parse_seeds(None) is None
    with pytest.raises(ReplicatorError, match="repeated"):
        parse_seeds("1,1")
    with pytest.raises(RecipeError, match="toggles.tinny: unknown toggle .did you mean 'tiny'"):
        plan_ablation(SMOKE, ["swap"], [0], ["tinny"])


def test_the_plan_estimates_a_prediction_only_variant_from_the_prediction_time_of_earlier_runs():
    from replicator.core.run.ablate import predict_seconds

    trained = {"stages": {"main": {"seconds": 100.0, "train_seconds": 80.0, "optimizer_steps": 5}}}
    reused = {"stages": {"main": {"seconds": 12.0, "train_seconds": 80.0, "train_reused": True,
                                  "optimizer_steps": 5}}}
    older = {"stages": {"main": {"seconds": 100.0, "optimizer_steps": 5}}}  # training time not recorded apart
    baseline = {"stages": {"prior": {"seconds": 0.5}}}
    assert predict_seconds(trained) == 20.0 and predict_seconds(reused) == 12.0
    assert predict_seconds(older) is None and predict_seconds(baseline) == 0.5
