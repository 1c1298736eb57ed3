"""The ``folds:`` and ``ensemble:`` recipe sections (core/config/sections.py): their checks at resolve time,
toggles patching them, and ``replicate show`` listing them."""

from __future__ import annotations

import pytest
import yaml

from replicator.core.config.recipe import resolve
from replicator.core.errors import RecipeError

from ..conftest import RECIPES


def _recipe(tmp_path, **sections):
    """smoke.yaml in its single-split form (folds of a cross-fitted stage are refused) with ``sections``."""
    cfg = yaml.safe_load((RECIPES / "smoke.yaml").read_text())
    cfg["train"]["crossfit"] = None
    cfg["model"].update(offset=None, freeze_layers=0, cache_frozen=False)
    cfg.update(sections)
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.mark.parametrize("sections, key, msg", [
    ({"folds": {"k": 3, "plugin": "dta"}}, "folds.plugin", "no plugin block 'dta'"),
    ({"folds": {"k": 3, "plugin": "prompt"}}, "folds.plugin", "has no folds/fold parameters"),
    ({"folds": {"k": 3, "run": [5]}}, "folds.run", r"\[0, 3\)"),
    ({"folds": {"kk": 3}}, "folds.kk", "did you mean 'k'"),
    ({"ensemble": {"members": {}}}, "ensemble.members", "at least one member"),
    ({"ensemble": {"members": {"a": {"wieght": 2}}}}, "ensemble.members.a.wieght", "did you mean 'weight'"),
    ({"ensemble": {"members": {"a-b": {}}}}, "ensemble.members.a-b", "letters, digits and underscores"),
    ({"ensemble": {"members": {"a": {"input": "swap"}}}}, "ensemble.members.a.input", "not one of"),
    ({"ensemble": {"members": {"a": {"weight": 0}}}}, "ensemble.members.a.weight", "> 0"),
    ({"ensemble": {"members": {"a": {"gate": {"tokens_le": 5}}}}}, "ensemble.members", "every member is "
                                                                                        "gated"),
    ({"ensemble": {"members": {"a": {}, "b": {"gate": {}}}}}, "ensemble.members.b.gate.tokens_le",
     "tokens_ge"),
    ({"ensemble": {"members": {"a": {"recipe": "nope.yaml"}}}}, "ensemble.members.a.recipe", "not found"),
    ({"ensemble": {"members": {"a": {}}, "weights": "fitted"}}, "ensemble.weights", "not one of"),
])
def test_bad_sections_fail_at_resolve_time_naming_the_key(tmp_path, sections, key, msg):
    with pytest.raises(RecipeError, match=msg) as e:
        resolve(_recipe(tmp_path, **sections))
    assert e.value.key == key and e.value.file.endswith("r.yaml")


def test_sections_are_not_part_of_a_run_config_and_toggles_patch_them(tmp_path):
    plain = resolve(_recipe(tmp_path))
    path = _recipe(tmp_path, folds={"k": 5}, ensemble={"members": {"a": {}}},
                   toggles={"tiny": {"folds": {"k": 2}},
                            "small": {"ensemble": {"members": {"b": {"weight": 2}}}}})
    r = resolve(path)
    assert r.config_hash == plain.config_hash and "folds" not in r.complete and "ensemble" not in r.complete
    assert resolve(path, ["tiny"]).config["folds"] == {"k": 2}
    assert set(resolve(path, ["small"]).config["ensemble"]["members"]) == {"a", "b"}


def test_show_lists_the_sections_without_running_anything(tmp_path):
    from typer.testing import CliRunner

    from replicator.core.cli import app

    path = _recipe(tmp_path, folds={"k": 3, "average": "adapters"}, ensemble={"members": {
        "a": {"weight": 2}, "b": {"toggles": ["swap"], "input": "both", "gate": {"tokens_ge": 1500}}}})
    out = CliRunner().invoke(app, ["show", str(path)])
    assert out.exit_code == 0, out.output
    assert "# folds: k=3, runs 0, 1, 2 with plugins.data.fold set, average adapters" in out.output
    assert "#   a: " in out.output and "weight 2, input final" in out.output
    assert "toggles ['swap']" in out.output
    assert "input both, gate {'tokens_le': None, 'tokens_ge': 1500" in out.output
