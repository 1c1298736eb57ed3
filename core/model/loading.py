"""Backbone loading: hub id, local path, embedded or tiny model -> sequence classifier with
the recipe's head, LoRA (peft) or full fine-tuning, optional 4/8-bit (bitsandbytes)."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

from replicator.core.config.recipe import ModelConfig
from replicator.core.errors import ReplicatorError
from replicator.core.model.embedded import is_embedded, resolve_embedded
from replicator.core.model.precision import load_dtype
from replicator.core.model.sharding import is_sharded, load_full_state
from replicator.core.model.tensors import HEAD_NAMES, NUM_LABELS, head_module
from replicator.core.model.tiny import is_tiny, resolve_tiny
from replicator.core.util.logs import import_quietly, quiet_transformers

log = logging.getLogger(__name__)


def device_type() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_base(base: str) -> str:
    """Map ``embedded:``/``tiny:`` names to local folders; check local paths; keep hub ids."""
    if is_embedded(base):
        return str(resolve_embedded(base))
    if is_tiny(base):
        return str(resolve_tiny(base))
    if Path(base).expanduser().exists():
        return str(Path(base).expanduser())
    if base.startswith((".", "/", "~")):
        raise ReplicatorError(f"model.base: local path {base!r} does not exist")
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise ReplicatorError(f"model.base: {base!r} is neither a local folder nor reachable: "
                              "HF_HUB_OFFLINE=1. Give a local path, or embedded:gemma-3-270m")
    return base  # a hub id: transformers downloads (or finds it in the HF cache)


def torch_dtype(cfg: ModelConfig):
    """The dtype the backbone's weights load in (``model.dtype``; ``auto``: core/model/precision.py)."""
    return load_dtype(cfg.dtype)


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def model_config(path: str, cfg: ModelConfig):
    """The backbone config with the recipe's attention switches applied."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path, num_labels=NUM_LABELS, revision=cfg.revision)
    if not cfg.attn_softcap:
        if not hasattr(config, "attn_logit_softcapping"):
            raise ReplicatorError(f"model.attn_softcap: {cfg.base} ({config.model_type}) has no attention "
                                  "softcapping")
        config.attn_logit_softcapping = None
    if not cfg.sliding_window:
        if getattr(config, "layer_types", None) is None:
            raise ReplicatorError(f"model.sliding_window: {cfg.base} ({config.model_type}) has no "
                                  "sliding-window layers")
        config.layer_types = ["full_attention"] * len(config.layer_types)
    return config


def _freeze(model, n: int, lora: bool) -> dict:
    """Freeze embeddings + the first ``n`` decoder layers (full fine-tuning); LoRA uses
    layers_to_transform."""
    layers = next((m for name, m in model.named_modules() if name.endswith("layers") and len(m) > 0), None)
    if layers is None or n > len(layers):
        raise ReplicatorError(f"model.freeze_layers: {n} is more than the model's {len(layers or [])} layers")
    if not lora:
        model.get_input_embeddings().requires_grad_(False)
        for layer in list(layers)[:n]:
            layer.requires_grad_(False)
    return {"num_layers": len(layers)}


def _quantization(cfg: ModelConfig):
    from transformers import BitsAndBytesConfig

    # bitsandbytes warns on every 8-bit matmul of fp32 inputs (thousands of lines per prediction pass)
    warnings.filterwarnings("ignore", message="MatMul8bitLt: inputs will be cast")

    if cfg.load_in_4bit:
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                  bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch_dtype(cfg))
    return BitsAndBytesConfig(load_in_8bit=True)


def _load_backbone(cfg: ModelConfig, path: str):
    """The sequence classifier of ``path`` (quantized when asked), transformers' load report silenced."""
    from transformers import AutoModelForSequenceClassification

    kwargs: dict = {"config": model_config(path, cfg), "dtype": torch_dtype(cfg)}
    if cfg.attn_implementation != "auto":
        kwargs["attn_implementation"] = cfg.attn_implementation
    if cfg.revision:
        kwargs["revision"] = cfg.revision
    if cfg.load_in_4bit or cfg.load_in_8bit:
        kwargs["quantization_config"] = _quantization(cfg)
    saved = saved_num_labels(path, cfg)
    if saved not in (None, NUM_LABELS):  # a reward model (1 output, 3rd [P3]) or another classifier
        kwargs.update(ignore_mismatched_sizes=True, output_loading_info=True)
    try:
        with quiet_transformers():  # the load report lists the new head as "missing": expected
            model = AutoModelForSequenceClassification.from_pretrained(path, **kwargs)
    except OSError as e:
        raise ReplicatorError(f"model.base: cannot load {cfg.base!r}: {e}") from None
    if not isinstance(model, tuple):
        return model
    model, loading = model
    mismatched = [k for k, *_ in loading.get("mismatched_keys", [])]
    other = [k for k in mismatched if k.split(".")[0] not in HEAD_NAMES]
    if other:
        raise ReplicatorError(f"model.base: {cfg.base!r} has weights of another shape than its config "
                              f"outside the classification head: {', '.join(other[:5])}")
    log.info("%s: its classification head has %d output(s); a new %d-way head replaces it (%s)", cfg.base,
             saved, NUM_LABELS, ", ".join(mismatched) or "no head weights saved")
    return model


def saved_num_labels(path: str, cfg: ModelConfig) -> int | None:
    """The number of outputs of the checkpoint's own classification head (its config), None when its
    config says nothing of one (a causal LM: the head is new anyway)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path, revision=cfg.revision)
    if not any(a.endswith("ForSequenceClassification") for a in getattr(config, "architectures", None) or []):
        return None
    return config.num_labels


def _replace_head(model, plugins, dtype):
    """The ``head`` hook's module in place of the model's head; (head name, its aux loss or None)."""
    name, old = head_module(model)
    new = plugins.one("head", hidden_size=model.config.hidden_size, num_labels=NUM_LABELS, model=model)
    if new is None:
        return name, None
    setattr(model, name, new.to(dtype=old.weight.dtype if hasattr(old, "weight") else dtype))
    return name, getattr(new, "aux_loss", None)


@contextlib.contextmanager
def library_deprecations_ignored() -> Iterator[None]:
    """Inside the block, no FutureWarning for transformers APIs that peft and optimum still call
    (``is_gradient_checkpointing``, transformers 5): not the user's business, nothing a recipe can change."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated",
                                category=FutureWarning)
        yield


def _add_lora(model, cfg: ModelConfig, head: str, train: bool, num_layers: int | None):
    import torch

    import_quietly("peft")  # imports bitsandbytes when installed, which prints about its CPU kernels
    from peft import LoraConfig, TaskType, get_peft_model, prepare_model_for_kbit_training

    keep_probes_off("peft")
    if (cfg.load_in_4bit or cfg.load_in_8bit) and train:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    targets = cfg.lora.targets
    if cfg.freeze_layers and isinstance(targets, str):  # peft needs names with layers_to_transform
        targets = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                          if isinstance(m, torch.nn.Linear) and ".layers." in n})
    lora_config = LoraConfig(task_type=TaskType.SEQ_CLS, r=cfg.lora.r, lora_alpha=cfg.lora.alpha,
                             lora_dropout=cfg.lora.dropout, target_modules=targets, modules_to_save=[head],
                             layers_to_transform=(list(range(cfg.freeze_layers, num_layers))
                                                  if cfg.freeze_layers else None))
    with library_deprecations_ignored():
        return get_peft_model(model, lora_config)


#: Where peft (for every layer LoRA wraps: a GPT-QModel, AWQ or torchao layer?) and accelerate
#: (``unwrap_model``: a DeepSpeed engine?) ask whether a library is installed, then import it to run an
#: ``isinstance`` check: (module, probe function, package). Those imports print (GPT-QModel's banner and
#: "Python GIL is enabled", DeepSpeed's "Setting accelerator to CPU"), add a root log handler (GPT-QModel)
#: and change the environment, on every run that uses none of them. An object can only be of a library's
#: type once that library is imported, so :func:`keep_probes_off` makes these probes answer "not
#: available" until then. (torchao is imported by transformers' model code anyway: see
#: :func:`replicator.core.util.logs.quiet_transformers`.)
PROBES = (
    ("peft.tuners.lora.gptq", "is_gptqmodel_available", "gptqmodel"),
    ("peft.tuners.lora.awq", "is_gptqmodel_available", "gptqmodel"),
    ("peft.utils.other", "is_gptqmodel_available", "gptqmodel"),
    ("peft.utils.quantization_utils", "is_gptqmodel_available", "gptqmodel"),
    ("peft.tuners.lora.torchao", "is_torchao_available", "torchao"),
    ("peft.utils.quantization_utils", "is_torchao_available", "torchao"),
    ("accelerate.utils.other", "is_deepspeed_available", "deepspeed"),
)


def _once_imported(probe, package: str):
    def available(*args, **kwargs):
        return package in sys.modules and probe(*args, **kwargs)

    available.replicator_probe = True
    return available


def keep_probes_off(prefix: str) -> None:
    """Wrap the :data:`PROBES` of the modules under ``prefix`` (``peft``, ``accelerate``) so that they import
    nothing that is not imported yet (idempotent). Where a probe is not found (another version of the
    library), its package is imported up front, its output captured (:func:`import_quietly`)."""
    for module, name, package in PROBES:
        if not module.startswith(prefix + "."):
            continue
        try:
            mod = importlib.import_module(module)
        except ImportError:
            mod = None
        probe = getattr(mod, name, None)
        if probe is None:
            import_quietly(package)
        elif not getattr(probe, "replicator_probe", False):
            setattr(mod, name, _once_imported(probe, package))


def load_model(cfg: ModelConfig, plugins, train: bool = True, load_in_8bit: bool | None = None):
    """Return (model, tokenizer, info) ready for training or inference (``load_in_8bit`` overrides the
    recipe)."""
    if importlib.util.find_spec("accelerate") is not None:  # the trainer's unwrap_model
        keep_probes_off("accelerate")
    if load_in_8bit is not None and load_in_8bit != cfg.load_in_8bit:
        cfg = dataclasses.replace(cfg, load_in_8bit=load_in_8bit,
                                  load_in_4bit=False if load_in_8bit else cfg.load_in_4bit)
    path = resolve_base(cfg.base)
    tokenizer = load_tokenizer(path)
    model = _load_backbone(cfg, path)
    model.config.pad_token_id = tokenizer.pad_token_id
    dtype = torch_dtype(cfg)
    name, aux_loss = _replace_head(model, plugins, dtype)
    attach = getattr(getattr(model, name), "attach_tokenizer", None)
    if attach is not None:  # a head that reads the token ids (response_pool: its span markers)
        attach(tokenizer)
    if cfg.gradient_checkpointing and train:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    layers_info = _freeze(model, cfg.freeze_layers, cfg.lora is not None) if cfg.freeze_layers else {}
    if cfg.lora is not None:
        model = _add_lora(model, cfg, name, train, layers_info.get("num_layers"))
    elif (cfg.load_in_4bit or cfg.load_in_8bit) and train:
        raise ReplicatorError("model: full fine-tuning of a 4/8-bit model is not possible; set model.lora")
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in model.parameters())
    info = {"path": path, "head": name, "trainable_params": n_train, "all_params": n_all,
            "dtype": str(dtype).replace("torch.", "")}
    if aux_loss is not None:
        info["aux_loss"] = aux_loss
    log.info("%s -> %s: %s trainable of %s params, %s", cfg.base, type(model).__name__, f"{n_train:,}",
             f"{n_all:,}", info["dtype"])
    return model, tokenizer, info


def trained_model(cfg: ModelConfig, plugins, weights: Path, load_in_8bit: bool | None = None):
    """(model, tokenizer): the model built for inference with the trained tensors of ``weights`` loaded."""
    from safetensors.torch import load_file

    model, tokenizer, _ = load_model(cfg, plugins, train=False, load_in_8bit=load_in_8bit)
    load_trainable(model, load_file(str(weights)), where=str(weights))
    return model, tokenizer


def load_trainable(model, state: dict, skip_head: bool = False, where: str = "") -> int:
    """Load tensors saved by :func:`replicator.core.model.tensors.trainable_state`; every saved key must
    exist in the model."""
    params = dict(model.named_parameters())  # a sharded model's are whole-shaped (DTensor)
    chosen = {}
    for k, v in state.items():
        if skip_head and any(f".{h}." in f".{k}" for h in HEAD_NAMES):
            continue
        if k not in params:
            raise ReplicatorError(f"{where}: saved weight {k!r} does not exist in the model; "
                                  "were the stages built with different LoRA or head settings?")
        if params[k].shape != v.shape:
            raise ReplicatorError(f"{where}: {k} has shape {tuple(v.shape)} saved, {tuple(params[k].shape)} "
                                  "in the model")
        chosen[k] = v
    if is_sharded(model):  # every process holds the whole file and keeps its shard
        load_full_state(model, {k: v.to(params[k].dtype) for k, v in chosen.items()})
    else:
        for k, v in chosen.items():
            params[k].data.copy_(v.to(params[k].device, params[k].dtype))
    return len(chosen)
