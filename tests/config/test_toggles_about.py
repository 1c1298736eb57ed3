"""What a toggle says about itself (core/config/toggles.py): a recipe toggle's ``about`` / ``direction`` /
``changes`` / ``claimed`` keys are read for reports and left out of its patch (so they change no run id),
checked like the rest of the recipe; a shared toggle's meaning, direction and write-ups' claim come from its
label; every shipped recipe toggle is described."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from replicator.core.config.recipe import load_yaml, resolve
from replicator.core.config.toggles import ABOUT_KEYS, SHARED, describe, recipe_toggle_info, recipe_toggles
from replicator.core.errors import RecipeError

from ..conftest import RECIPES

RECIPE = """
name: about
model: {base: "baseline:length_lr"}
train: {max_rows: 64}
toggles:
  fewer: {about: "48 training rows instead of 64", direction: off, changes: [data], claimed: "+0.001 [P16]",
          train: {max_rows: 48}}
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
    assert (info["fewer"].about, info["fewer"].direction, info["fewer"].changes, info["fewer"].claimed) == (
        "48 training rows instead of 64", "off", ("data",), "+0.001 [P16]")  # YAML's bare off is off
    assert info["fewer"].to_dict()["claimed"] == "+0.001 [P16]"
    assert info["more"].direction == "on" and info["more"].changes == () and info["more"].claimed == ""
    assert info["plain"].direction is None and "does not describe it" in info["plain"].about
    # the same recipe without the description keys resolves to the same config, hence the same run id
    fewer = ('about: "48 training rows instead of 64", direction: off, changes: [data], '
             'claimed: "+0.001 [P16]",')
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
    ('{claimed: 0.003, train: {max_rows: 1}}', "toggles.x.claimed", "one line"),
    ('{claimed: ["+0.003 [P2]"], train: {max_rows: 1}}', "toggles.x.claimed", "one line"),
    ('{claimed: "", train: {max_rows: 1}}', "toggles.x.claimed", "one line"),
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
    assert unknown.claimed == "" and describe("lengths:on").claimed == ""  # the write-ups say nothing
    assert describe("tta:off").claimed == describe("tta:on").claimed == SHARED["tta"].claimed
    assert "0.941 → 0.926" in SHARED["tta"].claimed and "FULL swap" in SHARED["swap"].claimed


#: the source tags of SOLUTIONS.md (and the Kaggle discussions it names by number)
TAG = re.compile(r"\[(P\d+|R\d+[a-z]*|JP|KS|MLE|PJ|NEB)\]|\(secondary\)|discussion \d+")


def test_every_claim_is_one_line_with_its_source():
    """A shared toggle's claim, where it has one, cites SOLUTIONS.md's tags for every part; one that gives no
    number says so."""
    claims = {name: t.claimed for name, t in SHARED.items() if t.claimed}
    assert {"swap", "tta", "focal", "label_smoothing", "softcap_off", "aux_names"} <= set(claims)
    for name, claim in claims.items():
        assert "\n" not in claim and claim == claim.strip(), name
        for part in claim.split("; "):
            assert TAG.search(part) or part.startswith("no number"), f"{name}: {part!r} cites no source"
    assert claims["focal"].startswith("no number given")


def test_a_claim_changes_no_run_id(tmp_path):
    """The shipped smoke recipe's toggles with their ``claimed:`` keys and without them resolve to the same
    config, hence the same run id."""
    raw = yaml.safe_load((RECIPES / "smoke.yaml").read_text())
    claimed = [name for name, t in raw["toggles"].items() if "claimed" in t]
    authors = {"last_turn", "concatenated", "instruction", "alpacaeval", "lora_r64"}  # SOLUTIONS.md §4b
    assert set(claimed) == authors | {"last_token", "head_lp", "probe_only", "offset_features", "mtbench",
                                      "max_len_512"}
    assert all("[JP]" in raw["toggles"][t]["claimed"] for t in authors)
    for t in claimed:
        del raw["toggles"][t]["claimed"]
    (tmp_path / "bare").mkdir()
    plain = tmp_path / "bare" / "smoke.yaml"
    plain.write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
    for t in claimed:
        assert (resolve(RECIPES / "smoke.yaml", [t], check_plugins=False).config_hash
                == resolve(plain, [t], check_plugins=False).config_hash), t


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
