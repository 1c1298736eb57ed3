"""The 16th place's auxiliary heads: predict which models wrote responses A and B."""

from __future__ import annotations

import dataclasses
import re
from typing import Literal

from replicator.core.hookspecs import hookimpl
from replicator.core.lib.toggles import NotApplicable, SharedToggle, ToggleView, plugins_patch
from replicator.core.params import ParamError, param

OTHER = "other"
IGNORE_INDEX = -100

#: Model families the auxiliary heads classify by default (our list: the frequent arena models of
#: 2023-24 after :func:`model_family`); every other known name is ``other``.
DEFAULT_FAMILIES = [
    "gpt-4", "gpt-3.5-turbo",
    "claude-v1", "claude-instant-v1", "claude-2", "claude-3-opus", "claude-3-sonnet", "claude-3-haiku",
    "gemini-pro", "gemini-pro-dev-api", "gemini-1.5-pro-api", "bard", "palm-2",
    "llama-2-70b-chat", "llama-2-13b-chat", "llama-2-7b-chat", "llama-3-70b-instruct", "llama-3-8b-instruct",
    "codellama-34b-instruct", "vicuna-33b", "vicuna-13b", "vicuna-7b",
    "mixtral-8x7b-instruct", "mistral-7b-instruct", "mistral-medium", "mistral-large",
    "gemma-7b-it", "gemma-2b-it", "qwen1.5-72b-chat", "qwen-14b-chat", "yi-34b-chat",
    "command-r", "command-r-plus", "dbrx-instruct", "wizardlm-70b", "wizardlm-13b",
    "zephyr-7b-beta", "openchat-3.5", "starling-lm-7b-alpha", "tulu-2-dpo-70b",
    "koala-13b", "alpaca-13b", "oasst-pythia-12b", "chatglm-6b", "fastchat-t5-3b",
    "mpt-7b-chat", "mpt-30b-chat", "rwkv-4-raven-14b", "stablelm-tuned-alpha-7b", "dolly-v2-12b",
    "llama-13b", "guanaco-33b", "pplx-70b-online", "pplx-7b-online",
]

#: The model names of the competition's train.csv (64; the shared data's 1,478 rows have them all).
COMPETITION_MODELS = [
    "RWKV-4-Raven-14B", "alpaca-13b", "chatglm-6b", "chatglm2-6b", "chatglm3-6b", "claude-1", "claude-2.0",
    "claude-2.1", "claude-instant-1", "codellama-34b-instruct", "deepseek-llm-67b-chat", "dolly-v2-12b",
    "dolphin-2.2.1-mistral-7b", "falcon-180b-chat", "fastchat-t5-3b", "gemini-pro", "gemini-pro-dev-api",
    "gpt-3.5-turbo-0125", "gpt-3.5-turbo-0314", "gpt-3.5-turbo-0613", "gpt-3.5-turbo-1106",
    "gpt-4-0125-preview", "gpt-4-0314", "gpt-4-0613", "gpt-4-1106-preview", "gpt4all-13b-snoozy",
    "guanaco-33b", "koala-13b", "llama-13b", "llama-2-13b-chat", "llama-2-70b-chat", "llama-2-7b-chat",
    "llama2-70b-steerlm-chat", "mistral-7b-instruct", "mistral-7b-instruct-v0.2", "mistral-medium",
    "mixtral-8x7b-instruct-v0.1", "mpt-30b-chat", "mpt-7b-chat", "nous-hermes-2-mixtral-8x7b-dpo",
    "oasst-pythia-12b", "openchat-3.5", "openchat-3.5-0106", "openhermes-2.5-mistral-7b", "palm-2",
    "pplx-70b-online", "pplx-7b-online", "qwen-14b-chat", "qwen1.5-4b-chat", "qwen1.5-72b-chat",
    "qwen1.5-7b-chat", "solar-10.7b-instruct-v1.0", "stablelm-tuned-alpha-7b", "starling-lm-7b-alpha",
    "stripedhyena-nous-7b", "tulu-2-dpo-70b", "vicuna-13b", "vicuna-33b", "vicuna-7b", "wizardlm-13b",
    "wizardlm-70b", "yi-34b-chat", "zephyr-7b-alpha", "zephyr-7b-beta",
]

_DATE = re.compile(r"-(\d{8}|\d{4}-\d{2}-\d{2}|\d{4})$")  # -20240229, -2024-04-09, -0613
_TAG = re.compile(r"-(preview|latest)$")
_VERSION = re.compile(r"-v\d+(\.\d+)*$")  # mixtral-8x7b-instruct-v0.1


def model_family(name: str | None) -> str | None:
    """Normalise an arena model name to its family; None for an unknown (missing or blank) name.

    Rules, in order (the 16th place's normalisation is known only from a third-party copy
    [P16] *(secondary)*: gpt-4* -> gpt-4, gpt-3.5* -> gpt-3.5-turbo, claude-1 -> claude-v1, ...;
    the rest is ours):

    1. lower-case and strip;
    2. ``gpt-4*`` -> ``gpt-4`` (gpt-4o and gpt-4-turbo included); ``gpt-3.5*`` -> ``gpt-3.5-turbo``;
       ``claude-instant-1*`` / ``claude-instant-v1*`` -> ``claude-instant-v1``; ``claude-1*`` /
       ``claude-v1*`` -> ``claude-v1``; ``claude-2*`` -> ``claude-2``;
    3. otherwise strip, repeatedly, a trailing ``-preview``/``-latest`` tag, a date
       (``-20240229``, ``-2024-04-09``, ``-0613``) and a version (``-v0.1``):
       ``claude-3-opus-20240229`` -> ``claude-3-opus``,
       ``gemini-1.5-pro-api-0409-preview`` -> ``gemini-1.5-pro-api``,
       ``mixtral-8x7b-instruct-v0.1`` -> ``mixtral-8x7b-instruct``, ``openchat-3.5-0106`` -> ``openchat-3.5``.
    """
    if name is None:
        return None
    n = str(name).strip().lower()
    if not n:
        return None
    for prefixes, family in ((("gpt-4",), "gpt-4"), (("gpt-3.5",), "gpt-3.5-turbo"),
                             (("claude-instant-1", "claude-instant-v1"), "claude-instant-v1"),
                             (("claude-1", "claude-v1"), "claude-v1"), (("claude-2",), "claude-2")):
        if n.startswith(prefixes):
            return family
    while True:
        m = _TAG.sub("", n)
        m = _DATE.sub("", m)
        m = _VERSION.sub("", m)
        if m == n or not m:
            return n
        n = m


def arena_name(name: str | None) -> str | None:
    """A model name as the 16th place's normalisation is quoted [P16] *(secondary copy)*: lower-cased,
    ``gpt-4*`` -> ``gpt-4``, ``gpt-3.5*`` -> ``gpt-3.5-turbo``, ``claude-1`` -> ``claude-v1`` "...", read
    here as: ``claude-instant-1`` -> ``claude-instant-v1`` too (the 33k set's spellings), every other name
    kept as it is; None for a missing or blank name. The competition's 64 names give 58 classes
    (:data:`ARENA_NAMES`), the number the copy states; every name of the 33k set is one of them."""
    if name is None:
        return None
    n = str(name).strip().lower()
    if not n:
        return None
    if n.startswith("gpt-4"):
        return "gpt-4"
    if n.startswith("gpt-3.5"):
        return "gpt-3.5-turbo"
    return {"claude-1": "claude-v1", "claude-instant-1": "claude-instant-v1"}.get(n, n)


#: The 16th place's 58 model classes [P16] (secondary copy; its list is not known): the competition's
#: 64 model names under :func:`arena_name`.
ARENA_NAMES = sorted({arena_name(n) for n in COMPETITION_MODELS})
NAMINGS = {"families": model_family, "arena": arena_name}


def family_index(name: str | None, families: list[str], naming: str = "families") -> int:
    """Class index of a model name: its family's position (``naming`` families: :func:`model_family`;
    arena: :func:`arena_name`), then ``len(families)`` for "other" (families) or :data:`IGNORE_INDEX`
    (arena: no "other" class), and :data:`IGNORE_INDEX` for an unknown name (the row is left out of the
    auxiliary loss)."""
    fam = NAMINGS[naming](name)
    if fam is None:
        return IGNORE_INDEX
    try:
        return families.index(fam)
    except ValueError:
        return len(families) if naming == "families" else IGNORE_INDEX


def _module(hidden_size: int, num_labels: int, families: list[str], weight: float, init: str, std: float,
            naming: str = "families"):
    import torch

    class AuxModelHeadsModule(torch.nn.Module):
        """Three bias-free Linear heads on the same hidden state: preference (3), model_a family
        (K + 1 with "other"; K with naming arena), model_b (idem). Output columns:
        [pref | model_a | model_b]."""

        def __init__(self):
            super().__init__()
            k = len(families) + (1 if naming == "families" else 0)
            self.families, self.aux_weight, self.num_labels, self.k = list(families), weight, num_labels, k
            self.naming = naming
            self.pref = torch.nn.Linear(hidden_size, num_labels, bias=False)
            self.model_a = torch.nn.Linear(hidden_size, k, bias=False)
            self.model_b = torch.nn.Linear(hidden_size, k, bias=False)
            for layer in (self.pref, self.model_a, self.model_b):
                torch.nn.init.normal_(layer.weight, std=std)
            if init == "zeros":
                torch.nn.init.zeros_(self.pref.weight)

        def forward(self, hidden):
            return torch.cat([self.pref(hidden), self.model_a(hidden), self.model_b(hidden)], dim=-1)

        def aux_targets(self, rows, device):
            a = [family_index(r.get("model_a"), self.families, self.naming) for r in rows]
            b = [family_index(r.get("model_b"), self.families, self.naming) for r in rows]
            return (torch.tensor(a, dtype=torch.long, device=device),
                    torch.tensor(b, dtype=torch.long, device=device))

        def aux_loss(self, logits, batch):
            """weight * CE(model_a) + weight * CE(model_b); rows with unknown names are ignored.

            A pure function of ``logits`` and ``batch["rows"]`` (the runner may call it on a copy
            of this module made by peft's ``modules_to_save``)."""
            import torch.nn.functional as F

            p, k = self.num_labels, self.k
            ta, tb = self.aux_targets(batch["rows"], logits.device)
            total = logits.new_zeros((), dtype=torch.float32)
            for cols, tgt in ((slice(p, p + k), ta), (slice(p + k, p + 2 * k), tb)):
                if (tgt != IGNORE_INDEX).any():
                    total = total + self.aux_weight * F.cross_entropy(logits[:, cols].float(), tgt,
                                                                  ignore_index=IGNORE_INDEX)
            return total

    return AuxModelHeadsModule()


@dataclasses.dataclass(frozen=True)
class AuxModelHeads:
    """Preference head plus two auxiliary heads that predict the model families of A and B
    (16th place [P16]: "2 auxiliary heads predicting model_a and model_b identity", dropped at
    inference; +0.001 there, "didn't help" for 3rd place [P3]).

    The module outputs ``3 + 2(K+1)`` logits per position (K = ``len(families)``, plus "other");
    the runner uses only the first 3 at prediction, so the auxiliary heads are dropped at
    inference by construction, and the auxiliary weights cannot change predicted probabilities
    (separate Linear layers). Training adds ``aux_loss`` = ``weight``·CE(model_a) +
    ``weight``·CE(model_b) to the ``loss`` hook's value; weight 0.1 and the normalisation to
    families (:func:`model_family`) come from a third-party copy of 16th's code [P16]
    *(secondary)*. That copy has 58 classes, whose list is unknown here. ``naming: families`` (default)
    classifies our ``families`` list (54 families + "other" = 55 classes, :func:`model_family`);
    ``naming: arena`` classifies the 58 classes that the copy's quoted rule gives on the competition's
    64 model names (:data:`ARENA_NAMES`, :func:`arena_name`; no "other" class: a name outside them is
    ignored). Rows whose model name is unknown (None or blank, e.g. test rows or external data) are
    ignored in the auxiliary loss (``ignore_index``); a swapped row's names are swapped with its
    responses (``swap_row``).
    """

    families: list[str] = param(DEFAULT_FAMILIES, "model families the aux heads classify (others -> "
                                                  "'other'); naming families only")
    naming: Literal["families", "arena"] = param(
        "families", "families: our family normalisation and the families list (+ 'other'); arena: the 58 "
                    "classes of [P16]'s third-party copy (the competition's 64 names, gpt-4* and gpt-3.5* "
                    "merged; families unused)")
    weight: float = param(0.1, "weight of each auxiliary cross-entropy ([P16] secondary copy: 0.1)", ge=0)
    init: Literal["normal", "zeros"] = param(
        "normal", "preference head init: normal (std = model's initializer_range) | zeros (start uniform)")

    def __post_init__(self):
        fams = [f.strip().lower() for f in self.families]
        if len(set(fams)) != len(fams) or OTHER in fams or not all(fams):
            raise ParamError("families",
                             "families must be distinct, non-empty, lower-case names other than 'other'")
        if fams != list(self.families):
            raise ParamError("families",
                             f"families must be given normalised (lower-case, stripped): {self.families}")
        if self.naming == "arena" and list(self.families) != DEFAULT_FAMILIES:
            raise ParamError("families", "naming arena classifies its own 58 names (ARENA_NAMES): leave "
                                         "families out or use naming families")

    @hookimpl
    def head(self, hidden_size, num_labels, model):
        std = float(getattr(getattr(model, "config", None), "initializer_range", 0.02) or 0.02)
        classes = ARENA_NAMES if self.naming == "arena" else list(self.families)
        return _module(hidden_size, num_labels, classes, self.weight, self.init, std, self.naming)


# ---------------------------------------------------------------- shared toggle: aux_names (vs default_head)

#: this plugin's preference-head ``init`` for default_head's, and back
_INIT_TO_AUX = {"model": "normal", "zeros": "zeros"}
_INIT_FROM_AUX = {"normal": "model", "zeros": "zeros"}


def _has_aux(v: ToggleView) -> bool:
    return v.plugins[v.one_by_hook("head")].get("use") == "aux_model_heads"


def _aux_off(v: ToggleView) -> list[dict]:
    alias = v.one_by_hook("head")
    return [plugins_patch({alias: {"use": "default_head", "init": _INIT_FROM_AUX[v.params(alias).init]}})]


def _aux_on(v: ToggleView) -> list[dict]:
    def block(alias: str) -> dict:
        init = v.params(alias).init
        if init not in _INIT_TO_AUX:  # a probed head (init: lp) is default_head's alone
            raise NotApplicable(f"{v.at('plugins.' + alias + '.init')} is {init}: the auxiliary heads start "
                                f"from {' or '.join(_INIT_TO_AUX.values())} only")
        return {"use": "aux_model_heads", "init": _INIT_TO_AUX[init]}

    return v.replace_provider("head", "default_head", block,
                              "aux_model_heads replaces the preference head, so it is defined from "
                              "default_head only")


SHARED_TOGGLES = [
    SharedToggle("aux_names", "auxiliary model-name heads", _has_aux, _aux_off, _aux_on,
                 "removing the auxiliary model-name heads (default_head)",
                 "adding auxiliary model-name heads (aux_model_heads instead of default_head)", rank=90,
                 claimed="3 heads: 0.891 → 0.890 old LB, +0.001 (16th) [P16]; \"didn't help\" (3rd) [P3]"),
]
