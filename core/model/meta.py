"""Models without weights: the sequence classifier of a recipe's ``model.base`` built on torch's meta
device, and what ``replicate plan`` needs from it (parameter counts, layer shapes).

No weight is read and nothing is downloaded. Hub models come from the small configs shipped in
``core/lib/model_configs/`` (the architecture fields of each published ``config.json``; a file's
``_models`` lists the hub ids it stands for); ``tiny:`` bases from their local config
(:mod:`replicator.core.model.tiny`, built in milliseconds); a local folder from its ``config.json``.

The model is the runner's: ``AutoModelForSequenceClassification`` with 3 labels, so the backbone
plus a classification head and no LM head (for a model with untied embeddings, the published size
counts an LM head of ``vocab x hidden`` that this model does not have), and the recipe's ``head``
plugin in place of the default head when it gives one.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from replicator.core.errors import RecipeError
from replicator.core.lib.model_names import CONFIG_DIR, shipped_configs
from replicator.core.model.tensors import NUM_LABELS, head_module
from replicator.core.model.tiny import is_tiny, resolve_tiny


def load_config(base: str, file: str, key: str):
    """The transformers config of ``base`` (3 labels), from a shipped, tiny or local config; RecipeError
    naming ``file`` and ``key`` for a base that has none."""
    from transformers import AutoConfig

    if is_tiny(base):
        return AutoConfig.from_pretrained(resolve_tiny(base), num_labels=NUM_LABELS)
    known = shipped_configs()
    if base in known:
        raw = json.loads(known[base].read_text(encoding="utf-8"))
        fields = {k: v for k, v in raw.items() if not k.startswith("_")}
        fields["num_labels"] = NUM_LABELS
        return AutoConfig.for_model(fields.pop("model_type"), **fields)
    path = Path(base).expanduser()
    if (path / "config.json").is_file():
        return AutoConfig.from_pretrained(path, num_labels=NUM_LABELS)
    raise RecipeError(file, key, f"no architecture known for {base!r} (a plan reads no weights and "
                      f"downloads nothing): add its config.json fields to {CONFIG_DIR}, give a local folder, "
                      f"or use one of {', '.join(sorted(known))}, tiny:<arch>")


@dataclasses.dataclass(frozen=True)
class Counts:
    """What the plan needs of a sequence classifier (counts in parameters)."""

    arch: str           #: class name, e.g. Gemma2ForSequenceClassification
    model_type: str     #: e.g. gemma2
    attention: str      #: the attention transformers picks (sdpa, or eager where it has no SDPA: Gemma-2)
    softcap: bool       #: attention logit softcapping in the config (Gemma-2)
    layer_class: str    #: the decoder layer class (what FSDP wraps), e.g. Gemma2DecoderLayer
    total: int          #: every parameter: backbone + head
    head: int           #: of which the classification head (the recipe's head plugin, or the default)
    embeddings: int     #: of which the input embeddings
    quantizable: int    #: of which the decoder layers' Linear weights (what bitsandbytes quantizes)
    layer_params: tuple[int, ...]  #: parameters of each decoder layer
    linears: tuple[tuple[str, int, int], ...]  #: (name, in, out) of each Linear of one decoder layer
    hidden: int
    heads: int          #: attention heads
    q_dim: int          #: attention heads x head dim
    kv_dim: int         #: key/value heads x head dim
    intermediate: int
    lm_head: int        #: parameters of an LM head the published size counts and this model lacks (0: tied)

    @property
    def layers(self) -> int:
        return len(self.layer_params)


def build_meta(config, plugins=None):
    """The runner's sequence classifier of ``config`` on the meta device, with the ``head`` plugin's
    module in place of the default head when the recipe's head plugin gives one."""
    import torch
    from transformers import AutoModelForSequenceClassification

    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(config)
        if plugins is not None:
            name, _ = head_module(model)
            new = plugins.one("head", hidden_size=config.hidden_size, num_labels=NUM_LABELS, model=model)
            if new is not None:
                setattr(model, name, new)
    return model


def decoder_layers(model):
    """The ModuleList of decoder layers (the first non-empty module named ``...layers``)."""
    layers = next((m for n, m in model.named_modules() if n.endswith("layers") and len(m) > 0), None)
    if layers is None:
        raise ValueError(f"{type(model).__name__}: no decoder layers found")
    return layers


def counts(model) -> Counts:
    import torch

    cfg = model.config
    layers = decoder_layers(model)
    linears = tuple((n, m.in_features, m.out_features) for n, m in layers[0].named_modules()
                    if isinstance(m, torch.nn.Linear))
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    tied = bool(getattr(cfg, "tie_word_embeddings", False))
    return Counts(
        arch=type(model).__name__,
        model_type=cfg.model_type,
        attention=str(getattr(cfg, "_attn_implementation", None) or "eager"),
        softcap=getattr(cfg, "attn_logit_softcapping", None) is not None,
        layer_class=type(layers[0]).__name__,
        total=sum(p.numel() for p in model.parameters()),
        head=sum(p.numel() for p in head_module(model)[1].parameters()),
        embeddings=model.get_input_embeddings().weight.numel(),
        quantizable=sum(m.weight.numel() for m in layers.modules() if isinstance(m, torch.nn.Linear)),
        layer_params=tuple(sum(p.numel() for p in layer.parameters()) for layer in layers),
        linears=linears,
        hidden=cfg.hidden_size, heads=heads, q_dim=heads * head_dim, kv_dim=kv_heads * head_dim,
        intermediate=cfg.intermediate_size,
        lm_head=0 if tied else cfg.vocab_size * cfg.hidden_size,
    )


def lora_targets(c: Counts, targets: str | list[str], file: str, key: str) -> list[tuple[str, int, int]]:
    """The (name, in, out) of the Linear modules of one decoder layer that LoRA adapts: every one for
    ``all-linear`` (peft leaves the head out, and the head is not in a decoder layer), else those whose
    last name part is listed; a listed name no layer has is a RecipeError (peft refuses it too)."""
    if targets == "all-linear":
        return list(c.linears)
    names = [targets] if isinstance(targets, str) else list(targets)
    have = {n.rsplit(".", 1)[-1] for n, _, _ in c.linears}
    missing = [t for t in names if t not in have]
    if missing:
        raise RecipeError(file, key, f"{', '.join(missing)}: no such Linear module in {c.layer_class} "
                          f"(its Linear modules: {', '.join(sorted(have))})")
    return [lin for lin in c.linears if lin[0].rsplit(".", 1)[-1] in names]


def trainable(c: Counts, lora, freeze_layers: int) -> tuple[int, int]:
    """(trainable parameters, of which LoRA adapters), as :func:`replicator.core.model.loading.load_model`
    makes them. LoRA: ``r x (in + out)`` per adapted Linear of the layers from ``freeze_layers`` on
    (``layers_to_transform``), plus a trainable copy of the head (``modules_to_save``). Full
    fine-tuning: everything but the input embeddings and the first ``freeze_layers`` layers when
    ``freeze_layers`` > 0. ``lora`` is ``(r, [(name, in, out), ...])`` or None."""
    if freeze_layers > c.layers:
        raise ValueError(f"freeze_layers {freeze_layers} is more than the model's {c.layers} layers")
    if lora is not None:
        r, targets = lora
        adapters = (c.layers - freeze_layers) * sum(r * (i + o) for _, i, o in targets)
        return adapters + c.head, adapters
    if not freeze_layers:
        return c.total, 0
    return c.total - c.embeddings - sum(c.layer_params[:freeze_layers]), 0
