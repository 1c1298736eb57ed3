"""Plugin classes by catalogue name: the built-in plugins and those of third-party packages.

Built-in plugins are listed explicitly in :data:`BUILTINS` (name -> "module:Class", imported on
first use); third-party packages add theirs through the ``replicator.plugins`` entry-point group.
A plugin that uses another plugin by name (``pseudo_labels``' ``source``: the rows of another
data-source plugin) finds its class here, as the recipe checks do
(:mod:`replicator.core.config.catalogue` builds and registers the plugins of a run).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from importlib.metadata import EntryPoint, PackageNotFoundError, entry_points, version

from replicator.core.errors import RecipeError

ENTRY_POINT_GROUP = "replicator.plugins"
#: the distribution that ships the built-in plugins
DISTRIBUTION = "arena-replicator"

BUILTINS: dict[str, str] = {
    # data_sources
    "kaggle_csv": "replicator.plugins.kaggle_csv:KaggleCSV",
    "arena_33k": "replicator.plugins.arena_33k:Arena33k",
    "alpacaeval_pairs": "replicator.plugins.alpacaeval:AlpacaEvalPairs",
    "ultrafeedback_pairs": "replicator.plugins.ultrafeedback:UltraFeedbackPairs",
    "hh_rlhf": "replicator.plugins.hh_rlhf:HHRLHF",
    "mt_bench": "replicator.plugins.mt_bench:MTBenchHuman",
    "pseudo_labels": "replicator.plugins.pseudo_labels:PseudoLabels",
    # prompt_format
    "plain_turns": "replicator.plugins.plain_turns:PlainTurns",
    "qa_triple_quotes": "replicator.plugins.qa_triple_quotes:QATripleQuotes",
    "judge_pab": "replicator.plugins.judge_pab:JudgePAB",
    "judge_papb": "replicator.plugins.judge_pab:JudgePAPB",
    "judge_multi": "replicator.plugins.judge_pab:JudgeMulti",
    "tagged_turns": "replicator.plugins.tagged_turns:TaggedTurns",
    "context_result": "replicator.plugins.context_result:ContextResult",
    "round_headers": "replicator.plugins.round_headers:RoundHeaders",
    "context_last": "replicator.plugins.context_last:ContextLast",
    "turn_rounds": "replicator.plugins.turn_rounds:TurnRounds",
    # head
    "default_head": "replicator.plugins.default_head:DefaultHead",
    "mlp_head": "replicator.plugins.mlp_head:MLPHead",
    "aux_model_heads": "replicator.plugins.aux_model_heads:AuxModelHeads",
    "response_pool": "replicator.plugins.response_pool_head:ResponsePoolHead",
    # loss
    "cross_entropy": "replicator.plugins.cross_entropy:CrossEntropy",
    "label_smoothing": "replicator.plugins.label_smoothing:LabelSmoothing",
    "focal_loss": "replicator.plugins.focal_loss:FocalLoss",
    "distill_kl_cos": "replicator.plugins.distill_kl_cos:DistillKLCos",
    # augment + tta
    "swap_ab": "replicator.plugins.swap_ab:SwapAB",
    # postprocess
    "clip_probs": "replicator.plugins.clip_probs:ClipProbs",
    "temperature_scaling": "replicator.plugins.calibration:TemperatureScaling",
    "platt_scaling": "replicator.plugins.calibration:PlattScaling",
    "empty_identical_rules": "replicator.plugins.empty_identical_rules:EmptyIdenticalRules",
}


def _load(target: str):
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def builtin_version() -> str | None:
    """The installed version of :data:`DISTRIBUTION`, or None when it is not installed (a bare checkout)."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return None


class Catalogue(dict):
    """name -> plugin class, imported on first access: built-ins, then entry points (which may not
    shadow built-ins). A recipe imports only the plugins it uses. ``origins`` holds each name's
    (distribution, version)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.origins: dict[str, tuple[str | None, str | None]] = {}

    def __getitem__(self, name):
        target = super().__getitem__(name)
        if isinstance(target, str):
            target = _load(target)
        elif not isinstance(target, type):  # an entry point
            target = target.load()
        super().__setitem__(name, target)
        return target

    def items(self):
        return [(k, self[k]) for k in self]

    def values(self):
        return [self[k] for k in self]

    def origin(self, name: str) -> tuple[str | None, str | None]:
        """(distribution, version) of plugin ``name``; (None, None) when unknown."""
        return self.origins.get(name, (None, None))


def catalogue(found: Iterable[EntryPoint] | None = None) -> Catalogue:
    """Every plugin by name: :data:`BUILTINS`, then the entry points ``found`` (default: those of the
    ``replicator.plugins`` group installed); an entry point that shadows a built-in is a RecipeError."""
    found = entry_points(group=ENTRY_POINT_GROUP) if found is None else found
    out = Catalogue(BUILTINS)
    builtin = (DISTRIBUTION, builtin_version())
    out.origins.update({name: builtin for name in BUILTINS})
    for ep in found:
        if ep.name in out:
            raise RecipeError(f"entry point {ep.value}", ep.name,
                              "shadows a built-in plugin of the same name")
        dict.__setitem__(out, ep.name, ep)
        dist = ep.dist
        out.origins[ep.name] = (dist.name, dist.version) if dist is not None else (None, None)
    return out
