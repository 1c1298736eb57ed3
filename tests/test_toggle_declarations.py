"""Who declares a shared toggle: the plugin module that implements the technique (``SHARED_TOGGLES``,
built-in or third-party), or core/config/toggles.py for recipe sections; the core names no plugin."""

from __future__ import annotations

import ast
import sys
import textwrap
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
import yaml

from replicator.core.config import catalogue as manager
from replicator.core.config import toggles
from replicator.core.config.catalogue import BUILTINS
from replicator.core.config.recipe import resolve
from replicator.core.config.toggles import SHARED, collect, meaning, status
from replicator.core.errors import RecipeError, ReplicatorError

from .conftest import RECIPES, ROOT

CORE = ROOT / "core"

#: data constants of the row schema that happen to be plugin names (core/rows.py): ``COMPETITION_SOURCE``
#: (the ``source`` label of competition rows, hashed into pair keys) and ``SWAPPED_VIEW`` (a column prefix of
#: committed per-row prediction files); each plugin takes its name from them, so they stay where they are
PENDING = {"core/rows.py"}


def _is_builtins_table(node: ast.AST) -> bool:
    if isinstance(node, ast.Assign):
        targets = node.targets
    elif isinstance(node, ast.AnnAssign):
        targets = [node.target]
    else:
        return False
    return any(isinstance(t, ast.Name) and t.id == "BUILTINS" for t in targets)


def plugin_names_in(path: Path, names: set[str]) -> list[str]:
    """``line: 'name'`` of each string literal of ``path`` that is the name of a plugin, except in the
    catalogue's own table of the built-in plugins (``BUILTINS = {name: "module:Class"}``)."""
    tree = ast.parse(path.read_text())
    table = {id(n) for node in ast.walk(tree) if _is_builtins_table(node) for n in ast.walk(node)}
    return [f"{n.lineno}: {n.value!r}" for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and n.value in names and id(n) not in table]


def test_no_core_module_names_a_plugin():
    names = set(BUILTINS)
    found = {p.relative_to(ROOT).as_posix(): plugin_names_in(p, names) for p in sorted(CORE.rglob("*.py"))}
    named = [f"{f}:{hit}" for f, hits in found.items() if f not in PENDING for hit in hits]
    assert named == [], "core modules naming a plugin (declare it in the plugin's module instead)"
    stale = [f for f in sorted(PENDING) if not found.get(f)]
    assert stale == [], "PENDING entries that no longer name a plugin: remove them"
    # the toggles' module names none even in prose (its docstring, comments, messages)
    text = (CORE / "config" / "toggles.py").read_text()
    assert [n for n in sorted(names) if n in text] == []


def test_the_plugin_name_check_finds_one(tmp_path):
    """The check above can fail: a literal plugin name is found; the BUILTINS table and prose are not."""
    probe = tmp_path / "probe.py"
    probe.write_text('BUILTINS: dict = {"swap_ab": "m:C"}\nUSE = {"use": "swap_ab"}\n"""uses swap_ab"""\n')
    assert plugin_names_in(probe, {"swap_ab"}) == ["2: 'swap_ab'"]


#: toggle -> the plugin module that declares it
PLUGIN_TOGGLES = {"swap": "swap_ab", "tta": "swap_ab", "focal": "focal_loss",
                  "label_smoothing": "label_smoothing", "aux_names": "aux_model_heads",
                  "lengths": "plain_turns", "temperature": "calibration"}


def test_builtin_toggles_come_from_the_plugins_that_implement_them():
    for name in SHARED:
        module = SHARED.declared_in(name)
        if name in PLUGIN_TOGGLES:
            assert module == f"replicator.plugins.{PLUGIN_TOGGLES[name]}", name
        else:
            assert module == "replicator.core.config.toggles" and SHARED[name] in toggles.CORE, name
    assert set(PLUGIN_TOGGLES) < set(SHARED)


# ---------------------------------------------------------------- a third-party plugin package's toggle

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


def test_a_recipe_may_not_take_the_name_of_a_third_party_toggle(third_party, tmp_path):
    raw = yaml.safe_load((RECIPES / "smoke.yaml").read_text())
    raw["toggles"]["sharpen"] = {"train": {"epochs": 2}}
    p = tmp_path / "clash.yaml"
    p.write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.raises(RecipeError, match=r"toggles.sharpen: 'sharpen' is a shared toggle .* rename this"):
        resolve(p)
