"""Settings that fail when the recipe is resolved, not after a run began (issue 24): a ``model.base`` that is
neither a hub id, an existing local folder, nor a known ``embedded:``/``tiny:`` name, and a
``REPLICATOR_TOKEN_WORKERS`` that is not a whole number >= 1. Before, both failed when the model loaded or
the first rows were tokenised, after ``failed.json`` was written. Each case: exit 2, one ``error:`` line
naming the recipe and key (or the variable), no model loaded, nothing written anywhere."""

from __future__ import annotations

import pytest

from .conftest import HOSTILE_RECIPE
from .helpers import assert_refused, invoke, run_outputs, tree

BASES = {
    "not a hub id": ("not a hub id", "is neither an existing local folder nor a hub id"),
    "two dashes": ("acme/my--model", "is neither an existing local folder nor a hub id"),
    "three parts": ("a/b/c", "is neither an existing local folder nor a hub id"),
    "missing absolute path": ("/nonexistent/model", "local folder '/nonexistent/model' does not exist"),
    "missing relative path": ("./missing-model", "local folder './missing-model' does not exist"),
    "missing home path": ("~/missing-model-24", "local folder '~/missing-model-24' does not exist"),
    "unknown tiny architecture": ("tiny:nope", "unknown tiny architecture 'nope'"),
    "unknown embedded model": ("embedded:nope", "unknown embedded model 'nope'"),
    "a file": ("FILE", "is a file; a local model is a folder"),
}


@pytest.fixture()
def recipe(tmp_path):
    path = tmp_path / "hostile.yaml"
    path.write_text(HOSTILE_RECIPE, encoding="utf-8")
    return path


@pytest.mark.parametrize("case", list(BASES))
def test_a_bad_model_base_fails_at_resolve_time_and_writes_nothing(case, recipe, tmp_path, isolated,
                                                                    no_model):
    base, words = BASES[case]
    if base == "FILE":
        base = str(recipe)
    before = tree(tmp_path)
    for command in ("show", "plan", "run", "ablate"):
        args = [command, recipe, f"model.base={base}"] if command != "ablate" else \
            [command, recipe, "-t", "tta", "--set", f"model.base={base}"]
        assert_refused(invoke(args), f"{recipe}: model.base: ", words)
    assert run_outputs(tmp_path) == [] and tree(tmp_path) == before


def test_a_bad_base_of_one_stage_is_named_with_its_stage(tmp_path, isolated, no_model):
    recipe = tmp_path / "two.yaml"
    stages = "stages:\n  first: {}\n  second: {from: first, model: {base: 'x y'}}\n"
    recipe.write_text(HOSTILE_RECIPE + stages, encoding="utf-8")
    before = tree(tmp_path)
    assert_refused(invoke(["run", recipe]), f"{recipe}: stages.second.model.base: 'x y' is neither")
    assert tree(tmp_path) == before


@pytest.mark.parametrize("base", ["google/gemma-2-9b-it", "RLHFlow/ArmoRM-Llama3-8B-v0.1", "gpt2", "FOLDER",
                                  "embedded:gemma-3-270m", "tiny:gemma2"])
def test_good_bases_resolve_without_a_download(base, recipe, tmp_path, isolated, offline):
    if base == "FOLDER":
        base = str(tmp_path)
    out = invoke(["show", recipe, f"model.base={base}"])
    assert out.exit_code == 0, out.output


@pytest.mark.parametrize("value", ["abc", "0", "-1", "1.5"])
def test_a_bad_token_workers_setting_fails_before_the_run_writes(value, recipe, tmp_path, isolated,
                                                                 monkeypatch, no_model):
    monkeypatch.setenv("REPLICATOR_TOKEN_WORKERS", value)
    before = tree(tmp_path)
    for command in (["run", recipe], ["ablate", recipe, "-t", "tta"]):
        assert_refused(invoke(command), f"REPLICATOR_TOKEN_WORKERS={value!r}: expected a whole number >= 1")
    assert run_outputs(tmp_path) == [] and tree(tmp_path) == before
