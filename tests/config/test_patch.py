"""JSON merge patches and ``key.path=value`` overrides (core/config/patch.py)."""

from __future__ import annotations

import pytest

from replicator.core.config.patch import merge_patch, parse_override
from replicator.core.config.recipe import resolve
from replicator.core.errors import RecipeError

from ..conftest import RECIPES


def test_merge_patch_rfc7396_and_use_replacement():
    base = {"a": {"b": 1, "c": 2}, "p": {"use": "x", "k": 1}}
    assert merge_patch(base, {"a": {"b": None}}) == {"a": {"c": 2}, "p": {"use": "x", "k": 1}}
    assert merge_patch(base, {"a": 5})["a"] == 5
    assert merge_patch(base, {"p": {"use": "y"}})["p"] == {"use": "y"}  # new plugin: block replaced
    assert merge_patch(base, {"p": {"use": "x", "k": 2}})["p"] == {"use": "x", "k": 2}
    assert base == {"a": {"b": 1, "c": 2}, "p": {"use": "x", "k": 1}}  # not mutated


def test_parse_override_yaml_values():
    assert parse_override("train.lr=0.5") == {"train": {"lr": 0.5}}
    assert resolve(RECIPES / "smoke.yaml", [], ["train.lr=1e-4"]).final.train.lr == 1e-4  # YAML 1.1 string
    assert parse_override("plugins.swap=null") == {"plugins": {"swap": None}}
    assert parse_override("model.lora.targets=[q_proj, v_proj]") == {
        "model": {"lora": {"targets": ["q_proj", "v_proj"]}}}
    with pytest.raises(RecipeError, match="key.path=value"):
        parse_override("train.lr")
