"""Shared toggles: one name, the same meaning on every recipe (``replicate run RECIPE -t swap``).

A recipe's own toggles (its ``toggles:`` block: ``tiny``, ``raja``, ...) are fixed merge patches. A
shared toggle instead FLIPS one technique relative to the recipe it is applied to: it tests whether
the recipe (as patched by the toggles given before it) has the technique and then applies its
``off`` patch (the run goes without it) or its ``on`` patch (the run adds it). The direction is
recorded in :attr:`Resolved.toggles <replicator.core.config.recipe.Resolved.toggles>` and the fingerprint
as ``NAME:off`` / ``NAME:on``, so a report can say what was measured (:func:`meaning`).

The test and the patches look at the recipe's *final* stage (the model whose score is reported),
with every plugin parameter at its resolved value (a missing parameter is the plugin default),
and find plugin blocks by what they do (the block that provides the ``loss`` hook, the block that
uses a given plugin), whatever their alias: :class:`View`. After patching, the technique must have
flipped in the final stage; when a toggle cannot apply (the block is missing, the format has no such
parameter, a stage sets the key itself, ...) it is a :class:`RecipeError` naming the toggle and the
recipe file.

Who declares a toggle: the toggle of a technique a plugin implements is declared in that plugin's
module (``SHARED_TOGGLES``, :mod:`replicator.core.lib.toggles`), built-in or registered by a
third-party package in the ``replicator.plugins`` entry-point group; :data:`SHARED` collects them
from the catalogue's modules, with the toggles declared here, which are about recipe sections
(``model``, ``predict``, ``stages``, the prompt format's ``truncate`` parameter) and name no plugin.
The core names no plugin. The catalogue of toggles, what each tests and patches, is the table in
recipes/README.md (``replicate ablate RECIPE --list`` shows it for one recipe).

A recipe may not define a toggle with a shared name (its meaning would depend on the recipe):
that is an error at resolve time, for every resolve of that recipe.

What a toggle is, for reports (:class:`ToggleInfo`, :func:`describe`): a one-line description, its
direction (``on``: the run adds a technique, ``off``: the run goes without it, none: an alternative or a
scale, e.g. ``tiny``), what it changes on purpose (:data:`~replicator.core.lib.toggles.CHANGES`) and what
the write-ups claim the technique is worth (``claimed``, with its source tags). A shared toggle has them
in its declaration; a recipe toggle may state them beside its patch, under the keys :data:`ABOUT_KEYS`,
which are left out of the patch (so they change no run id)::

    toggles:
      extra_rows: {about: "another source's rows as extra training rows", direction: on, changes: [data],
                   claimed: "no number given; did not work for them [JP]",
                   plugins: {extra: {use: my_data_plugin}}}
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from replicator.core.config.catalogue import catalogue, plugin_hooks
from replicator.core.config.patch import merge_patch
from replicator.core.errors import RecipeError, ReplicatorError
from replicator.core.lib.model_names import known_config
from replicator.core.lib.toggles import CHANGES, DECLARATIONS, NotApplicable, SharedToggle, plugins_patch
from replicator.core.params import build, did_you_mean

__all__ = ["ABOUT_KEYS", "SHARED", "NotApplicable", "SharedToggle", "ToggleInfo", "View", "apply_toggle",
           "collect", "config_diff", "declarations", "describe", "meaning", "plan_toggle",
           "recipe_toggle_info", "recipe_toggles", "status"]

ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]


# ---------------------------------------------------------------- the recipe as a toggle sees it


class View:
    """The partly patched recipe ``cfg``: its stages and its final stage's plugin blocks
    (a :class:`~replicator.core.lib.toggles.ToggleView`)."""

    def __init__(self, cfg: dict, file: str):
        self.cfg, self.file, self.cat = cfg, file, catalogue()
        stages = cfg.get("stages") or {"main": {}}
        if not isinstance(stages, dict) or not stages:
            raise NotApplicable("`stages:` is not a mapping of stage name -> patch")
        self.multi_stage = bool(cfg.get("stages"))
        self.stages: dict[str, dict] = {n: (p if isinstance(p, dict) else {}) for n, p in stages.items()}
        defaults = {k: v for k, v in cfg.items() if k in ("model", "train", "predict", "plugins")}
        self.final_name = list(self.stages)[-1]
        patch = {k: v for k, v in self.stages[self.final_name].items()
                 if k not in ("from", "reinit_head", "outputs")}
        self.final: dict = merge_patch(defaults, patch)
        model = self.section("model")
        self.baseline = str(model.get("base", "")).startswith("baseline:")
        self.lm_free = bool(model.get("features")) or self.baseline

    def check_applies(self, toggle: SharedToggle) -> None:
        """Shared toggles other than ``lm_free`` ones change how an LM is fine-tuned or prompted: not
        applicable to a baseline or frozen-feature final stage."""
        if self.baseline:
            raise NotApplicable(f"the final stage {self.final_name!r} is a baseline: it has no model, "
                                "prompt, loss, augmentation, TTA or postprocessing to toggle")
        if self.lm_free and not toggle.lm_free:
            raise NotApplicable(f"the final stage {self.final_name!r} fine-tunes no LM (a baseline or "
                                "model.features stage): it has no prompt, loss, augmentation or TTA to "
                                "toggle")

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
        block = self.plugins[alias]
        use = block.get("use")
        if use not in self.cat:
            raise RecipeError(self.file, f"plugins.{alias}.use",
                              f"unknown plugin {use!r}{did_you_mean(str(use), self.cat)}")
        return build(self.cat[use], block, self.file, f"plugins.{alias}", ignore=("use",))

    def by_use(self, use: str) -> list[str]:
        return [a for a, b in self.plugins.items() if b.get("use") == use]

    def by_hook(self, hook: str) -> list[str]:
        return [a for a, b in self.plugins.items()
                if b.get("use") in self.cat and hook in plugin_hooks(self.cat[b["use"]])]

    def one_by_hook(self, hook: str) -> str:
        found = self.by_hook(hook)
        if len(found) != 1:
            raise NotApplicable(f"needs exactly one plugin block providing the {hook!r} hook in the final "
                                f"stage {self.final_name!r}, found {', '.join(found) or 'none'}")
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

    def replace_provider(self, hook: str, expected: str, block: Callable[[str], dict],
                         why: str) -> list[dict]:
        """Patch the block that provides ``hook`` to ``block(alias)``; defined only when that block uses
        ``expected`` (else NotApplicable with ``why``)."""
        alias = self.one_by_hook(hook)
        current = self.plugins[alias].get("use")
        if current != expected:
            raise NotApplicable(f"{self.at('plugins.' + alias)} is {current!r}: {why}")
        return [plugins_patch({alias: block(alias)})]

    def prompt_param(self, name: str) -> tuple[str, Any]:
        """(alias, instance) of the prompt format block, which must have parameter ``name``."""
        alias = self.one_by_hook("prompt_format")
        inst = self.params(alias)
        if not any(f.name == name for f in dataclasses.fields(inst)):
            raise NotApplicable(f"the prompt format {self.plugins[alias]['use']!r} "
                                f"({self.at('plugins.' + alias)}) has no {name!r} parameter")
        return alias, inst


# ---------------------------------------------------------------- the toggles about recipe sections


# -- prompt formats: the truncation policy (the ``truncate`` parameter of replicator.core.lib.truncation)


def _truncate_toggle(policy: str, instead: str) -> tuple[Callable, Callable, Callable]:
    def check(v: View) -> str:
        alias, inst = v.prompt_param("truncate")
        choices = typing.get_args(typing.get_type_hints(type(inst))["truncate"])
        for p in (policy, instead):
            if choices and p not in choices:
                raise NotApplicable(f"the prompt format {v.plugins[alias]['use']!r} has no truncate "
                                    f"policy {p!r}")
        return alias

    def has(v: View) -> bool:
        check(v)
        return v.prompt_param("truncate")[1].truncate == policy

    def to(v: View, value: str) -> list[dict]:
        alias = check(v)
        for head in v.by_hook("head"):  # a head may need what a policy cuts (both responses, for one)
            why = getattr(v.params(head), "truncation_refused", {}).get(value)
            if why:
                raise NotApplicable(f"the head {v.plugins[head]['use']!r} ({v.at('plugins.' + head)}) cannot "
                                    f"read texts truncated by {value!r}: {why}")
        return [plugins_patch({alias: {"truncate": value}})]

    return has, lambda v: to(v, instead), lambda v: to(v, policy)


# -- stages: head re-initialisation


def _continuing(v: View) -> list[str]:
    found = [n for n, p in v.stages.items() if p.get("from")]
    if not found:
        what = ("this is a single-stage recipe" if not v.multi_stage
                else f"no stage of {', '.join(v.stages)} has `from:`")
        raise NotApplicable(f"needs a stage that starts from an earlier stage's weights; {what}")
    return found


def _has_reinit(v: View) -> bool:
    _continuing(v)
    return any(p.get("reinit_head") for p in v.stages.values())


def _reinit_off(v: View) -> list[dict]:
    return [{"stages": {n: {"reinit_head": False} for n, p in v.stages.items() if p.get("reinit_head")}}]


def _reinit_on(v: View) -> list[dict]:
    return [{"stages": {n: {"reinit_head": True} for n in _continuing(v)}}]


# -- model and inference settings


def _model_flag(section: str, key: str, present: Any, absent: Any, default: Any):
    def has(v: View) -> bool:
        return v.section(section).get(key, default) == present

    def set_to(value):
        def patch(v: View) -> list[dict]:
            return [{section: {key: value}}]
        return patch

    return has, set_to(absent), set_to(present)


def _softcap_off():
    """``model.attn_softcap`` off and on; not applicable to a base whose config is known here (a shipped
    config, a local folder) and sets no attention logit softcapping (Gemma-3, Llama, Qwen): there the flag
    changes nothing, and a variant would measure noise at the cost of a run."""
    flag = _model_flag("model", "attn_softcap", False, True, True)

    def checked(fn):
        def f(v: View):
            base = v.section("model").get("base")
            config = known_config(base)
            if config is not None and config.get("attn_logit_softcapping") is None:
                raise NotApplicable(f"model.base {base} has no attention logit softcapping to turn off (its "
                                    "config sets no attn_logit_softcapping)")
            return fn(v)
        return f

    return tuple(checked(fn) for fn in flag)


def _int8_inference():
    """``predict.load_in_8bit`` on and off; not on a cross-fitted final stage, whose folds predict with the
    models they trained (``replicate predict`` of a single split is where 8-bit inference is measured)."""
    has, off, on = _model_flag("predict", "load_in_8bit", True, False, False)

    def crossfit(patch):
        def checked(v: View) -> list[dict]:
            if (v.section("train") or {}).get("crossfit"):
                raise NotApplicable(f"{v.at('train.crossfit')} is set: each fold predicts with the model it "
                                    "trained, in its training precision")
            return patch(v)
        return checked

    return has, crossfit(off), crossfit(on)


def _lora(v: View) -> dict:
    lora = v.section("model").get("lora")
    if not isinstance(lora, dict):
        raise NotApplicable(f"the final stage {v.final_name!r} has no LoRA (model.lora: null is full "
                            "fine-tuning)")
    return lora


def _has_attn_only(v: View) -> bool:
    targets = _lora(v).get("targets", "all-linear")
    return isinstance(targets, list) and set(targets) <= set(ATTENTION)


def _lora_targets(value) -> Callable[[View], list[dict]]:
    def patch(v: View) -> list[dict]:
        _lora(v)
        return [{"model": {"lora": {"targets": value}}}]
    return patch


#: the shared toggles the core declares (ranks: where they go among the plugins' ones)
CORE: list[SharedToggle] = [
    SharedToggle("truncate_start", "truncation from the start, keeping the end (keep_end)",
                 *_truncate_toggle("keep_end", "keep_start"),
                 "truncating from the end (keep_start) instead of from the start (keep_end)",
                 "truncating from the start (keep_end) instead of the recipe's policy", rank=50,
                 claimed="left truncation (dropping the earliest rounds): 0.890 → 0.885 old LB (16th) [P16]; "
                 "9th and Raja (3rd) truncate left [P9], [R3r]; 1st, 2nd and Mark (3rd) keep the start "
                 "[R1], [R2], [R3m]"),
    SharedToggle("truncate_end", "truncation from the end, keeping the start (keep_start)",
                 *_truncate_toggle("keep_start", "keep_end"),
                 "truncating from the start (keep_end) instead of from the end (keep_start)",
                 "truncating from the end (keep_start) instead of the recipe's policy", rank=60,
                 claimed="no number given; 1st, 2nd and Mark (3rd) keep the start [R1], [R2], [R3m]; the "
                 "opposite, left truncation, took 16th from 0.890 to 0.885 old LB [P16]"),
    SharedToggle("longest_first", "longest-field-first truncation",
                 *_truncate_toggle("longest_first", "keep_start"),
                 "truncating from the end (keep_start) instead of longest field first",
                 "truncating the longest field first instead of the recipe's policy", rank=70,
                 claimed="no number given; the write-up's author truncates whichever of prompt / A / B has "
                 "the most words [JP]; 1st trims the longer answer first [R1]"),
    SharedToggle("head_reinit", "head re-initialisation in stages that start from an earlier stage",
                 _has_reinit, _reinit_off, _reinit_on,
                 "keeping the earlier stage's head instead of re-initialising it (reinit_head: false)",
                 "re-initialising the head in every stage that starts from an earlier one "
                 "(reinit_head: true)", rank=80,
                 claimed="no number given; keeping the pretraining head was \"a tiny bit worse\" (5th) [P5]; "
                 "1st drops the head after post-pretraining [R1]"),
    SharedToggle("softcap_off", "attention logit softcapping turned off",
                 *_softcap_off(),
                 "keeping attention logit softcapping (model.attn_softcap: true)",
                 "turning attention logit softcapping off (model.attn_softcap: false)", rank=100,
                 claimed="≈ +0.002 CV and LB (3rd) [P3]; \"no deterioration\" (5th, comment on [P2]) [P5]; "
                 "\"doesn't have much impact\" for 9B (2nd) [P2]"),
    SharedToggle("int8_inference", "8-bit inference", *_int8_inference(),
                 "predicting in full precision instead of 8-bit (predict.load_in_8bit: false)",
                 "predicting with the backbone in 8-bit (predict.load_in_8bit: true)", rank=130,
                 claimed="8-bit instead of 4-bit: \"no decrease in score\" (9th) [P9], 10 % faster (16th) "
                 "[P16]; 1st predicts in GPTQ 8-bit, no ablation [R1]"),
    SharedToggle("lora_attn_only", "LoRA on the attention projections only", _has_attn_only,
                 _lora_targets("all-linear"), _lora_targets(list(ATTENTION)),
                 "LoRA on all linear layers instead of attention only (targets: all-linear)",
                 "LoRA on the attention projections only (targets: q/k/v/o_proj)", rank=140,
                 claimed="the opposite, adding o/gate/up/down: 0.913 → 0.903 old LB, confounded with alpha "
                 "16 → 4 (16th) [P16]; all linear layers \"worked the best\" (3rd) [P3]"),
]


# ---------------------------------------------------------------- the catalogue of toggles


def declarations(cat: Mapping | None = None) -> list[tuple[SharedToggle, str]]:
    """(toggle, module that declares it) of :data:`CORE` and of the ``SHARED_TOGGLES`` of the module of
    every plugin in the catalogue (importing them), ordered by rank, then in catalogue order. A name
    declared twice, or a declaration that is not a list of :class:`SharedToggle`, is an error naming
    the modules."""
    cat = catalogue() if cat is None else cat
    found: list[tuple[SharedToggle, str]] = [(t, __name__) for t in CORE]
    read: set[str] = set()
    for name in cat:
        module = inspect.getmodule(cat[name])
        if module is None or module.__name__ in read:
            continue
        read.add(module.__name__)
        declared = getattr(module, DECLARATIONS, [])
        if not isinstance(declared, (list, tuple)) or not all(isinstance(t, SharedToggle) for t in declared):
            raise ReplicatorError(f"{module.__name__}.{DECLARATIONS} (plugin {name!r}): expected a list of "
                                  "SharedToggle (replicator.core.lib.toggles)")
        for t in declared:
            if not isinstance(t.claimed, str):
                raise ReplicatorError(f"{module.__name__}.{DECLARATIONS}: shared toggle {t.name!r}: claimed "
                                      f"must be text, got {t.claimed!r}")
        found += [(t, module.__name__) for t in declared]
    found.sort(key=lambda f: f[0].rank)
    first: dict[str, str] = {}
    for t, module in found:
        if t.name in first:
            raise ReplicatorError(f"shared toggle {t.name!r} is declared twice: in {first[t.name]}."
                                  f"{DECLARATIONS} and {module}.{DECLARATIONS}")
        first[t.name] = module
    return found


def collect(cat: Mapping | None = None) -> dict[str, SharedToggle]:
    """name -> toggle, in listing order (:func:`declarations`)."""
    return {t.name: t for t, _ in declarations(cat)}


class Toggles(Mapping[str, SharedToggle]):
    """The shared toggles (:func:`declarations`), collected on first use; :meth:`reload` forgets them."""

    def __init__(self):
        self._found: dict[str, tuple[SharedToggle, str]] | None = None

    def _all(self) -> dict[str, tuple[SharedToggle, str]]:
        if self._found is None:
            self._found = {t.name: (t, module) for t, module in declarations()}
        return self._found

    def reload(self) -> None:
        self._found = None

    def declared_in(self, name: str) -> str:
        """The module that declares toggle ``name`` (a plugin's, or this one)."""
        return self._all()[name][1]

    def __getitem__(self, name: str) -> SharedToggle:
        return self._all()[name][0]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())


SHARED = Toggles()


# ---------------------------------------------------------------- applying toggles


@dataclasses.dataclass(frozen=True)
class Applied:
    name: str
    direction: str | None  # "off" | "on" for a shared toggle, None for a recipe toggle
    patches: list[dict]

    @property
    def label(self) -> str:
        return f"{self.name}:{self.direction}" if self.direction else self.name


#: keys of a recipe toggle that describe it instead of patching the recipe (none is a top-level recipe
#: key): ``about`` (one line a report prints), ``direction`` (``on`` / ``off``: the toggle adds / removes a
#: technique; absent: an alternative or a scale), ``changes`` (changed on purpose: ``data``, ``split``),
#: ``claimed`` (one line: what the write-ups claim the technique is worth, with its source tags)
ABOUT_KEYS = ("about", "direction", "changes", "claimed")


@dataclasses.dataclass(frozen=True)
class ToggleInfo:
    """What a recorded toggle label (``swap:off``, ``lm_off``) or an ad-hoc override means in a report."""

    label: str
    #: one line: what the variant measures
    about: str
    #: "on": the variant adds a technique (its gain is base − variant); "off": it goes without one (gain is
    #: variant − base); None: neither (an alternative model, a scale, an override)
    direction: str | None = None
    #: what it changes on purpose (:data:`~replicator.core.lib.toggles.CHANGES`)
    changes: tuple[str, ...] = ()
    #: "shared", "recipe", "override" or "other_recipe" (a report variant from another recipe than its base)
    kind: str = "recipe"
    #: what the write-ups claim the technique is worth, with its source tags ("" where they say nothing)
    claimed: str = ""

    def to_dict(self) -> dict:
        return {"label": self.label, "about": self.about, "direction": self.direction,
                "changes": list(self.changes), "kind": self.kind, "claimed": self.claimed}


def _direction(value: Any, file: str, key: str) -> str | None:
    """``on`` / ``off`` (YAML 1.1 reads a bare on/off as true/false: either spelling is taken)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "on" if value else "off"
    if value in ("on", "off"):
        return value
    raise RecipeError(file, key, "expected on (the toggle adds a technique) or off (it removes one), got "
                      f"{value!r}")


def _line(toggle: dict, key: str, name: str, file: str) -> str:
    """The toggle's ``key`` (``about``, ``claimed``): one line of text, "" when absent."""
    value = toggle.get(key)
    if value is not None and (not isinstance(value, str) or not value.strip() or "\n" in value.strip()):
        raise RecipeError(file, f"toggles.{name}.{key}", f"expected one line of text, got {value!r}")
    return (value or "").strip()


def _about(name: str, toggle: dict, file: str) -> ToggleInfo:
    about = _line(toggle, "about", name, file)
    claimed = _line(toggle, "claimed", name, file)
    changes = toggle.get("changes") or []
    if isinstance(changes, str):
        changes = [changes]
    if not isinstance(changes, list) or any(c not in CHANGES for c in changes):
        raise RecipeError(file, f"toggles.{name}.changes", f"expected a list of {', '.join(CHANGES)}, got "
                          f"{toggle.get('changes')!r}")
    text = about or f"recipe toggle {name!r} (the recipe does not describe it)"
    return ToggleInfo(name, text, _direction(toggle.get("direction"), file, f"toggles.{name}.direction"),
                      tuple(dict.fromkeys(changes)), "recipe", claimed)


def _checked_toggles(raw: dict, file: str) -> dict:
    named = raw.get("toggles") or {}
    if not isinstance(named, dict):
        raise RecipeError(file, "toggles", "expected a mapping of toggle name -> merge patch")
    for name, toggle in named.items():
        if name in SHARED:
            raise RecipeError(file, f"toggles.{name}", f"{name!r} is a shared toggle (replicator.core.config."
                              f"toggles: {SHARED[name].technique}, the same meaning on every recipe); "
                              "rename this one")
        if isinstance(toggle, dict):
            _about(name, toggle, file)
    return named


def recipe_toggles(raw: dict, file: str) -> dict:
    """The recipe's own ``toggles:`` block, checked (a mapping, no name of a shared toggle, its description
    keys well formed): name -> merge patch, without the description keys (:data:`ABOUT_KEYS`)."""
    return {name: ({k: v for k, v in t.items() if k not in ABOUT_KEYS} if isinstance(t, dict) else t)
            for name, t in _checked_toggles(raw, file).items()}


def recipe_toggle_info(raw: dict, file: str) -> dict[str, ToggleInfo]:
    """name -> :class:`ToggleInfo` of each of the recipe's own toggles (its ``about``, ``direction``,
    ``changes`` and ``claimed`` keys; a toggle without them is said to be undescribed, with no direction)."""
    return {name: _about(name, t if isinstance(t, dict) else {}, file)
            for name, t in _checked_toggles(raw, file).items()}


def describe(label: str, recipe_info: Mapping[str, ToggleInfo] | None = None) -> ToggleInfo:
    """What the recorded toggle ``label`` stands for: a shared toggle's meaning in its direction
    (``swap:off`` -> off, 'removing swap augmentation ...') with its write-ups' claim, a recipe toggle's own
    description from ``recipe_info`` (:func:`recipe_toggle_info`), else a toggle nothing is known about."""
    name, _, direction = label.partition(":")
    if name in SHARED and direction in ("off", "on"):
        t = SHARED[name]
        return ToggleInfo(label, t.meaning(direction), direction, tuple(t.changes), "shared", t.claimed)
    if recipe_info and label in recipe_info:
        return recipe_info[label]
    return ToggleInfo(label, f"recipe toggle {label!r} (its recipe file was not found to describe it)")


def plan_toggle(cfg: dict, name: str, named: dict, file: str) -> Applied:
    """Which patches toggle ``name`` applies to ``cfg`` (and, for a shared one, in which direction)."""
    if name in named:
        return Applied(name, None, [named[name]])
    if name not in SHARED:
        known = [*named, *SHARED]
        raise RecipeError(file, f"toggles.{name}", f"unknown toggle{did_you_mean(name, known)}; recipe "
                          f"toggles: {', '.join(named) or '(none)'}; shared toggles: {', '.join(SHARED)}")
    t = SHARED[name]
    try:
        view = View(cfg, file)
        view.check_applies(t)
        direction = "off" if t.has(view) else "on"
        patches = (t.off if direction == "off" else t.on)(view)
    except NotApplicable as e:
        raise RecipeError(file, f"toggle {name!r}", f"cannot apply to this recipe: {e}") from None
    return Applied(name, direction, patches)


def apply_toggle(cfg: dict, name: str, named: dict, file: str) -> tuple[dict, str]:
    """Apply toggle ``name`` to ``cfg``; return the patched config and the label to record
    (``name`` for a recipe toggle, ``name:off`` / ``name:on`` for a shared one)."""
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
            raise RecipeError(file, f"toggle {name!r}", f"{t.meaning(applied.direction)} did not take "
                              f"effect in the final stage {after.final_name!r}: its stage patch "
                              f"(stages.{after.final_name}) sets the same keys itself; use an override "
                              "instead")
    return out, applied.label


def meaning(label: str) -> str:
    """What a recorded toggle label measured: ``swap:off`` -> 'removing swap augmentation in training
    (...)'."""
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
            view.check_applies(t)
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
