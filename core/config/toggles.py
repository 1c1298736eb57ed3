"""Shared toggles: one name, the same meaning on every recipe (``replicate run RECIPE -t swap``).

A recipe's own toggles (its ``toggles:`` block: ``tiny``, ``raja``, ...) are fixed merge patches. A
shared toggle instead FLIPS one technique relative to the recipe it is applied to: it tests whether
the recipe (as patched by the toggles given before it) has the technique and then applies its
``off`` patch (the run goes without it) or its ``on`` patch (the run adds it). The direction is
recorded in :attr:`Resolved.toggles <replicator.core.config.recipe.Resolved.toggles>` and the fingerprint
as ``NAME:off`` / ``NAME:on``, so a report can say what was measured (:func:`meaning`).

The test and the patches look at the recipe's *final* stage (the model whose score is reported),
with every plugin parameter at its resolved value (a missing ``test_time`` is the plugin default),
and find plugin blocks by what they do (the block that provides the ``loss`` hook, the block that
uses ``swap_ab``), whatever their alias. After patching, the technique must have flipped in the
final stage; when a toggle cannot apply (the block is missing, the format has no such parameter, a
stage sets the key itself, ...) it is a :class:`RecipeError` naming the toggle and the recipe file.

A recipe may not define a toggle with a shared name (its meaning would depend on the recipe):
that is an error at resolve time, for every resolve of that recipe.

The catalogue (``replicate ablate RECIPE --list`` shows it for one recipe):

==================  =============================================  ====================================
name                technique (present when ...)                   off / on
==================  =============================================  ====================================
swap                swap augmentation in training                  swap_ab train: none / random
                    (swap_ab with train random|duplicate|full|     (a swap block is added when missing,
                    alternate)                                     without TTA)
tta                 swap test-time augmentation (swap_ab           test_time: false / true
                    test_time true)
focal               focal loss (the loss block uses focal_loss)    cross_entropy / focal_loss (on only
                                                                   from cross_entropy)
label_smoothing     label smoothing (loss uses label_smoothing)    cross_entropy / label_smoothing (idem)
truncate_start      truncation from the start, keeping the end     truncate: keep_start / keep_end
                    (prompt truncate: keep_end)
truncate_end        truncation from the end, keeping the start     truncate: keep_end / keep_start
                    (prompt truncate: keep_start)
longest_first       longest-field-first truncation                 truncate: keep_start / longest_first
head_reinit         a fresh head in stages that start from an      reinit_head false in those stages /
                    earlier stage (some stage has reinit_head)     true in every stage with ``from:``
aux_names           auxiliary model-name heads (aux_model_heads)   default_head / aux_model_heads (on
                                                                   only from default_head)
softcap_off         Gemma-2 attention softcapping turned off       model.attn_softcap: true / false
                    (model.attn_softcap false)
lengths             the responses' word counts stated in the       show_lengths: false / true (formats
                    prompt (plain_turns show_lengths)              without show_lengths: an error)
temperature         temperature scaling of the predictions         the temperature_scaling block removed
                    (a temperature_scaling block)                  / added (as ``temp``) before the
                                                                   first postprocess block
int8_inference      8-bit inference (predict.load_in_8bit;         predict.load_in_8bit: false / true
                    bitsandbytes, or GPTQ with quantizer gptq)
lora_attn_only      LoRA on the attention projections only         model.lora.targets: all-linear /
                    (targets within q/k/v/o_proj)                  [q_proj, k_proj, v_proj, o_proj]
==================  =============================================  ====================================
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from typing import Any

from replicator.core.errors import RecipeError
from replicator.core.params import did_you_mean

ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]
SWAP_AUGMENT = ("random", "duplicate", "full", "alternate")


class NotApplicable(Exception):
    """Raised by a toggle's test or patch: the toggle cannot apply to this recipe (message says why)."""


# ---------------------------------------------------------------- the recipe as a toggle sees it


#: shared toggles that apply to stages without a fine-tuned LM too (they act on the predictions)
LM_FREE_TOGGLES = ("temperature",)


class View:
    """The partly patched recipe ``cfg``: its stages and its final stage's plugin blocks."""

    def __init__(self, cfg: dict, file: str):
        from replicator.core.config.catalogue import catalogue
        from replicator.core.config.recipe import merge_patch

        self.cfg, self.file, self.cat = cfg, file, catalogue()
        stages = cfg.get("stages") or {"main": {}}
        if not isinstance(stages, dict) or not stages:
            raise NotApplicable("`stages:` is not a mapping of stage name -> patch")
        self.multi_stage = bool(cfg.get("stages"))
        self.stages: dict[str, dict] = {n: (p if isinstance(p, dict) else {}) for n, p in stages.items()}
        defaults = {k: v for k, v in cfg.items() if k in ("model", "train", "predict", "plugins")}
        self.final_name = list(self.stages)[-1]
        patch = {k: v for k, v in self.stages[self.final_name].items() if k not in ("from", "reinit_head", "outputs")}
        self.final: dict = merge_patch(defaults, patch)
        model = self.section("model")
        self.baseline = str(model.get("base", "")).startswith("baseline:")
        self.lm_free = bool(model.get("features")) or self.baseline

    def check_trains_an_lm(self, name: str) -> None:
        """Shared toggles other than :data:`LM_FREE_TOGGLES` change how an LM is fine-tuned or
        prompted: not applicable to a baseline or frozen-feature final stage."""
        if self.baseline:
            raise NotApplicable(f"the final stage {self.final_name!r} is a baseline: it has no model, prompt, loss, "
                                "augmentation, TTA or postprocessing to toggle")
        if self.lm_free and name not in LM_FREE_TOGGLES:
            raise NotApplicable(f"the final stage {self.final_name!r} fine-tunes no LM (a baseline or model.features "
                                "stage): it has no prompt, loss, augmentation or TTA to toggle")

    # -- the final stage's values
    def section(self, name: str) -> dict:
        v = self.final.get(name)
        return v if isinstance(v, dict) else {}

    @property
    def plugins(self) -> dict[str, dict]:
        return {a: b for a, b in self.section("plugins").items() if isinstance(b, dict)}

    def at(self, key: str) -> str:
        """``key`` as seen in the final stage, for messages."""
        return f"{key} (final stage {self.final_name!r})" if self.multi_stage else key

    def params(self, alias: str) -> Any:
        """The plugin instance of block ``alias`` (every parameter at its resolved value)."""
        from replicator.core.params import build

        block = self.plugins[alias]
        use = block.get("use")
        if use not in self.cat:
            raise RecipeError(self.file, f"plugins.{alias}.use", f"unknown plugin {use!r}{did_you_mean(str(use), self.cat)}")
        return build(self.cat[use], block, self.file, f"plugins.{alias}", ignore=("use",))

    def by_use(self, use: str) -> list[str]:
        return [a for a, b in self.plugins.items() if b.get("use") == use]

    def by_hook(self, hook: str) -> list[str]:
        from replicator.core.config.catalogue import plugin_hooks

        return [a for a, b in self.plugins.items() if b.get("use") in self.cat and hook in plugin_hooks(self.cat[b["use"]])]

    def one_by_hook(self, hook: str) -> str:
        found = self.by_hook(hook)
        if len(found) != 1:
            raise NotApplicable(f"needs exactly one plugin block providing the {hook!r} hook in the final stage "
                                f"{self.final_name!r}, found {', '.join(found) or 'none'}")
        return found[0]

    def one_by_use(self, use: str) -> str | None:
        found = self.by_use(use)
        if len(found) > 1:
            raise NotApplicable(f"several {use} blocks ({', '.join(found)}): say which with an override")
        return found[0] if found else None

    def free_alias(self, alias: str, use: str) -> str:
        if alias in self.section("plugins"):
            raise NotApplicable(f"would add `plugins.{alias}: {{use: {use}}}` but plugins.{alias} is already "
                                f"{self.section('plugins')[alias].get('use')!r}")
        return alias


def _replace_provider(v: View, hook: str, expected: str, block: Callable[[str], dict], why: str) -> list[dict]:
    """Patch the block that provides ``hook`` to ``block(alias)``; defined only when that block uses ``expected``
    (else NotApplicable with ``why``)."""
    alias = v.one_by_hook(hook)
    current = v.plugins[alias].get("use")
    if current != expected:
        raise NotApplicable(f"{v.at('plugins.' + alias)} is {current!r}: {why}")
    return [_plugins({alias: block(alias)})]


def _plugins(patch: dict) -> dict:
    return {"plugins": patch}


# ---------------------------------------------------------------- the toggles


@dataclasses.dataclass(frozen=True)
class SharedToggle:
    name: str
    #: the technique, as a noun phrase ("swap augmentation in training")
    technique: str
    #: does the (final stage of the) recipe have the technique?
    has: Callable[[View], bool]
    #: merge patches (applied in order) that remove it / add it
    off: Callable[[View], list[dict]]
    on: Callable[[View], list[dict]]
    #: what an ``off`` / ``on`` run measures, for reports ("removing swap augmentation in training ...")
    off_means: str = ""
    on_means: str = ""

    def meaning(self, direction: str) -> str:
        return self.off_means if direction == "off" else self.on_means


# -- swap_ab: training augmentation and TTA


def _swap_block(v: View) -> str | None:
    return v.one_by_use("swap_ab")


def _has_swap(v: View) -> bool:
    alias = _swap_block(v)
    if alias is None:
        return False
    mode = v.params(alias).train
    if mode == "swapped":
        raise NotApplicable(f"{v.at('plugins.' + alias + '.train')} is 'swapped' (a model trained on the swapped order, not "
                            "augmentation); set the mode with an override instead")
    return mode in SWAP_AUGMENT


def _swap_off(v: View) -> list[dict]:
    return [_plugins({_swap_block(v): {"train": "none"}})]


def _swap_on(v: View) -> list[dict]:
    alias = _swap_block(v)
    if alias is not None:
        return [_plugins({alias: {"train": "random"}})]
    return [_plugins({v.free_alias("swap", "swap_ab"): {"use": "swap_ab", "train": "random", "test_time": False}})]


def _has_tta(v: View) -> bool:
    alias = _swap_block(v)
    return alias is not None and bool(v.params(alias).test_time)


def _tta_off(v: View) -> list[dict]:
    return [_plugins({_swap_block(v): {"test_time": False}})]


def _tta_on(v: View) -> list[dict]:
    alias = _swap_block(v)
    if alias is not None:
        return [_plugins({alias: {"test_time": True}})]
    return [_plugins({v.free_alias("swap", "swap_ab"): {"use": "swap_ab", "train": "none", "test_time": True}})]


# -- losses: one block provides the loss hook; a loss toggle swaps it with plain cross-entropy


def _loss_toggle(use: str) -> tuple[Callable, Callable, Callable]:
    def has(v: View) -> bool:
        return v.plugins[v.one_by_hook("loss")].get("use") == use

    def off(v: View) -> list[dict]:
        return [_plugins({v.one_by_hook("loss"): {"use": "cross_entropy"}})]

    def on(v: View) -> list[dict]:
        return _replace_provider(v, "loss", "cross_entropy", lambda alias: {"use": use},
                                 f"adding {use} is defined from cross_entropy only (it would also remove the current loss)")

    return has, off, on


# -- prompt formats: truncation policy and stated lengths


def _prompt_param(v: View, name: str) -> tuple[str, Any]:
    alias = v.one_by_hook("prompt_format")
    inst = v.params(alias)
    if not any(f.name == name for f in dataclasses.fields(inst)):
        raise NotApplicable(f"the prompt format {v.plugins[alias]['use']!r} ({v.at('plugins.' + alias)}) has no "
                            f"{name!r} parameter")
    return alias, inst


def _truncate_toggle(policy: str, instead: str) -> tuple[Callable, Callable, Callable]:
    def check(v: View) -> str:
        alias, inst = _prompt_param(v, "truncate")
        choices = typing.get_args(typing.get_type_hints(type(inst))["truncate"])
        for p in (policy, instead):
            if choices and p not in choices:
                raise NotApplicable(f"the prompt format {v.plugins[alias]['use']!r} has no truncate policy {p!r}")
        return alias

    def has(v: View) -> bool:
        check(v)
        return _prompt_param(v, "truncate")[1].truncate == policy

    def off(v: View) -> list[dict]:
        return [_plugins({check(v): {"truncate": instead}})]

    def on(v: View) -> list[dict]:
        return [_plugins({check(v): {"truncate": policy}})]

    return has, off, on


def _has_lengths(v: View) -> bool:
    return bool(_prompt_param(v, "show_lengths")[1].show_lengths)


def _lengths(value: bool) -> Callable[[View], list[dict]]:
    return lambda v: [_plugins({_prompt_param(v, "show_lengths")[0]: {"show_lengths": value}})]


# -- stages: head re-initialisation


def _continuing(v: View) -> list[str]:
    found = [n for n, p in v.stages.items() if p.get("from")]
    if not found:
        what = "this is a single-stage recipe" if not v.multi_stage else f"no stage of {', '.join(v.stages)} has `from:`"
        raise NotApplicable(f"needs a stage that starts from an earlier stage's weights; {what}")
    return found


def _has_reinit(v: View) -> bool:
    _continuing(v)
    return any(p.get("reinit_head") for p in v.stages.values())


def _reinit_off(v: View) -> list[dict]:
    return [{"stages": {n: {"reinit_head": False} for n, p in v.stages.items() if p.get("reinit_head")}}]


def _reinit_on(v: View) -> list[dict]:
    return [{"stages": {n: {"reinit_head": True} for n in _continuing(v)}}]


# -- heads: auxiliary model-name heads vs the default head

_INIT_TO_AUX = {"model": "normal", "zeros": "zeros"}


def _has_aux(v: View) -> bool:
    return v.plugins[v.one_by_hook("head")].get("use") == "aux_model_heads"


def _aux_off(v: View) -> list[dict]:
    alias = v.one_by_hook("head")
    init = {"normal": "model", "zeros": "zeros"}[v.params(alias).init]
    return [_plugins({alias: {"use": "default_head", "init": init}})]


def _aux_on(v: View) -> list[dict]:
    return _replace_provider(v, "head", "default_head",
                             lambda alias: {"use": "aux_model_heads", "init": _INIT_TO_AUX[v.params(alias).init]},
                             "aux_model_heads replaces the preference head, so it is defined from default_head only")


# -- model and inference settings


def _model_flag(section: str, key: str, present: Any, absent: Any, default: Any):
    def has(v: View) -> bool:
        return v.section(section).get(key, default) == present

    def set_to(value):
        def patch(v: View) -> list[dict]:
            return [{section: {key: value}}]
        return patch

    return has, set_to(absent), set_to(present)


def _lora(v: View) -> dict:
    lora = v.section("model").get("lora")
    if not isinstance(lora, dict):
        raise NotApplicable(f"the final stage {v.final_name!r} has no LoRA (model.lora: null is full fine-tuning)")
    return lora


def _has_attn_only(v: View) -> bool:
    targets = _lora(v).get("targets", "all-linear")
    return isinstance(targets, list) and set(targets) <= set(ATTENTION)


def _lora_targets(value) -> Callable[[View], list[dict]]:
    def patch(v: View) -> list[dict]:
        _lora(v)
        return [{"model": {"lora": {"targets": value}}}]
    return patch


# -- postprocess: temperature scaling, inserted before the first postprocess block


def _has_temperature(v: View) -> bool:
    return bool(v.by_use("temperature_scaling"))


def _temperature_off(v: View) -> list[dict]:
    return [_plugins({a: None for a in v.by_use("temperature_scaling")})]


def _temperature_on(v: View) -> list[dict]:
    alias = v.free_alias("temp", "temperature_scaling")
    top = v.cfg.get("plugins") or {}
    post = set(v.by_hook("postprocess"))
    first = next((i for i, a in enumerate(top) if a in post), len(top))
    later = {a: top[a] for a in list(top)[first:]}
    # merge patches append new keys: take the later blocks out, then put them back after ``temp``
    return [_plugins({a: None for a in later}), _plugins({alias: {"use": "temperature_scaling"}, **later})]


SHARED: dict[str, SharedToggle] = {t.name: t for t in [
    SharedToggle("swap", "swap augmentation in training", _has_swap, _swap_off, _swap_on,
                 "removing swap augmentation in training (swap_ab train: none)",
                 "adding random swap augmentation in training (swap_ab train: random)"),
    SharedToggle("tta", "swap test-time augmentation", _has_tta, _tta_off, _tta_on,
                 "removing swap test-time augmentation (swap_ab test_time: false)",
                 "adding swap test-time augmentation (swap_ab test_time: true)"),
    SharedToggle("focal", "focal loss", *_loss_toggle("focal_loss"),
                 "cross-entropy instead of focal loss", "focal loss instead of cross-entropy"),
    SharedToggle("label_smoothing", "label smoothing", *_loss_toggle("label_smoothing"),
                 "cross-entropy instead of label smoothing", "label smoothing instead of cross-entropy"),
    SharedToggle("truncate_start", "truncation from the start, keeping the end (keep_end)",
                 *_truncate_toggle("keep_end", "keep_start"),
                 "truncating from the end (keep_start) instead of from the start (keep_end)",
                 "truncating from the start (keep_end) instead of the recipe's policy"),
    SharedToggle("truncate_end", "truncation from the end, keeping the start (keep_start)",
                 *_truncate_toggle("keep_start", "keep_end"),
                 "truncating from the start (keep_end) instead of from the end (keep_start)",
                 "truncating from the end (keep_start) instead of the recipe's policy"),
    SharedToggle("longest_first", "longest-field-first truncation", *_truncate_toggle("longest_first", "keep_start"),
                 "truncating from the end (keep_start) instead of longest field first",
                 "truncating the longest field first instead of the recipe's policy"),
    SharedToggle("head_reinit", "head re-initialisation in stages that start from an earlier stage",
                 _has_reinit, _reinit_off, _reinit_on,
                 "keeping the earlier stage's head instead of re-initialising it (reinit_head: false)",
                 "re-initialising the head in every stage that starts from an earlier one (reinit_head: true)"),
    SharedToggle("aux_names", "auxiliary model-name heads", _has_aux, _aux_off, _aux_on,
                 "removing the auxiliary model-name heads (default_head)",
                 "adding auxiliary model-name heads (aux_model_heads instead of default_head)"),
    SharedToggle("softcap_off", "attention logit softcapping turned off",
                 *_model_flag("model", "attn_softcap", False, True, True),
                 "keeping attention logit softcapping (model.attn_softcap: true)",
                 "turning attention logit softcapping off (model.attn_softcap: false)"),
    SharedToggle("lengths", "response lengths stated in the prompt", _has_lengths, _lengths(False), _lengths(True),
                 "removing the stated response lengths from the prompt (show_lengths: false)",
                 "stating the response lengths in the prompt (show_lengths: true)"),
    SharedToggle("temperature", "temperature scaling", _has_temperature, _temperature_off, _temperature_on,
                 "removing temperature scaling", "adding temperature scaling (fitted on validation)"),
    SharedToggle("int8_inference", "8-bit inference", *_model_flag("predict", "load_in_8bit", True, False, False),
                 "predicting in full precision instead of 8-bit (predict.load_in_8bit: false)",
                 "predicting with the backbone in 8-bit (predict.load_in_8bit: true)"),
    SharedToggle("lora_attn_only", "LoRA on the attention projections only", _has_attn_only,
                 _lora_targets("all-linear"), _lora_targets(list(ATTENTION)),
                 "LoRA on all linear layers instead of attention only (targets: all-linear)",
                 "LoRA on the attention projections only (targets: q/k/v/o_proj)"),
]}


# ---------------------------------------------------------------- applying toggles


@dataclasses.dataclass(frozen=True)
class Applied:
    name: str
    direction: str | None  # "off" | "on" for a shared toggle, None for a recipe toggle
    patches: list[dict]

    @property
    def label(self) -> str:
        return f"{self.name}:{self.direction}" if self.direction else self.name


def recipe_toggles(raw: dict, file: str) -> dict:
    """The recipe's own ``toggles:`` block, checked: a mapping, no name of a shared toggle."""
    named = raw.get("toggles") or {}
    if not isinstance(named, dict):
        raise RecipeError(file, "toggles", "expected a mapping of toggle name -> merge patch")
    for name in named:
        if name in SHARED:
            raise RecipeError(file, f"toggles.{name}", f"{name!r} is a shared toggle (replicator.core.config.toggles: "
                              f"{SHARED[name].technique}, the same meaning on every recipe); rename this one")
    return named


def plan_toggle(cfg: dict, name: str, named: dict, file: str) -> Applied:
    """Which patches toggle ``name`` applies to ``cfg`` (and, for a shared one, in which direction)."""
    if name in named:
        return Applied(name, None, [named[name]])
    if name not in SHARED:
        known = [*named, *SHARED]
        raise RecipeError(file, f"toggles.{name}", f"unknown toggle{did_you_mean(name, known)}; recipe toggles: "
                          f"{', '.join(named) or '(none)'}; shared toggles: {', '.join(SHARED)}")
    t = SHARED[name]
    try:
        view = View(cfg, file)
        view.check_trains_an_lm(name)
        direction = "off" if t.has(view) else "on"
        patches = (t.off if direction == "off" else t.on)(view)
    except NotApplicable as e:
        raise RecipeError(file, f"toggle {name!r}", f"cannot apply to this recipe: {e}") from None
    return Applied(name, direction, patches)


def apply_toggle(cfg: dict, name: str, named: dict, file: str) -> tuple[dict, str]:
    """Apply toggle ``name`` to ``cfg``; return the patched config and the label to record
    (``name`` for a recipe toggle, ``name:off`` / ``name:on`` for a shared one)."""
    from replicator.core.config.recipe import merge_patch

    applied = plan_toggle(cfg, name, named, file)
    out = cfg
    for p in applied.patches:
        out = merge_patch(out, p)
    if applied.direction is not None:
        t = SHARED[name]
        try:
            after = View(out, file)
            flipped = t.has(after) != (applied.direction == "off")
        except NotApplicable as e:
            raise RecipeError(file, f"toggle {name!r}", f"cannot apply to this recipe: {e}") from None
        if not flipped:
            raise RecipeError(file, f"toggle {name!r}", f"{t.meaning(applied.direction)} did not take effect in the "
                              f"final stage {after.final_name!r}: its stage patch (stages.{after.final_name}) sets "
                              "the same keys itself; use an override instead")
    return out, applied.label


def meaning(label: str) -> str:
    """What a recorded toggle label measured: ``swap:off`` -> 'removing swap augmentation in training (...)'."""
    name, _, direction = label.partition(":")
    if name in SHARED and direction in ("off", "on"):
        return SHARED[name].meaning(direction)
    return f"recipe toggle {label!r}"


def status(cfg: dict, file: str) -> list[tuple[str, str, str]]:
    """(name, direction or 'n/a', what it would measure or why it cannot apply) of each shared toggle."""
    out = []
    for name, t in SHARED.items():
        try:
            view = View(cfg, file)
            view.check_trains_an_lm(name)
            direction = "off" if t.has(view) else "on"
            (t.off if direction == "off" else t.on)(view)
            out.append((name, direction, t.meaning(direction)))
        except NotApplicable as e:
            out.append((name, "n/a", str(e)))
    return out


def config_diff(before: Any, after: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, old, new) of every leaf that differs; a missing side is None (``use`` changes
    show as the whole block)."""
    if isinstance(before, dict) and isinstance(after, dict) and before.get("use") == after.get("use"):
        out = []
        for k in [*before, *(k for k in after if k not in before)]:
            out += config_diff(before.get(k), after.get(k), f"{prefix}{k}.")
        return out
    return [] if before == after else [(prefix.rstrip("."), before, after)]
