"""Recipe resolution: patches, toggles, overrides, stages, and errors that name file and key."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from replicator.core.config.patch import merge_patch, parse_override
from replicator.core.config.recipe import resolve
from replicator.core.errors import RecipeError

from .conftest import RECIPES


def write(tmp_path, text, name="r.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


BASE = """
name: t
plugins:
  data: {use: kaggle_csv}
  prompt: {use: plain_turns}
  head: {use: default_head}
  loss: {use: cross_entropy}
"""


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


def test_smoke_recipe_resolves_with_toggles_and_overrides():
    # the shared toggle: swap augmentation off
    r = resolve(RECIPES / "smoke.yaml", ["swap"], ["train.lr=0.001"])
    assert r.config["plugins"]["swap"]["train"] == "none" and r.toggles == ["swap:off"]
    assert r.complete["plugins"]["swap"] == {"use": "swap_ab", "train": "none", "p": 0.5, "test_time": True}
    assert r.final.train.lr == 0.001
    assert len(r.config_hash) == 64
    assert r.config_hash != resolve(RECIPES / "smoke.yaml").config_hash


def test_misspelled_plugin_parameter_names_file_key_and_suggestion(tmp_path):
    p = write(tmp_path, BASE + "  swap: {use: swap_ab, tran: duplicate}\n")
    with pytest.raises(RecipeError) as e:
        resolve(p)
    msg = str(e.value)
    assert str(p) in msg and "plugins.swap.tran" in msg and "did you mean 'train'" in msg


@pytest.mark.parametrize("snippet, key, words", [
    ("  swap: {use: swapab}\n", "plugins.swap.use", "did you mean 'swap_ab'"),
    ("  swap: {use: swap_ab, p: high}\n", "plugins.swap.p", "expected a number"),
    ("  swap: {use: swap_ab, train: duplicat}\n", "plugins.swap.train", "did you mean 'duplicate'"),
    ("  swap: {use: swap_ab, p: 1.5}\n", "plugins.swap.p", "p must be in [0, 1]"),
    ("  loss2: {use: cross_entropy}\n", "plugins", "hook 'loss' needs exactly one plugin, found 2"),
])
def test_plugin_errors(tmp_path, snippet, key, words):
    p = write(tmp_path, BASE + snippet)
    with pytest.raises(RecipeError) as e:
        resolve(p)
    assert f"{p}: {key}:" in str(e.value) and words in str(e.value)


def test_missing_one_hook_provider(tmp_path):
    p = write(tmp_path, BASE.replace("  loss: {use: cross_entropy}\n", ""))
    with pytest.raises(RecipeError, match="hook 'loss' needs exactly one plugin, found 0"):
        resolve(p)


@pytest.mark.parametrize("snippet, key, words", [
    ("train: {lr: fast}\n", "train.lr", "expected a number"),
    ("train: {epoch: 2}\n", "train.epoch", "did you mean 'epochs'"),
    ("model: {lora: {rank: 8}}\n", "model.lora.rank", "unknown parameter"),
    ("modle: {}\n", "modle", "did you mean 'model'"),
    ("model: {dtype: fp16}\n", "model.dtype", "is not one of"),
    ("seed: abc\n", "seed", "expected an integer"),
])
def test_core_section_errors(tmp_path, snippet, key, words):
    p = write(tmp_path, BASE + snippet)
    with pytest.raises(RecipeError) as e:
        resolve(p)
    assert f"{p}: {key}:" in str(e.value) and words in str(e.value)


def test_unknown_toggle_and_bad_override(tmp_path):
    with pytest.raises(RecipeError, match="did you mean 'tiny'"):
        resolve(RECIPES / "smoke.yaml", ["tinyy"])
    with pytest.raises(RecipeError, match="train.batch_size"):
        resolve(RECIPES / "smoke.yaml", [], ["train.batch_size=many"])


def test_missing_data_file_fails_at_resolve(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    p = write(tmp_path, BASE)
    with pytest.raises(RecipeError) as e:
        resolve(p, data_dir=tmp_path / "nowhere")
    assert "plugins.data" in str(e.value) and "REPLICATOR_DATA_DIR" in str(e.value)


def test_stages_are_patches_and_from_must_be_earlier(tmp_path):
    p = write(tmp_path, BASE + """
stages:
  pre: {train: {lr: 1.0e-5}}
  fine: {from: pre, reinit_head: true}
""")
    r = resolve(p)
    assert [s.name for s in r.stages] == ["pre", "fine"]
    assert r.stages[0].train.lr == 1e-5 and r.stages[1].train.lr == 1e-4
    assert r.stages[1].from_stage == "pre" and r.stages[1].reinit_head
    bad = write(tmp_path, BASE + "stages:\n  a: {from: b}\n  b: {}\n", "bad.yaml")
    with pytest.raises(RecipeError, match="stages.a.from"):
        resolve(bad)
    bad2 = write(tmp_path, BASE + "stages:\n  a: {trian: {}}\n", "bad2.yaml")
    with pytest.raises(RecipeError, match="did you mean 'train'"):
        resolve(bad2)


def test_recipe_errors_do_not_import_torch(tmp_path):
    """The CLI fails on a misspelled parameter before any heavy import (DESIGN §10)."""
    p = write(tmp_path, BASE + "  swap: {use: swap_ab, tran: duplicate}\n")
    code = ("import sys\nfrom typer.testing import CliRunner\nfrom replicator.core.cli import app\n"
            f"r = CliRunner().invoke(app, ['show', {str(p)!r}])\n"
            "print(r.exit_code, 'torch' in sys.modules, 'transformers' in sys.modules)\nprint(r.output)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    first = out.splitlines()[0]
    assert first == "2 False False", out
    assert "plugins.swap.tran" in out and "did you mean 'train'" in out
