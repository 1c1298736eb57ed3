"""The plugin catalogue and the per-run plugin manager.

Built-in plugins are listed explicitly in :data:`BUILTINS` (name -> "module:Class", imported
lazily); third-party packages add theirs through the ``replicator.plugins`` entry-point group.
Each run builds a fresh :class:`pluggy.PluginManager` from the recipe's ``plugins:`` blocks and
checks the ``one`` hooks before anything heavy is loaded.
"""

from __future__ import annotations

import dataclasses
import importlib
from importlib.metadata import entry_points
from typing import Any

import pluggy

from . import hookspecs
from .errors import RecipeError
from .params import build, did_you_mean, doc_of

ENTRY_POINT_GROUP = "replicator.plugins"

BUILTINS: dict[str, str] = {
    # data_sources
    "kaggle_csv": "replicator.plugins.kaggle_csv:KaggleCSV",
    "arena_33k": "replicator.plugins.arena_33k:Arena33k",
    "alpacaeval_pairs": "replicator.plugins.alpacaeval:AlpacaEvalPairs",
    "ultrafeedback_pairs": "replicator.plugins.ultrafeedback:UltraFeedbackPairs",
    "hh_rlhf": "replicator.plugins.hh_rlhf:HHRLHF",
    "pseudo_labels": "replicator.plugins.pseudo_labels:PseudoLabels",
    # prompt_format
    "plain_turns": "replicator.plugins.plain_turns:PlainTurns",
    "qa_triple_quotes": "replicator.plugins.qa_triple_quotes:QATripleQuotes",
    "judge_pab": "replicator.plugins.judge_pab:JudgePAB",
    "judge_papb": "replicator.plugins.judge_pab:JudgePAPB",
    "tagged_turns": "replicator.plugins.tagged_turns:TaggedTurns",
    "context_result": "replicator.plugins.context_result:ContextResult",
    "round_headers": "replicator.plugins.round_headers:RoundHeaders",
    "context_last": "replicator.plugins.context_last:ContextLast",
    "turn_rounds": "replicator.plugins.turn_rounds:TurnRounds",
    # head
    "default_head": "replicator.plugins.default_head:DefaultHead",
    "mlp_head": "replicator.plugins.mlp_head:MLPHead",
    "aux_model_heads": "replicator.plugins.aux_model_heads:AuxModelHeads",
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


class Catalogue(dict):
    """name -> plugin class, imported on first access: built-ins, then entry points (which may not
    shadow built-ins). A recipe imports only the plugins it uses."""

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


def catalogue() -> Catalogue:
    out = Catalogue(BUILTINS)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in out:
            raise RecipeError(f"entry point {ep.value}", ep.name, "shadows a built-in plugin of the same name")
        dict.__setitem__(out, ep.name, ep)
    return out


def plugin_hooks(cls) -> list[str]:
    """The hooks a plugin class implements, in hookspec order."""
    return [h for h in hookspecs.HOOK_KINDS if callable(getattr(cls, h, None))
            and getattr(getattr(cls, h), hookspecs.PROJECT + "_impl", None) is not None]


def plugin_doc(cls) -> str:
    return (cls.__doc__ or "").strip()


@dataclasses.dataclass
class Plugins:
    """The plugins of one run, in recipe order, behind a fresh pluggy manager."""

    pm: pluggy.PluginManager
    order: list[tuple[str, Any]]  # (alias, instance)

    def providers(self, hook: str) -> list[tuple[str, Any]]:
        return [(a, p) for a, p in self.order if hook in plugin_hooks(type(p))]

    def one(self, hook: str, **kwargs):
        ((_, plugin),) = self.providers(hook)
        return getattr(plugin, hook)(**kwargs)

    def all(self, hook: str, **kwargs) -> list:
        return [getattr(p, hook)(**kwargs) for _, p in self.providers(hook)]

    def chain(self, hook: str, value_arg: str, value, **kwargs):
        for _, p in self.providers(hook):
            value = getattr(p, hook)(**{value_arg: value}, **kwargs)
        return value

    def data_files(self, data_dir) -> list:
        """Every file the data plugins read (for the data hash), in recipe order, without repeats."""
        out = []
        for _, p in self.providers("data_sources"):
            for f in getattr(p, "data_files", lambda d: [])(data_dir):
                if f not in out:
                    out.append(f)
        return out

    def check_data(self, data_dir) -> list[tuple[str, list[str]]]:
        """(alias, problems) of each data plugin whose files are missing or unusable."""
        out = []
        for alias, p in self.providers("data_sources"):
            problems = p.check(data_dir) if hasattr(p, "check") else []
            if problems:
                out.append((alias, list(problems)))
        return out

    def get(self, use: str):
        """The first plugin instance of catalogue name ``use``, or None."""
        for _, p in self.order:
            if getattr(p, "_use", None) == use:
                return p
        return None


def _proxy(inst):
    proxy = type(f"{type(inst).__name__}Hooks", (), {})()
    for hook in plugin_hooks(type(inst)):
        setattr(proxy, hook, getattr(inst, hook))
    return proxy


def build_plugins(blocks: dict[str, dict], file: str, cat: dict | None = None) -> Plugins:
    """Instantiate and register the recipe's plugin blocks; check hook cardinality."""
    cat = catalogue() if cat is None else cat
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    order = []
    for alias, block in (blocks or {}).items():
        key = f"plugins.{alias}"
        if not isinstance(block, dict) or "use" not in block:
            raise RecipeError(file, key, "a plugin block needs `use: <plugin name>` and its parameters")
        use = block["use"]
        if use not in cat:
            raise RecipeError(file, f"{key}.use", f"unknown plugin {use!r}{did_you_mean(str(use), cat)}; "
                              "`replicate plugins` lists them")
        cls = cat[use]
        inst = build(cls, block, file, key, ignore=("use",))
        object.__setattr__(inst, "_use", use)
        try:  # register a proxy: pluggy refuses plugins that compare equal, as equal dataclasses do
            pm.register(_proxy(inst), name=alias)
        except pluggy.PluginValidationError as e:
            raise RecipeError(file, key, f"plugin {use!r} does not match the hookspecs: {e}") from None
        order.append((alias, inst))
    plugins = Plugins(pm, order)
    for hook, kind in hookspecs.HOOK_KINDS.items():
        provs = plugins.providers(hook)
        if kind == "one" and len(provs) != 1:
            names = ", ".join(f"{a} ({p._use})" for a, p in provs) or "none"
            raise RecipeError(file, "plugins", f"hook {hook!r} needs exactly one plugin, found {len(provs)}: {names}")
    if not plugins.providers("data_sources"):
        raise RecipeError(file, "plugins", "no data_sources plugin: add one, e.g. `data: {use: kaggle_csv}`")
    return plugins


def describe(cat: dict | None = None) -> list[dict]:
    """Catalogue entries for `replicate plugins`: name, hooks, doc, parameters."""
    cat = catalogue() if cat is None else cat
    out = []
    for name, cls in cat.items():
        out.append({"name": name, "hooks": plugin_hooks(cls), "doc": plugin_doc(cls),
                    "params": doc_of(cls)})
    return out
