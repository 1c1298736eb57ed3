"""Shared toggle declarations (core/lib/toggles.py)."""

from __future__ import annotations

from replicator.core.lib.toggles import LAST, SharedToggle, plugins_patch, provider_toggle
from replicator.plugins.plain_turns import SHARED_TOGGLES, PlainTurns


def test_shared_toggle_defaults_and_meaning():
    t = SharedToggle("x", "a technique", lambda v: True, lambda v: [], lambda v: [], "off!", "on!")
    assert t.rank == LAST and not t.lm_free
    assert t.meaning("off") == "off!" and t.meaning("on") == "on!"
    assert plugins_patch({"a": {"use": "b"}}) == {"plugins": {"a": {"use": "b"}}}


class _View:
    def __init__(self, plugins):
        self.plugins = plugins

    def one_by_hook(self, hook):
        return {"loss": "loss"}[hook]

    def replace_provider(self, hook, instead, block, why):
        return [plugins_patch({"loss": block("loss")})] if self.plugins["loss"]["use"] == instead else []

    def prompt_param(self, name):
        return "prompt", PlainTurns(show_lengths=self.plugins["prompt"].get("show_lengths", False))


def test_provider_toggle():
    has, off, on = provider_toggle("loss", "focal_loss", "cross_entropy", "needs cross_entropy")
    focal = _View({"loss": {"use": "focal_loss"}})
    ce = _View({"loss": {"use": "cross_entropy"}})
    assert has(focal) and not has(ce)
    assert off(focal) == [{"plugins": {"loss": {"use": "cross_entropy"}}}]
    assert on(ce) == [{"plugins": {"loss": {"use": "focal_loss"}}}]


def test_lengths_declaration_of_plain_turns():
    (t,) = SHARED_TOGGLES
    on, off = _View({"prompt": {"show_lengths": True}}), _View({"prompt": {}})
    assert t.has(on) and not t.has(off)
    assert t.off(on) == [{"plugins": {"prompt": {"show_lengths": False}}}]
    assert t.on(off) == [{"plugins": {"prompt": {"show_lengths": True}}}]
    assert "show_lengths: false" in t.meaning("off")
