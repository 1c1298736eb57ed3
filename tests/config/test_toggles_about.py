"""What a toggle says about itself (core/config/toggles.py): a recipe toggle's ``about`` / ``direction`` /
``changes`` keys are read for reports and left out of its patch (so they change no run id), checked like
the rest of the recipe; a shared toggle's meaning and direction come from its label; every shipped recipe
toggle is described."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from replicator.core.config.recipe import load_yaml, resolve
from replicator.core.config.toggles import ABOUT_KEYS, describe, recipe_toggle_info, recipe_toggles
from replicator.core.errors import RecipeError

from ..conftest import RECIPES

RECIPE = """
name: about
model: {base: "baseline:length_lr"}
train: {max_rows: 64}
toggles:
  fewer: {about: "48 training rows instead of 64", direction: off, changes: [data], train: {max_rows: 48}}
  more: {about: "96 training rows", direction: "on", train: {max_rows: 96}}
  plain: {train: {max_rows: 32}}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "about.yaml"
    path.write_text(text)
    return path


def test_description_keys_are_read_and_left_out_of_the_patch(tmp_path):
    path = _write(tmp_path, RECIPE)
    raw = load_yaml(path)
    patches = recipe_toggles(raw, str(path))
    assert patches["fewer"] == {"train": {"max_rows": 48}} and not set(ABOUT_KEYS) & set(patches["more"])
    info = recipe_toggle_info(raw, str(path))
    assert (info["fewer"].about, info["fewer"].direction, info["fewer"].changes) == (
        "48 training rows instead of 64", "off", ("data",))  # YAML's bare off (false) is taken as off
    assert info["more"].direction == "on" and info["more"].changes == ()
    assert info["plain"].direction is None and "does not describe it" in info["plain"].about
    # the same recipe without the description keys resolves to the same config, hence the same run id
    fewer = 'about: "48 training rows instead of 64", direction: off, changes: [data], '
    plain_text = RECIPE.replace(fewer, "").replace('about: "96 training rows", direction: "on", ', "")
    (tmp_path / "plain").mkdir()
    plain_path = _write(tmp_path / "plain", plain_text)
    assert "about:" not in plain_path.read_text()
    for t in ("fewer", "more", "plain"):
        assert (resolve(path, [t], check_plugins=False).config_hash
                == resolve(plain_path, [t], check_plugins=False).config_hash)
    assert resolve(path, ["fewer"], check_plugins=False).config["train"]["max_rows"] == 48


@pytest.mark.parametrize(("block", "key", "what"), [
    ('{direction: sideways, train: {max_rows: 1}}', "toggles.x.direction", "expected on"),
    ('{changes: [weights], train: {max_rows: 1}}', "toggles.x.changes", "expected a list of data, split"),
    ('{about: ["a"], train: {max_rows: 1}}', "toggles.x.about", "one line"),
    ('{about: "two\\nlines", train: {max_rows: 1}}', "toggles.x.about", "one line"),
])
def test_malformed_descriptions_are_recipe_errors(tmp_path, block, key, what):
    path = _write(tmp_path, f'model: {{base: "baseline:length_lr"}}\ntoggles:\n  x: {block}\n')
    with pytest.raises(RecipeError, match=what) as e:
        resolve(path, check_plugins=False)
    assert key in str(e.value) and str(path) in str(e.value)


def test_shared_labels_describe_themselves():
    off, on = describe("swap:off"), describe("focal:on")
    assert off.direction == "off" and off.about.startswith("removing swap augmentation")
    assert off.kind == "shared"
    assert on.direction == "on" and on.about == "focal loss instead of cross-entropy"
    unknown = describe("nothing_known")
    assert unknown.direction is None and unknown.kind == "recipe" and "not found" in unknown.about


@pytest.mark.parametrize("name", sorted(p.name for p in RECIPES.glob("*.yaml")))
def test_every_shipped_recipe_toggle_is_described(name):
    path = RECIPES / name
    raw = yaml.safe_load(path.read_text())
    info = recipe_toggle_info(raw, str(path))
    for toggle, about in info.items():
        assert "does not describe it" not in about.about, f"{name}: toggle {toggle} has no about:"
        if toggle.endswith("_off") or toggle.startswith("no_"):
            assert about.direction == "off", f"{name}: {toggle} removes a technique"
        if toggle in ("tiny", "smoke"):
            assert about.direction is None  # a scale, not a technique
    if name == "cpu.yaml":
        assert all(info[t].changes == ("data",) and info[t].direction == "on"
                   for t in ("mt_bench", "alpacaeval", "hh_rlhf"))
