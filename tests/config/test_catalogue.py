"""The plugin catalogue and manager (core/config/catalogue.py): hooks are called through pluggy, checked at
resolve time, traced on demand.

Misspelled hooks and hookimpls whose arguments the hookspec lacks are resolve-time errors naming
the block, the plugin and the hook; pluggy's call order is the recipe order for ``all`` and
``chain`` hooks; ``one`` hooks are ``firstresult``; ``REPLICATOR_TRACE`` logs every hook call;
every built-in plugin and parameter is documented; third-party plugins join through entry points."""

from __future__ import annotations

import dataclasses
from importlib.metadata import version

import pytest

from replicator.core import hookspecs
from replicator.core.config.catalogue import (
    BUILTINS,
    build_plugins,
    catalogue,
    describe,
    enable_trace,
    plugin_hooks,
)
from replicator.core.errors import RecipeError, ReplicatorError
from replicator.core.hookspecs import hookimpl
from replicator.core.params import param
from replicator.plugins.kaggle_csv import KaggleCSV

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


def test_check_data_names_each_block_with_missing_files(tmp_path, cat, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no hub fallback for the competition file
    plugins = build_plugins({**BASE, "extra": {"use": "hh_rlhf"}, "more": {"use": "tag"}}, "r.yaml", cat)
    problems = plugins.check_data(tmp_path)
    assert [a for a, _ in problems] == ["data", "extra"]
    assert ("competition train file not found" in problems[0][1][0]
            and "HH-RLHF file not found" in problems[1][1][0])
    assert plugins.data_files(tmp_path) == [tmp_path / "hh-rlhf" / "harmless-base-test.jsonl.gz"]


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


def test_run_plugins_know_their_distribution():
    plugins = build_plugins(BASE, "r.yaml")
    assert plugins.distributions()["prompt"] == {"use": "plain_turns", "distribution": "arena-replicator",
                                                 "version": version("arena-replicator")}


def test_every_hook_has_a_builtin_implementation():
    """The training callbacks excepted: the runner's own tracking logs what they see (core/util/tracking.py);
    a test plugin receives them (tests/train/test_tracking.py)."""
    implemented = {h for cls in catalogue().values() for h in plugin_hooks(cls)}
    assert implemented == set(hookspecs.HOOK_KINDS) - set(hookspecs.CALLBACKS)


def test_every_builtin_plugin_and_parameter_is_documented():
    entries = {e["name"]: e for e in describe()}
    assert set(entries) == set(BUILTINS)
    for name, e in entries.items():
        assert e["hooks"], f"{name} implements no hook"
        assert len(e["doc"]) > 40, f"{name} has no docstring"
        for pname, _tp, _default, doc in e["params"]:
            assert doc.strip(), f"{name}.{pname} has no documentation"


def test_third_party_plugins_load_through_the_entry_point_group(monkeypatch):
    from importlib.metadata import EntryPoint

    from replicator.core.config import catalogue as manager

    ep = EntryPoint(name="my_clip", value="replicator.plugins.clip_probs:ClipProbs",
                    group=manager.ENTRY_POINT_GROUP)
    monkeypatch.setattr(manager, "entry_points",
                        lambda group: [ep] if group == manager.ENTRY_POINT_GROUP else [])
    cat = manager.catalogue()
    assert "my_clip" in cat and cat["my_clip"].__name__ == "ClipProbs"
    shadow = EntryPoint(name="clip_probs", value="x:y", group=manager.ENTRY_POINT_GROUP)
    monkeypatch.setattr(manager, "entry_points", lambda group: [shadow])
    with pytest.raises(Exception, match="shadows a built-in"):
        manager.catalogue()


def test_two_equal_blocks_register():
    """Two blocks with the same parameters are two plugins (equal dataclasses; the manager registers
    each under its own alias)."""
    from replicator.core.config.catalogue import build_plugins

    blocks = {"a": {"use": "kaggle_csv"}, "b": {"use": "kaggle_csv"}, "c": {"use": "alpacaeval_pairs"},
              "d": {"use": "alpacaeval_pairs"}, "prompt": {"use": "plain_turns"},
              "head": {"use": "default_head"}, "loss": {"use": "cross_entropy"}}
    assert KaggleCSV() == KaggleCSV()
    plugins = build_plugins(blocks, "t.yaml")
    assert [alias for alias, _ in plugins.providers("data_sources")] == ["a", "b", "c", "d"]
