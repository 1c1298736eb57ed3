"""Planning ``folds:`` and ``ensemble:`` (core/run/combination.py): members resolved, checked before anything
runs."""

from __future__ import annotations

import pytest

from replicator.core.data.files import data_dir
from replicator.core.errors import ReplicatorError
from replicator.core.run.combination import plan_combination

from ..conftest import RECIPES
from ..helpers import _recipe


def test_members_with_other_seeds_or_unknown_toggles_fail_before_anything_runs(isolated, tmp_path):
    path = _recipe(tmp_path, "bad", ensemble={"members": {"a": {}, "b": {"overrides": ["seed=8"]}}})
    with pytest.raises(ReplicatorError, match=r"members must share the seed .*'a': 7, 'b': 8"):
        plan_combination(path, ["tiny"], data_dir=data_dir())
    path = _recipe(tmp_path, "bad2", ensemble={"members": {"a": {}, "b": {"toggles": ["nope"]}}})
    with pytest.raises(ReplicatorError, match=r"ensemble member b .*nope"):
        plan_combination(path, ["tiny"], data_dir=data_dir())
    assert not (isolated / "reports").exists() or not any((isolated / "reports").rglob("metrics.json"))


@pytest.mark.parametrize("name", ["1st", "2nd", "3rd", "5th", "9th", "16th", "author"])
def test_every_solution_recipe_plans_its_members_with_tiny(name, rich_data_dir, monkeypatch, tmp_path):
    """Each solution's folds:/ensemble: resolves, member by member, with -t tiny (nothing runs)."""
    monkeypatch.setenv("REPLICATOR_REPORTS", str(tmp_path / "reports"))
    monkeypatch.setenv("REPLICATOR_ARTIFACTS", str(tmp_path / "artifacts"))
    p = plan_combination(RECIPES / f"{name}.yaml", ["tiny"], data_dir=rich_data_dir)
    assert p is not None
    members = p.members()
    assert len({m.run_id for m in members}) == len(members)  # tiny keeps the members distinct
    assert all(m.resolved.final.model.base.startswith("tiny:") for m in members)
    expected = {"1st": ["fold0", "fold1"], "2nd": ["gemma", "armorm"], "3rd": ["mark", "raja"],
                "5th": ["original", "swapped"], "9th": ["gemma", "swapped", "llama"],
                "16th": ["gemma", "second"], "author": ["gemma", "llama"]}
    assert [m.label for m in members] == expected[name]


def test_a_command_line_toggle_leaves_a_members_own_toggle_as_it_is(rich_data_dir, monkeypatch, tmp_path):
    """`-t tta` on 2nd: the Gemma member gets swap TTA, the ArmoRM member keeps the swapped view its own
    `tta` gives it (shared toggles flip: applied again, it would be turned off)."""
    monkeypatch.setenv("REPLICATOR_REPORTS", str(tmp_path / "reports"))
    monkeypatch.setenv("REPLICATOR_ARTIFACTS", str(tmp_path / "artifacts"))
    base = {m.label: m for m in plan_combination(RECIPES / "2nd.yaml", ["tiny"],
                                                 data_dir=rich_data_dir).members()}
    tta = {m.label: m for m in plan_combination(RECIPES / "2nd.yaml", ["tiny", "tta"],
                                                data_dir=rich_data_dir).members()}
    test_time = {k: (base[k].resolved.final.plugins["swap"]["test_time"],
                     tta[k].resolved.final.plugins["swap"]["test_time"]) for k in base}
    assert test_time == {"gemma": (False, True), "armorm": (True, True)}
    assert tta["armorm"].run_id == base["armorm"].run_id and tta["gemma"].run_id != base["gemma"].run_id
