"""Declaring a shared toggle (``replicate run RECIPE -t NAME``): what a plugin module needs.

A shared toggle flips one technique relative to the recipe it is applied to (the machinery, and
the toggles about recipe sections rather than a plugin, are in :mod:`replicator.core.config.toggles`).
The toggle of a technique that a plugin implements is declared next to it, in the plugin's module,
as a module-level list ``SHARED_TOGGLES`` (:data:`DECLARATIONS`)::

    SHARED_TOGGLES = [SharedToggle("swap", "swap augmentation in training", has, off, on,
                                   "removing ...", "adding ...", rank=10)]

``off_means`` / ``on_means`` are the one-line descriptions a report prints for a run recorded as
``NAME:off`` / ``NAME:on``; the direction is what lets a report state the technique's gain with one sign
(:data:`CHANGES`: what a toggle may change on purpose).
``claimed`` is what the write-ups claim the technique is worth, quoted with its source tags (a report
prints it beside the gain it measured).

The catalogue's plugin modules are read for it: the built-in ones and those of third-party packages
registered in the ``replicator.plugins`` entry-point group, declared the same way. A toggle's
``has`` / ``off`` / ``on`` receive a :class:`ToggleView` of the (partly patched) recipe and raise
:class:`NotApplicable` when they cannot apply; ``off`` / ``on`` return JSON merge patches.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol

#: the module-level name under which a plugin module lists its shared toggles
DECLARATIONS = "SHARED_TOGGLES"
#: the rank of a toggle that gives none: listed after the built-in ones, in catalogue order
LAST = 1000.0
#: what a toggle may declare it changes on purpose (``SharedToggle.changes``, a recipe toggle's ``changes:``),
#: each with what a report would otherwise flag as not comparable with the base
CHANGES = {"data": "the data files read (data hash)", "split": "the validation rows"}


class NotApplicable(Exception):
    """Raised by a toggle's test or patch: the toggle cannot apply to this recipe (message says why)."""


class ToggleView(Protocol):
    """The partly patched recipe as a toggle sees it: its stages and its final stage's plugin blocks
    (every plugin parameter at its resolved value)."""

    cfg: dict  # the recipe's top level, as patched so far
    file: str
    stages: dict[str, dict]  # stage name -> its patch (``{"main": {}}`` for a single-stage recipe)
    final_name: str
    multi_stage: bool

    def section(self, name: str) -> dict:
        """The final stage's ``model`` / ``train`` / ``predict`` / ``plugins`` section ({} when absent)."""
        ...

    @property
    def plugins(self) -> dict[str, dict]:
        """alias -> block of the final stage's plugin blocks."""
        ...

    def at(self, key: str) -> str:
        """``key`` as seen in the final stage, for messages."""
        ...

    def params(self, alias: str) -> Any:
        """The plugin instance of block ``alias`` (every parameter at its resolved value)."""
        ...

    def by_use(self, use: str) -> list[str]:
        """The aliases of the blocks using plugin ``use``."""
        ...

    def by_hook(self, hook: str) -> list[str]:
        """The aliases of the blocks whose plugin provides ``hook``."""
        ...

    def one_by_hook(self, hook: str) -> str:
        """The one block providing ``hook`` (NotApplicable when none or several)."""
        ...

    def one_by_use(self, use: str) -> str | None:
        """The block using ``use``, None when there is none (NotApplicable when several)."""
        ...

    def free_alias(self, alias: str, use: str) -> str:
        """``alias``, for a new block using ``use`` (NotApplicable when the alias is taken)."""
        ...

    def replace_provider(self, hook: str, expected: str, block: Callable[[str], dict],
                         why: str) -> list[dict]:
        """Patches that make the block providing ``hook`` ``block(alias)``; defined only when that block
        uses ``expected`` (else NotApplicable with ``why``)."""
        ...

    def prompt_param(self, name: str) -> tuple[str, Any]:
        """(alias, instance) of the prompt format block (NotApplicable when it has no parameter ``name``)."""
        ...


Test = Callable[[ToggleView], bool]
Patches = Callable[[ToggleView], list[dict]]


@dataclasses.dataclass(frozen=True)
class SharedToggle:
    name: str
    #: the technique, as a noun phrase ("swap augmentation in training")
    technique: str
    #: does the (final stage of the) recipe have the technique?
    has: Test
    #: merge patches (applied in order) that remove it / add it
    off: Patches
    on: Patches
    #: what an ``off`` / ``on`` run measures, for reports ("removing swap augmentation in training ...")
    off_means: str = ""
    on_means: str = ""
    #: where listings (``replicate ablate --list``, error messages) put it: by rank, then catalogue order
    rank: float = LAST
    #: it acts on the predictions, so it applies to a final stage without a fine-tuned LM too
    lm_free: bool = False
    #: what it changes on purpose, so that a report does not flag it as a comparability problem:
    #: ``data`` (the data files read, the data hash), ``split`` (the validation rows); none by default
    changes: tuple[str, ...] = ()
    #: what the solutions' write-ups claim the technique is worth, with the source tags of
    #: SOLUTIONS.md ("0.941 → 0.926 public notebook [P16]; ..."; "no number given; ..."), shown beside
    #: the measured gain in ablation reports ("" where the write-ups say nothing)
    claimed: str = ""

    def meaning(self, direction: str) -> str:
        return self.off_means if direction == "off" else self.on_means


def plugins_patch(patch: dict) -> dict:
    """A merge patch of the ``plugins:`` section."""
    return {"plugins": patch}


def provider_toggle(hook: str, use: str, instead: str, why: str) -> tuple[Test, Patches, Patches]:
    """(has, off, on) of a technique that is the plugin ``use`` providing ``hook`` (a loss, a head):
    off puts plugin ``instead`` in its place, on is defined from ``instead`` only (else ``why``)."""

    def has(v: ToggleView) -> bool:
        return v.plugins[v.one_by_hook(hook)].get("use") == use

    def off(v: ToggleView) -> list[dict]:
        return [plugins_patch({v.one_by_hook(hook): {"use": instead}})]

    def on(v: ToggleView) -> list[dict]:
        return v.replace_provider(hook, instead, lambda alias: {"use": use}, why)

    return has, off, on
