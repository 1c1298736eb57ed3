"""Recipes are found by path or, from any folder, by the name of a shipped recipe
(core/config/recipe_files.py)."""

from __future__ import annotations

import pytest

from replicator.core.config.recipe import resolve
from replicator.core.config.recipe_files import find_recipe, shipped_folder, shipped_names
from replicator.core.errors import RecipeError

from ..conftest import RECIPES


def test_every_shipped_recipe_is_found_by_name_from_another_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert {"1st", "2nd", "3rd", "5th", "9th", "16th", "author", "smoke", "cpu"} <= set(shipped_names())
    for name in shipped_names():
        assert find_recipe(name) == shipped_folder() / f"{name}.yaml"
        assert find_recipe(f"{name}.yaml") == find_recipe(f"recipes/{name}.yaml") == find_recipe(name)
    assert resolve("2nd", ["tiny"], check_plugins=False).name == "2nd"


def test_a_path_that_exists_wins_over_a_shipped_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "2nd.yaml").write_text((RECIPES / "smoke.yaml").read_text())
    assert find_recipe("2nd.yaml").resolve() == tmp_path / "2nd.yaml"
    assert find_recipe("2nd") == shipped_folder() / "2nd.yaml"  # a bare name is the shipped recipe


def test_unknown_names_and_folders_are_clear_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RecipeError, match=r"recipe file not found .*shipped recipes: .*2nd"):
        find_recipe("22nd")
    with pytest.raises(RecipeError, match="a folder, not a recipe file"):
        find_recipe(tmp_path)
