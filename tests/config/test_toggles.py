"""Shared toggles (core/config/toggles.py): one name, the same flip on every recipe, direction recorded
(pinned under tests/config/test_toggles/); a toggle declared by a third-party plugin's module
(``SHARED_TOGGLES``) is picked up like the built-in ones."""

from __future__ import annotations

import sys
import textwrap
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from replicator.core.config import catalogue as manager
from replicator.core.config.recipe import resolve
from replicator.core.config.toggles import SHARED, collect, config_diff, meaning, status
from replicator.core.errors import RecipeError, ReplicatorError

from ..conftest import ALL, RECIPES, ROOT


def flipped(recipe: str, toggle: str, before: list[str] = ()) -> tuple[object, dict]:
    """The resolved recipe with ``before`` + [toggle], and {key: (old, new)} against ``before`` alone."""
    base = resolve(RECIPES / recipe, list(before))
    r = resolve(RECIPES / recipe, [*before, toggle])
    return r, {k: (a, b) for k, a, b in config_diff(base.config, r.config)}


def plugin(r, alias):
    return r.final.plugins.get(alias)


# (recipe, toggles before, the shared toggle, expected direction, the expected config changes)
CASES = [
    # swap: smoke has random swap augmentation; 16th trains without (train: none); 5th/tiny too
    ("smoke.yaml", [], "swap", "off", {"plugins.swap.train": ("random", "none")}),
    ("16th.yaml", [], "swap", "on", {"plugins.swap.train": ("none", "random")}),
    # tta: smoke has it (test_time true); 2nd has none; 5th's block has test_time false
    ("smoke.yaml", [], "tta", "off", {"plugins.swap.test_time": (True, False)}),
    ("2nd.yaml", [], "tta", "on", {"plugins.swap.test_time": (False, True)}),
    # focal: no recipe uses it: on from cross_entropy, then off again
    ("smoke.yaml", [], "focal", "on", {"plugins.loss": ({"use": "cross_entropy"}, {"use": "focal_loss"})}),
    ("smoke.yaml", ["focal"], "focal", "off",
     {"plugins.loss": ({"use": "focal_loss"}, {"use": "cross_entropy"})}),
    # label smoothing: 3rd's raja variant has it (eps 0.03)
    ("smoke.yaml", [], "label_smoothing", "on",
     {"plugins.loss": ({"use": "cross_entropy"}, {"use": "label_smoothing"})}),
    ("3rd.yaml", ["raja"], "label_smoothing", "off",
     {"plugins.loss": ({"use": "label_smoothing", "eps": 0.03}, {"use": "cross_entropy"})}),
    # truncation policies
    ("smoke.yaml", [], "truncate_start", "on", {"plugins.prompt.truncate": ("longest_first", "keep_end")}),
    ("16th.yaml", [], "truncate_start", "off", {"plugins.prompt.truncate": ("keep_end", "keep_start")}),
    ("9th.yaml", [], "truncate_start", "off", {"plugins.prompt.truncate": ("keep_end", "keep_start")}),
    # the pooled head refuses keep_start (below): smoke's last-token form takes it
    ("smoke.yaml", ["last_token"], "truncate_end", "on",
     {"plugins.prompt.truncate": ("longest_first", "keep_start")}),
    ("3rd.yaml", [], "truncate_end", "off", {"plugins.prompt.truncate": ("keep_start", "keep_end")}),
    ("smoke.yaml", ["last_token"], "longest_first", "off",
     {"plugins.prompt.truncate": ("longest_first", "keep_start")}),
    ("16th.yaml", [], "longest_first", "on", {"plugins.prompt.truncate": ("keep_end", "longest_first")}),
    # head re-initialisation: 5th throws the pretrained head away; 9th's pseudo stage keeps it
    ("5th.yaml", [], "head_reinit", "off", {"stages.finetune.reinit_head": (True, False)}),
    ("smoke_two_stage.yaml", [], "head_reinit", "off", {"stages.finetune.reinit_head": (True, False)}),
    ("9th.yaml", [], "head_reinit", "on", {"stages.pseudo.reinit_head": (None, True)}),
    # stage 2 starts from the base
    ("2nd.yaml", [], "head_reinit", "on", {"stages.stage3.reinit_head": (None, True)}),
    # aux model-name heads: 16th has them; smoke's zero-initialised last-token head (last_token) becomes
    # zero-initialised aux heads
    ("16th.yaml", [], "aux_names", "off", {"plugins.head": ({"use": "aux_model_heads", "weight": 0.1,
                                                             "naming": "arena"},
                                                            {"use": "default_head", "init": "model"})}),
    ("smoke.yaml", ["last_token"], "aux_names", "on",
     {"plugins.head": ({"use": "default_head", "init": "zeros"},
                       {"use": "aux_model_heads", "init": "zeros"})}),
    # softcapping off: 3rd and 5th have it; 2nd's Gemma-2 keeps it (smoke's Gemma-3 has none: below)
    ("3rd.yaml", [], "softcap_off", "off", {"model.attn_softcap": (False, True)}),
    ("2nd.yaml", [], "softcap_off", "on", {"model.attn_softcap": (None, False)}),
    # stated lengths: plain_turns only
    ("smoke.yaml", [], "lengths", "off", {"plugins.prompt.show_lengths": (True, False)}),
    ("5th.yaml", [], "lengths", "on", {"plugins.prompt.show_lengths": (None, True)}),
    # temperature scaling
    ("smoke.yaml", [], "temperature", "off", {"plugins.temp": ({"use": "temperature_scaling"}, None)}),
    ("16th.yaml", [], "temperature", "on", {"plugins.temp": (None, {"use": "temperature_scaling"})}),
    # 8-bit inference: 16th/5th/9th predict in 8-bit (their tiny toggles turn it off)
    ("16th.yaml", [], "int8_inference", "off", {"predict.load_in_8bit": (True, False)}),
    ("16th.yaml", ["tiny"], "int8_inference", "on", {"predict.load_in_8bit": (False, True)}),
    ("smoke.yaml", ["single_split"], "int8_inference", "on", {"predict.load_in_8bit": (None, True)}),
    # LoRA targets
    ("smoke.yaml", [], "lora_attn_only", "on",
     {"model.lora.targets": ("all-linear", ["q_proj", "k_proj", "v_proj", "o_proj"])}),
    ("smoke.yaml", ["lora_attn_only"], "lora_attn_only", "off",
     {"model.lora.targets": (["q_proj", "k_proj", "v_proj", "o_proj"], "all-linear")}),
    ("1st.yaml", [], "lora_attn_only", "on",
     {"model.lora.targets": (["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                             ["q_proj", "k_proj", "v_proj", "o_proj"])}),
]


@pytest.mark.parametrize("recipe, before, toggle, direction, changes", CASES,
                         ids=[f"{c[0]}-{'+'.join([*c[1], c[2]])}" for c in CASES])
def test_shared_toggle_flips_the_technique(recipe, before, toggle, direction, changes):
    r, diff = flipped(recipe, toggle, before)
    assert r.toggles == [*resolve(RECIPES / recipe, before).toggles, f"{toggle}:{direction}"]
    assert diff == changes


def test_every_shared_toggle_is_tested_both_ways_and_on_smoke():
    ways = {(c[2], c[3]) for c in CASES}
    assert ways == {(t, d) for t in SHARED for d in ("off", "on")}
    on_smoke = {c[2] for c in CASES if c[0] == "smoke.yaml"}
    # head_reinit cannot apply to the single-stage smoke recipe, softcap_off to its Gemma-3 (both tested below
    # as errors); int8_inference applies to its single_split form
    assert on_smoke == set(SHARED) - {"head_reinit", "softcap_off"}


def test_temperature_goes_before_the_first_postprocess_block():
    r = resolve(RECIPES / "smoke.yaml", ["temperature", "temperature"])
    assert r.toggles == ["temperature:off", "temperature:on"]
    assert list(r.final.plugins)[-2:] == ["temp", "clip"]  # calibrate, then clip
    assert r.final.plugins["clip"] == {"use": "clip_probs", "eps": 1.0e-6}
    r = resolve(RECIPES / "16th.yaml", ["temperature"])
    assert list(r.final.plugins)[-2:] == ["temp", "clip"]
    assert r.final.plugins["clip"] == {"use": "clip_probs"}


def test_swap_block_added_when_missing(tmp_path):
    raw = yaml.safe_load((RECIPES / "smoke.yaml").read_text())
    del raw["plugins"]["swap"]
    p = tmp_path / "noswap.yaml"
    p.write_text(yaml.safe_dump(raw, sort_keys=False))
    r = resolve(p, ["swap"])
    assert r.toggles == ["swap:on"] and r.final.plugins["swap"] == {"use": "swap_ab", "train": "random",
                                                                    "test_time": False}
    r = resolve(p, ["tta"])
    assert r.toggles == ["tta:on"] and r.final.plugins["swap"] == {"use": "swap_ab", "train": "none",
                                                                   "test_time": True}


@pytest.mark.parametrize("name", ALL)
def test_every_applicable_toggle_flips_back(name):
    """Twice in a row: the second application measures the opposite direction and restores the technique."""
    from replicator.core.config.toggles import status

    raw = yaml.safe_load((RECIPES / name).read_text())
    cfg = {k: v for k, v in raw.items() if k != "toggles"}
    applicable = [(t, d) for t, d, _ in status(cfg, name) if d != "n/a"]
    assert applicable or cfg["model"]["base"].startswith("baseline:")  # a baseline has nothing to toggle
    for t, d in applicable:
        other = "on" if d == "off" else "off"
        try:
            r = resolve(RECIPES / name, [t, t])
        except RecipeError as e:  # the flip back sets a policy the head cannot read (smoke)
            assert "cannot read texts truncated by 'keep_start'" in str(e), e
            continue
        assert r.toggles == [f"{t}:{d}", f"{t}:{other}"]


def test_the_pooled_head_refuses_truncation_that_cuts_response_b():
    """keep_start drops response B of a text over the budget, so the toggles that set it cannot apply to
    the smoke recipe's response_pool head (the run would stop at its first batch); its last-token form
    takes them."""
    for t in ("truncate_end", "longest_first"):
        with pytest.raises(RecipeError, match=r"the head 'response_pool' \(plugins.head\) cannot read texts "
                                               r"truncated by 'keep_start'"):
            resolve(RECIPES / "smoke.yaml", [t])
        prompt = resolve(RECIPES / "smoke.yaml", ["last_token", t]).final.plugins["prompt"]
        assert prompt["truncate"] == "keep_start"
    assert resolve(RECIPES / "smoke.yaml", ["truncate_start"]).final.plugins["prompt"]["truncate"] \
        == "keep_end"


@pytest.mark.parametrize("name", ALL)
def test_shared_toggles_on_every_recipe_pinned(name, data_regression):
    """What each shared toggle does to each shipped recipe (or why it cannot apply), pinned."""
    base = resolve(RECIPES / name)
    pinned = {}
    for t in SHARED:
        try:
            r = resolve(RECIPES / name, [t])
        except RecipeError as e:
            assert str(RECIPES / name) in str(e) and f"toggle {t!r}" in str(e)
            pinned[t] = {"error": str(e).split(": ", 2)[2]}
            continue
        (label,) = r.toggles
        pinned[t] = {"label": label, "measures": meaning(label),
                     "changes": {k: [a, b] for k, a, b in config_diff(base.config, r.config)}}
    data_regression.check(pinned)


@pytest.mark.parametrize("recipe, before, toggle, words", [
    ("16th.yaml", [], "lengths", "'turn_rounds' (plugins.prompt) has no 'show_lengths' parameter"),
    ("smoke.yaml", [], "head_reinit", "single-stage recipe"),
    ("smoke.yaml", [], "softcap_off", "embedded:gemma-3-270m has no attention logit softcapping"),
    ("3rd.yaml", [], "head_reinit", "no stage of base, pseudo has `from:`"),
    ("2nd.yaml", [], "lora_attn_only", "full fine-tuning"),
    ("2nd.yaml", [], "aux_names", "'mlp_head'"),
    ("smoke.yaml", [], "aux_names", "plugins.head is 'response_pool'"),
    ("smoke.yaml", [], "int8_inference", "each fold predicts with the model it trained"),
    ("1st.yaml", [], "focal", "plugins.loss (final stage 'student') is 'distill_kl_cos'"),
    ("5th.yaml", ["swapped_model"], "swap", "'swapped' (a model trained on the swapped order"),
    ("smoke.yaml", ["focal"], "label_smoothing", "is 'focal_loss'"),
])
def test_toggle_that_cannot_apply_names_toggle_and_file(recipe, before, toggle, words):
    with pytest.raises(RecipeError) as e:
        resolve(RECIPES / recipe, [*before, toggle])
    msg = str(e.value)
    assert msg.startswith(f"{RECIPES / recipe}: toggle {toggle!r}: cannot apply") and words in msg, msg


def test_aux_names_cannot_replace_a_probed_head(tmp_path):
    raw = yaml.safe_load((RECIPES / "smoke.yaml").read_text())
    raw["plugins"]["head"] = {"use": "default_head", "init": "lp"}
    raw["model"]["offset"] = None
    p = tmp_path / "probed.yaml"
    p.write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
    with pytest.raises(RecipeError,
                       match=r"probed.yaml: toggle 'aux_names': cannot apply.*plugins.head.init is lp"):
        resolve(p, ["aux_names"])


def test_missing_role_block_is_an_error(tmp_path):
    raw = yaml.safe_load((RECIPES / "smoke.yaml").read_text())
    del raw["plugins"]["prompt"]
    p = tmp_path / "noprompt.yaml"
    p.write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.raises(RecipeError,
                       match=r"noprompt.yaml: toggle 'lengths': .*'prompt_format' hook .* found none"):
        resolve(p, ["lengths"])


def test_a_stage_that_sets_the_key_itself_is_an_error(tmp_path):
    raw = yaml.safe_load((RECIPES / "5th.yaml").read_text())
    raw["stages"]["finetune"]["model"] = {"attn_softcap": False}
    p = tmp_path / "staged.yaml"
    p.write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.raises(RecipeError) as e:
        resolve(p, ["softcap_off"])
    assert (f"{p}: toggle 'softcap_off'" in str(e.value)
            and "did not take effect in the final stage 'finetune'" in str(e.value))


def test_recipe_toggle_may_not_take_a_shared_name(tmp_path):
    raw = yaml.safe_load((RECIPES / "smoke.yaml").read_text())
    raw["toggles"]["swap"] = {"plugins": {"swap": None}}
    p = tmp_path / "clash.yaml"
    p.write_text(yaml.safe_dump(raw, sort_keys=False))
    for toggles in ([], ["tiny"], ["swap"]):  # the recipe is invalid, whatever is asked of it
        with pytest.raises(RecipeError,
                           match=rf"{p}: toggles.swap: 'swap' is a shared toggle .* rename this one"):
            resolve(p, toggles)


def test_recipe_toggles_still_work_and_unknown_names_list_both_kinds():
    r = resolve(RECIPES / "16th.yaml", ["tiny", "r16"])
    assert r.toggles == ["tiny", "r16"] and r.final.model.lora.r == 16
    with pytest.raises(RecipeError) as e:
        resolve(RECIPES / "smoke.yaml", ["swapp"])
    msg = str(e.value)
    assert "toggles.swapp: unknown toggle (did you mean 'swap'?)" in msg
    assert "recipe toggles: tiny" in msg and "shared toggles: swap, tta," in msg


def test_direction_is_decided_after_earlier_toggles():
    # 16th's tiny toggle turns 8-bit inference off, so int8_inference then turns it on
    assert resolve(RECIPES / "16th.yaml", ["int8_inference"]).toggles == ["int8_inference:off"]
    assert resolve(RECIPES / "16th.yaml", ["tiny", "int8_inference"]).toggles == ["tiny", "int8_inference:on"]


def test_direction_is_recorded_in_the_fingerprint(synthetic_data_dir):
    from replicator.core.run.fingerprint import fingerprint

    r = resolve(RECIPES / "smoke.yaml", ["tiny", "swap"])
    fp = fingerprint(r, synthetic_data_dir)
    assert fp["toggles"] == ["tiny", "swap:off"]
    assert meaning("swap:off").startswith("removing swap augmentation")
    assert meaning("tiny") == "recipe toggle 'tiny'"


def test_show_prints_the_flipped_config():
    from replicator.core.cli import app

    out = CliRunner().invoke(app, ["show", str(RECIPES / "smoke.yaml"), "-t", "swap"])
    assert out.exit_code == 0, out.output
    swap = yaml.safe_load(out.output)["plugins"]["swap"]
    assert swap["use"] == "swap_ab" and swap["train"] == "none" and swap["test_time"] is True
    bad = CliRunner().invoke(app, ["show", str(RECIPES / "16th.yaml"), "-t", "lengths"])
    assert bad.exit_code == 2 and "toggle 'lengths'" in bad.output


def test_every_shared_toggle_is_documented():
    """The catalogue table is in recipes/README.md (the toggles are declared by the plugins that implement
    them, and by core/config/toggles.py): one row per toggle, in the order ``ablate --list`` shows them."""
    readme = (RECIPES / "README.md").read_text()
    section = readme.split("\n## Shared toggles\n", 1)[1].split("\n## ", 1)[0]
    table = [line.split("`")[1] for line in section.splitlines() if line.startswith("| `")]
    assert table == list(SHARED), "the catalogue table in recipes/README.md (## Shared toggles)"
    assert "recipes/README.md" in (ROOT / "core" / "config" / "toggles.py").read_text().split('"""')[1]
    assert SHARED["swap"].meaning("off") and all(t.meaning("on") and t.meaning("off")
                                                 for t in SHARED.values())


def test_recipes_header_points_to_shared_toggles():
    for name in ALL:
        head = "".join(line for line in (RECIPES / name).read_text().splitlines(True) if line.startswith("#"))
        assert "shared toggles" in head.lower(), name
    assert Path(RECIPES / "README.md").exists()


THIRD_PARTY = '''
"""A third-party plugin package's module: a postprocess plugin and the shared toggle of its technique."""

import dataclasses

from replicator.core.hookspecs import hookimpl
from replicator.core.lib.toggles import SharedToggle, plugins_patch


@dataclasses.dataclass(frozen=True)
class Sharpen:
    """Leaves the probabilities as they are (a stand-in)."""

    @hookimpl
    def postprocess(self, probs, rows, fit):
        return probs


def has(v):
    return bool(v.by_use("tp_sharpen"))


def off(v):
    return [plugins_patch({a: None for a in v.by_use("tp_sharpen")})]


def on(v):
    return [plugins_patch({v.free_alias("sharpen", "tp_sharpen"): {"use": "tp_sharpen"}})]


SHARED_TOGGLES = [SharedToggle("sharpen", "sharpened predictions", has, off, on,
                               "removing the sharpening", "sharpening the predictions")]
'''


MODULE = "tp_sharpen_plugin"


@pytest.fixture
def third_party(tmp_path, monkeypatch):
    """A plugin package outside the built-ins, registered in the ``replicator.plugins`` entry-point group."""
    (tmp_path / f"{MODULE}.py").write_text(textwrap.dedent(THIRD_PARTY))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop(MODULE, None)
    eps = [EntryPoint(name="tp_sharpen", value=f"{MODULE}:Sharpen", group=manager.ENTRY_POINT_GROUP)]
    monkeypatch.setattr(manager, "entry_points", lambda group: eps if group == eps[0].group else [])
    SHARED.reload()
    yield eps
    SHARED.reload()
    sys.modules.pop(MODULE, None)


def test_a_toggle_declared_by_a_third_party_plugin_is_picked_up(third_party):
    assert list(SHARED)[-1] == "sharpen"  # no rank: after the built-in ones
    assert SHARED.declared_in("sharpen") == "tp_sharpen_plugin"
    r = resolve(RECIPES / "smoke.yaml", ["sharpen"])
    assert r.toggles == ["sharpen:on"] and r.final.plugins["sharpen"] == {"use": "tp_sharpen"}
    assert resolve(RECIPES / "smoke.yaml", ["sharpen", "sharpen"]).toggles == ["sharpen:on", "sharpen:off"]
    assert meaning("sharpen:on") == "sharpening the predictions"
    raw = yaml.safe_load((RECIPES / "smoke.yaml").read_text())
    cfg = {k: v for k, v in raw.items() if k != "toggles"}
    assert status(cfg, "smoke.yaml")[-1] == ("sharpen", "on", "sharpening the predictions")


def test_a_toggle_name_declared_twice_is_an_error(third_party, tmp_path):
    clash = textwrap.dedent(THIRD_PARTY).replace('"sharpen",', '"swap",')
    (tmp_path / f"{MODULE}.py").write_text(clash)
    with pytest.raises(ReplicatorError, match=r"shared toggle 'swap' is declared twice: in "
                                              r"replicator\.plugins\.swap_ab\.SHARED_TOGGLES and "
                                              r"tp_sharpen_plugin\.SHARED_TOGGLES"):
        collect(manager.catalogue())


def test_a_claim_that_is_not_text_is_an_error_naming_the_module(third_party, tmp_path):
    """A third-party toggle's ``claimed`` is printed in reports: text, or an error naming its module."""
    bad = textwrap.dedent(THIRD_PARTY).replace('"sharpening the predictions")',
                                               '"sharpening the predictions", claimed=0.003)')
    (tmp_path / f"{MODULE}.py").write_text(bad)
    with pytest.raises(ReplicatorError, match=r"tp_sharpen_plugin\.SHARED_TOGGLES: shared toggle 'sharpen': "
                                              r"claimed must be text, got 0\.003"):
        collect(manager.catalogue())


def test_a_recipe_may_not_take_the_name_of_a_third_party_toggle(third_party, tmp_path):
    raw = yaml.safe_load((RECIPES / "smoke.yaml").read_text())
    raw["toggles"]["sharpen"] = {"train": {"epochs": 2}}
    p = tmp_path / "clash.yaml"
    p.write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.raises(RecipeError, match=r"toggles.sharpen: 'sharpen' is a shared toggle .* rename this"):
        resolve(p)
