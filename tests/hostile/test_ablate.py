"""``replicate ablate`` on a recipe with ``folds:`` or ``ensemble:`` (issue 24): ``run`` makes member runs
and their combination of such a recipe, and ablate compares single runs, so it refuses (naming the
section and what to ablate instead) rather than plan plain runs with the section silently dropped."""

from __future__ import annotations

import yaml

from ..conftest import RECIPES, SMOKE
from ..helpers import _recipe
from .helpers import assert_refused, invoke, run_outputs


def test_ablate_refuses_a_recipe_with_folds_as_run_would_make_folds_of_it(tmp_path, isolated):
    path = _recipe(tmp_path, "fo", folds={"k": 2})
    for extra in ([], ["--dry-run"], ["--seeds", "0,1"]):
        assert_refused(invoke(["ablate", path, "-b", "tiny", "-t", "tta", *extra]),
                       f"{path}: folds: section", "--set folds=null", "replicate run")
    assert run_outputs(isolated) == []
    # one fold run, as the message says: the data block's own fold
    out = invoke(["ablate", path, "-b", "tiny", "-t", "tta", "--set", "folds=null", "--dry-run"])
    assert out.exit_code == 0, out.output
    assert "(fo): 2 runs" in out.output and "tta:off" in out.output


def test_ablate_refuses_a_recipe_with_an_ensemble(tmp_path, isolated):
    path = _recipe(tmp_path, "en", ensemble={"members": {"a": {}, "b": {"toggles": ["swap"]}}})
    assert_refused(invoke(["ablate", path, "-b", "tiny", "-t", "tta", "--dry-run"]),
                   f"{path}: ensemble: section", "ablate a member", "--set ensemble=null")
    assert run_outputs(isolated) == []


def test_ablate_refuses_a_toggle_that_adds_folds(tmp_path, isolated):
    cfg = yaml.safe_load(SMOKE.read_text(encoding="utf-8"))
    # folds of smoke's single-split form (a cross-fitted stage refuses folds at resolve time)
    cfg["toggles"]["kfold"] = {"folds": {"k": 2}, "train": {"crossfit": None},
                               "model": {"offset": None, "cache_frozen": False, "freeze_layers": 0}}
    path = tmp_path / "kf.yaml"
    path.write_text(yaml.safe_dump({**cfg, "name": "kf"}, sort_keys=False), encoding="utf-8")
    assert_refused(invoke(["ablate", path, "-b", "tiny", "-t", "tta", "-t", "kfold", "--dry-run"]),
                   f"{path}: folds: section (with toggle 'kfold')")


def test_the_first_place_recipe_as_the_issue_typed_it(rich_data_dir, monkeypatch, tmp_path):
    """``replicate ablate recipes/1st.yaml -b tiny -t tta --dry-run`` planned two plain runs (1st's five
    folds, two with -t tiny, dropped)."""
    for k, v in (("REPLICATOR_REPORTS", tmp_path / "reports"), ("HF_HUB_OFFLINE", "1"),
                 ("REPLICATOR_ARTIFACTS", tmp_path / "artifacts"), ("REPLICATOR_DATA_DIR", rich_data_dir)):
        monkeypatch.setenv(k, str(v))
    recipe = RECIPES / "1st.yaml"
    out = invoke(["ablate", recipe, "-b", "tiny", "-t", "tta", "--dry-run"])
    assert_refused(out, f"{recipe}: folds: section")
    assert run_outputs(tmp_path) == []
