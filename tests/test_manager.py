"""The plugin manager: hooks are called through pluggy, checked at resolve time, traced on demand.

Misspelled hooks and hookimpls whose arguments the hookspec lacks are resolve-time errors naming
the block, the plugin and the hook; pluggy's call order is the recipe order for ``all`` and
``chain`` hooks; ``one`` hooks are ``firstresult``; ``REPLICATOR_TRACE`` logs every hook call of a
run; ``replicate plugins`` says which package provides each plugin; plugins never import or
inherit from each other.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import re
from importlib.metadata import version
from pathlib import Path

import pytest

from replicator.core import hookspecs
from replicator.core.config import catalogue as manager
from replicator.core.config.catalogue import BUILTINS, build_plugins, catalogue, enable_trace
from replicator.core.errors import RecipeError, ReplicatorError
from replicator.core.hookspecs import hookimpl
from replicator.core.params import param

from .conftest import RECIPES, ROOT

BASE = {"data": {"use": "kaggle_csv"}, "prompt": {"use": "plain_turns"}, "head": {"use": "default_head"},
        "loss": {"use": "cross_entropy"}}


@dataclasses.dataclass(frozen=True)
class Tag:
    """Test plugin: appends its name in every ``all`` and ``chain`` hook it implements."""

    name: str = param("x", "what to append")
    seen: list[str] = param([], "a list field: the dataclass is unhashable, as prompt formats are")

    @hookimpl
    def tta(self):
        return [self.name]

    @hookimpl
    def augment(self, rows, epoch, seed):
        return list(rows) + [self.name]

    @hookimpl
    def postprocess(self, probs, rows, fit):
        return probs + [self.name]


@dataclasses.dataclass(frozen=True)
class TypoRules:
    """Test plugin: a misspelled hook name."""

    @hookimpl
    def postproces(self, probs, rows, fit):
        return probs


@dataclasses.dataclass(frozen=True)
class ExtraArgument:
    """Test plugin: a hookimpl taking an argument the hookspec does not have."""

    @hookimpl
    def postprocess(self, probs, rows, fit, strength):
        return probs


@dataclasses.dataclass(frozen=True)
class ReturnsNone:
    """Test plugin: a chain hook that forgets to return."""

    @hookimpl
    def augment(self, rows, epoch, seed):
        rows.append("edited in place")


@dataclasses.dataclass(frozen=True)
class NoFiles:
    """Test plugin: a data source that does not say which files it reads."""

    @hookimpl
    def data_sources(self, split, ctx):
        return []


@dataclasses.dataclass(frozen=True)
class First:
    """Test plugin: asks to be called first."""

    @hookimpl(tryfirst=True)
    def tta(self):
        return []


@pytest.fixture()
def cat():
    out = catalogue()
    for name, cls in (("tag", Tag), ("typo_rules", TypoRules), ("extra_argument", ExtraArgument),
                      ("returns_none", ReturnsNone), ("no_files", NoFiles), ("first", First)):
        out[name] = cls
    return out


# ---------------------------------------------------------------- resolve-time checks


def test_misspelled_hook_names_block_plugin_and_hook(cat):
    with pytest.raises(RecipeError) as e:
        build_plugins({**BASE, "rules": {"use": "typo_rules"}}, "r.yaml", cat)
    assert e.value.file == "r.yaml" and e.value.key == "plugins.rules"
    msg = str(e.value)
    assert "'typo_rules'" in msg and "TypoRules" in msg and "unknown hook(s) 'postproces'" in msg
    assert "did you mean 'postprocess'" in msg


def test_hookimpl_argument_missing_from_the_hookspec_names_block_plugin_and_hook(cat):
    with pytest.raises(RecipeError) as e:
        build_plugins({**BASE, "rules": {"use": "extra_argument"}}, "r.yaml", cat)
    assert e.value.key == "plugins.rules"
    msg = str(e.value)
    assert "'extra_argument'" in msg and "ExtraArgument" in msg
    assert "hook 'postprocess' takes argument(s) 'strength'" in msg and "postprocess(probs, rows, fit)" in msg


def test_one_hook_needs_exactly_one_provider_and_data_sources_need_data_files(cat):
    with pytest.raises(RecipeError, match="hook 'loss' needs exactly one plugin, found 0"):
        build_plugins({k: v for k, v in BASE.items() if k != "loss"}, "r.yaml", cat)
    with pytest.raises(RecipeError, match=r"hook 'loss' needs exactly one plugin, found 2: "
                                          r"loss \(cross_entropy\), loss2 \(focal_loss\)"):
        build_plugins({**BASE, "loss2": {"use": "focal_loss"}}, "r.yaml", cat)
    with pytest.raises(RecipeError, match="implements data_sources but not data_files") as e:
        build_plugins({**BASE, "extra": {"use": "no_files"}}, "r.yaml", cat)
    assert e.value.key == "plugins.extra"
    with pytest.raises(RecipeError, match=r"tryfirst=True\) is not supported") as e:
        build_plugins({**BASE, "first": {"use": "first"}}, "r.yaml", cat)
    assert e.value.key == "plugins.first"


def test_equal_blocks_register(cat):
    """Equal frozen dataclasses (pluggy compares plugins with ==), unhashable ones too, register and run."""
    blocks = {**BASE, "extra": {"use": "kaggle_csv"}, "a": {"use": "tag"}, "b": {"use": "tag"}}
    for use in ("arena_33k", "ultrafeedback_pairs", "hh_rlhf", "alpacaeval_pairs"):
        blocks[f"{use}_1"] = blocks[f"{use}_2"] = {"use": use}
    plugins = build_plugins(blocks, "r.yaml", cat)
    assert dict(plugins.order)["a"] == dict(plugins.order)["b"]
    assert plugins.chain("augment", "rows", [], epoch=0, seed=0) == ["x", "x"]


# ---------------------------------------------------------------- calling through pluggy


def test_call_order_is_the_recipe_order_for_all_and_chain_hooks(cat):
    blocks = {**BASE, "zeta": {"use": "tag", "name": "z"}, "alpha": {"use": "tag", "name": "a"},
              "mid": {"use": "tag", "name": "m"}}
    plugins = build_plugins(blocks, "r.yaml", cat)
    calls = []
    plugins.pm.add_hookcall_monitoring(
        lambda hook, impls, kwargs: calls.append((hook, [i.plugin_name for i in reversed(impls)])),
        lambda outcome, hook, impls, kwargs: None)
    assert [a for a, _ in plugins.providers("tta")] == ["zeta", "alpha", "mid"]
    assert plugins.all("tta") == [["z"], ["a"], ["m"]]
    assert plugins.chain("augment", "rows", ["start"], epoch=0, seed=0) == ["start", "z", "a", "m"]
    assert plugins.chain("postprocess", "probs", [], rows=[], fit=None) == ["z", "a", "m"]
    # every call went through pluggy: one call of all three for `all`, one per plugin for `chain`
    assert calls == [("tta", ["zeta", "alpha", "mid"]),
                     ("augment", ["zeta"]), ("augment", ["alpha"]), ("augment", ["mid"]),
                     ("postprocess", ["zeta"]), ("postprocess", ["alpha"]), ("postprocess", ["mid"])]


def test_chain_hook_returning_none_names_the_plugin(cat):
    plugins = build_plugins({**BASE, "bad": {"use": "returns_none"}}, "r.yaml", cat)
    with pytest.raises(ReplicatorError,
                       match="plugin 'bad' \\(returns_none\\): hook 'augment' returned None"):
        plugins.chain("augment", "rows", [], epoch=0, seed=0)


def test_one_hooks_are_firstresult():
    for hook, kind in hookspecs.HOOK_KINDS.items():
        spec = getattr(hookspecs, hook).replicator_spec
        assert spec["firstresult"] is (kind == "one"), hook
    plugins = build_plugins(BASE, "r.yaml")
    assert callable(plugins.one("loss"))  # the provider's result itself, not a list of results
    # default_head keeps the model's
    assert plugins.one("head", hidden_size=8, num_labels=3, model=None) is None
    with pytest.raises(ValueError, match="'tta' is a 'all' hook, not 'one'"):
        plugins.one("tta")


def test_hookspecs_are_annotated_and_match_hook_kinds():
    import inspect

    specs = [n for n, f in vars(hookspecs).items() if hasattr(f, "replicator_spec")]
    assert specs == list(hookspecs.HOOK_KINDS)
    for name in specs:
        sig = inspect.signature(getattr(hookspecs, name))
        assert sig.return_annotation is not inspect.Signature.empty, name
        assert all(p.annotation is not inspect.Parameter.empty for p in sig.parameters.values()), name


def test_check_data_names_each_block_with_missing_files(tmp_path, cat, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no hub fallback for the competition file
    plugins = build_plugins({**BASE, "extra": {"use": "hh_rlhf"}, "more": {"use": "tag"}}, "r.yaml", cat)
    problems = plugins.check_data(tmp_path)
    assert [a for a, _ in problems] == ["data", "extra"]
    assert ("competition train file not found" in problems[0][1][0]
            and "HH-RLHF file not found" in problems[1][1][0])
    assert plugins.data_files(tmp_path) == [tmp_path / "hh-rlhf" / "harmless-base-test.jsonl.gz"]


# ---------------------------------------------------------------- trace


TRACE = re.compile(r"hook=(\w+) plugin=([\w,]+) ms=(\d+\.\d+) (size|raised)=(\S+)")


def test_trace_logs_the_hook_calls_of_a_tiny_run(isolated, monkeypatch, caplog):
    import logging

    from replicator.core.config.recipe import resolve
    from replicator.core.data.files import data_dir
    from replicator.core.run.pipeline import run_recipe

    monkeypatch.setenv("REPLICATOR_TRACE", "1")
    caplog.set_level(logging.INFO, logger="replicator.trace")
    r = resolve(RECIPES / "smoke.yaml", ["tiny"], ["train.max_rows=16", "predict.max_rows=8",
                                                    "train.max_length=64", "predict.max_length=64"],
                data_dir=data_dir())
    run_recipe(r, data_dir(), progress=False)
    lines = [TRACE.fullmatch(rec.getMessage()) for rec in caplog.records if rec.name == "replicator.trace"]
    assert lines and all(lines), [rec.getMessage() for rec in caplog.records
                                  if rec.name == "replicator.trace"][:5]
    by_hook: dict[str, list] = {}
    for m in lines:
        by_hook.setdefault(m[1], []).append(m)
    # data_check at resolve, data_files for the data hash, ...
    assert set(by_hook) == set(hookspecs.HOOK_KINDS)
    assert all(m[4] == "size" for m in lines)
    assert {m[2] for m in by_hook["prompt_format"]} == {"prompt"}
    assert {m[2] for m in by_hook["augment"]} == {"swap"} and {m[2] for m in by_hook["loss"]} == {"loss"}
    post = [m[2] for m in by_hook["postprocess"]]
    assert post[:2] == ["temp", "clip"]  # the chain, one plugin per call, in recipe order
    train = [m for m in by_hook["data_sources"] if m[2] == "data"]
    assert train and all(int(n) > 0 for m in train for n in m[5].split(",") if m[5] != "-")


def test_enable_trace_is_idempotent_and_undone(caplog):
    import logging

    plugins = build_plugins(BASE, "r.yaml", trace=False)
    caplog.set_level(logging.INFO, logger="replicator.trace")
    undo = enable_trace(plugins)
    assert enable_trace(plugins) is undo
    plugins.one("loss")
    undo()
    plugins.one("loss")
    msgs = [r.getMessage() for r in caplog.records if r.name == "replicator.trace"]
    assert (len(msgs) == 1 and msgs[0].startswith("hook=loss plugin=loss ms=")
            and msgs[0].endswith("size=function"))


# ---------------------------------------------------------------- catalogue


def test_cli_plugins_json_includes_distribution_and_version(monkeypatch):
    from importlib.metadata import EntryPoint
    from types import SimpleNamespace

    from typer.testing import CliRunner

    from replicator.core.cli import app

    ep = EntryPoint(name="my_clip", value="replicator.plugins.clip_probs:ClipProbs",
                    group=manager.ENTRY_POINT_GROUP)
    # what importlib.metadata sets for installed ones
    ep = ep._for(SimpleNamespace(name="clip-extras", version="2.1.0"))
    monkeypatch.setattr(manager, "entry_points",
                        lambda group: [ep] if group == manager.ENTRY_POINT_GROUP else [])
    entries = {e["name"]: e for e in json.loads(CliRunner().invoke(app, ["plugins", "--json"]).output)}
    assert set(entries) == set(BUILTINS) | {"my_clip"}
    for name in BUILTINS:
        assert (entries[name]["distribution"], entries[name]["version"]) == ("arena-replicator",
                                                                              version("arena-replicator"))
    assert (entries["my_clip"]["distribution"], entries["my_clip"]["version"]) == ("clip-extras", "2.1.0")
    text = CliRunner().invoke(app, ["plugins"]).output
    assert re.search(r"^my_clip  \[postprocess\]  clip-extras 2\.1\.0$", text, re.M)
    assert re.search(rf"^kaggle_csv  \[data_sources, data_files, data_check\]  arena-replicator "
                     rf"{re.escape(version('arena-replicator'))}$", text, re.M)


def test_run_plugins_know_their_distribution():
    plugins = build_plugins(BASE, "r.yaml")
    assert plugins.distributions()["prompt"] == {"use": "plain_turns", "distribution": "arena-replicator",
                                                 "version": version("arena-replicator")}


# ---------------------------------------------------------------- no plugin imports or inherits another


def _imports(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            out.append("." * node.level + (node.module or ""))
        elif isinstance(node, ast.Import):
            out += [a.name for a in node.names]
    return out


def test_no_plugin_imports_another_plugin_and_the_library_imports_no_plugin():
    files = sorted((ROOT / "plugins").glob("*.py")) + sorted((ROOT / "core" / "lib").glob("*.py"))
    assert len(files) > 25
    for f in files:
        bad = [m for m in _imports(f) if m.startswith((".", "replicator.plugins"))]
        assert not bad, f"{f.relative_to(ROOT)} imports {bad}"


def test_no_plugin_class_inherits_from_anything_but_object():
    for name, cls in catalogue().items():
        assert cls.__bases__ == (object,), f"{name}: {cls.__qualname__} inherits from {cls.__bases__}"
    for f in sorted((ROOT / "plugins").glob("*.py")):  # module-level classes: plugins and their value types
        for node in ast.parse(f.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ClassDef):
                assert not node.bases, f"{f.name}: class {node.name} has a base class"
