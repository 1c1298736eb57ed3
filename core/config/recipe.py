"""Recipes: YAML -> validated, resolved configuration. No torch import here.

Resolution order: the recipe file, then its named toggles (``-t``) in the order given, then CLI
overrides ``a.b=value``; toggles and overrides are JSON merge patches (RFC 7396: ``null``
deletes, mappings merge, anything else replaces; a changed ``use:`` replaces the whole plugin
block). Each stage of ``stages:`` is then a patch over the result (without ``stages`` and
``toggles``); a recipe without ``stages:`` has one stage, ``main``.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from pathlib import Path
from typing import Any, Literal

import yaml

from replicator.core.config.bases import check_base
from replicator.core.config.canonical import complete_config, hash_of
from replicator.core.config.catalogue import build_plugins, catalogue
from replicator.core.config.patch import merge_patch, parse_override
from replicator.core.config.recipe_files import find_recipe, read_recipe
from replicator.core.config.sections import check_sections
from replicator.core.config.toggles import apply_toggle, recipe_toggles
from replicator.core.errors import RecipeError
from replicator.core.params import ParamError, build, check_params, did_you_mean, param
from replicator.core.util import tracking

# ---------------------------------------------------------------- schema of the core sections

#: the smallest token budget a row may be given (below it not even a prompt template fits)
MIN_LENGTH = 8


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    r: int = param(16, "LoRA rank", ge=1)
    alpha: float = param(32, "LoRA alpha (scaling = alpha / r)", gt=0)
    dropout: float = param(0.05, "dropout on the LoRA input", ge=0, lt=1)
    targets: str | list[str] = param("all-linear", "'all-linear' or a list of module names (q_proj, ...)")


@dataclasses.dataclass(frozen=True)
class FeaturesConfig:
    """A frozen-backbone stage (:mod:`replicator.core.stages.frozen_features`): each response encoded apart, a
    logistic-regression head on the pooled hidden states (+ length features)."""

    layers: list[int] = param([9], "hidden-state layers to pool (0 = embeddings, -1 = last)")
    pool: Literal["mean", "last", "mean+last"] = param(
        "mean", "mean of the response tokens and/or the last token")
    max_length: int = param(256, "token budget per (prompt, response) text", ge=MIN_LENGTH)
    prompt_tokens: int = param(64, "the prompt's last N tokens before the response (more when the response "
                                   "is short)", ge=0)
    batch_tokens: int = param(4096, "encoding batch size by padded tokens", ge=1)
    shard_size: int = param(512, "texts per cache shard (what an interrupted run keeps)", ge=1)
    lm: bool = param(True, "false: no model at all, the head reads the length and text features only "
                           "(ablation)")
    pca: int = param(12, "project the vectors on their first N principal components (fitted on the training "
                         "responses; 0 = raw vectors)", ge=0)
    lengths: bool = param(True, "add the length features of the length baseline to the head's inputs")
    raw_diffs: bool = param(False, "with `lengths`: keep the length baseline's raw A - B count differences "
                                   "(characters, words, ...); heavy-tailed, they extrapolate on texts longer "
                                   "than the training rows' (false: the log counts and log-ratios only)")
    clip: bool = param(True, "clip each head input to its range over the training rows (both orders) before "
                             "the regression: an input beyond any training row's reads as the largest seen, "
                             "not as an extrapolation")
    text: bool = param(True, "add style counts (refusal, bold, headers, ?, digits, paragraphs, links) and "
                             "pair features (word overlap, identical, both refuse)")
    C: float | None = param(None, "inverse L2 strength of the head; null = chosen by grouped CV on the "
                                  "training rows", gt=0)
    c_grid: list[float] = param([0.001, 0.002, 0.003, 0.005, 0.01, 0.03], "the values of C that the CV tries")
    cv_folds: int = param(5, "folds of that CV (grouped by prompt)", ge=2)
    crossfit: int = param(0, "K > 0: score every row of the validation rows' sources out of fold (grouped "
                             "K-fold seeded by the run seed; training and validation rows alike, baselines "
                             "too); 0 = the validation rows only", ge=0)

    def __post_init__(self):
        check_params(self)
        if not self.layers:
            raise ParamError("layers", "at least one layer")
        if self.crossfit == 1:
            raise ParamError("crossfit", "0 (off) or at least 2 folds")
        if not self.c_grid or any(c <= 0 for c in self.c_grid):
            raise ParamError("c_grid", f"positive values, at least one; got {self.c_grid}")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    base: str = param("embedded:gemma-3-270m", "hub id, local path, or embedded:<name> "
                                               "(embedded:gemma-3-270m, embedded:smollm2-135m)")
    lora: LoraConfig | None = param(None, "LoRA settings; null = full fine-tuning")
    features: FeaturesConfig | None = param(None, "frozen backbone: encode each response once, train a small "
                                                  "head (no fine-tuning; lora and train.* unused)")
    load_in_4bit: bool = param(False, "QLoRA: load the backbone in 4-bit nf4 (bitsandbytes)")
    load_in_8bit: bool = param(False, "load the backbone in 8-bit (bitsandbytes)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = param(
        "auto", "auto = bf16 where the device computes it natively (CUDA with bf16; a CPU with AMX or "
                "AVX512-BF16), else fp32; trainable weights are kept in fp32 (master weights) either way, "
                "except under adamw_kahan (core/model/precision.py)")
    gradient_checkpointing: bool = param(False, "trade compute for memory")
    revision: str | None = param(None, "hub revision")
    freeze_layers: int = param(0, "freeze the embeddings and the first N decoder layers (LoRA: no adapters "
                                  "there)", ge=0)
    offset: Literal["length_lr", "style_lr", "features"] | None = param(
        None, "with train.crossfit: the log-probabilities of this baseline (fitted on the same training "
              "rows) are added to the model's preference logits in training and prediction, so the model "
              "learns the residual over it and, with a zero head, starts from it (our choice; boosting's "
              "init score); features: the frozen-feature head of model.offset_features, stacked (the "
              "training rows' offsets out of fold; core/stages/offsets.py)")
    offset_features: FeaturesConfig | None = param(
        None, "with offset: features: the frozen-feature head (the cpu recipe's kind) whose "
              "log-probabilities are the offset; its crossfit K = the inner folds that give each fold's "
              "training rows their out-of-fold offset")
    cache_frozen: bool = param(False, "with freeze_layers N and train.crossfit: the first N layers' outputs "
                                      "are computed once per token sequence and cached "
                                      "(REPLICATOR_CACHE/states), so training and validation compute only "
                                      "the layers above (core/model/cached_layers.py)")
    attn_softcap: bool = param(True, "false: Gemma-2 attention logit softcapping off (3rd [P3]: +0.002; 4th "
                                     "[R4])")
    sliding_window: bool = param(True, "false: every layer full attention (2nd [R2] from stage 2)")
    attn_implementation: Literal["auto", "eager", "sdpa", "flash_attention_2"] = param(
        "auto", "transformers' attention kernel; auto = transformers' choice for the model (sdpa where it "
                "has it); flash_attention_2 needs CUDA and the flash-attn package (2nd [R2] trained with it)")

    def __post_init__(self):
        check_params(self)
        if self.load_in_4bit and self.load_in_8bit:
            raise ParamError("load_in_8bit", "load_in_4bit and load_in_8bit are exclusive")
        if (self.offset == "features") != (self.offset_features is not None):
            raise ParamError("offset_features", "offset: features reads its head's settings from "
                             "offset_features, and offset_features is used by offset: features only; got "
                             f"offset {self.offset!r} with offset_features "
                             f"{'set' if self.offset_features else 'unset'}")
        if self.offset_features is not None and self.offset_features.crossfit < 2:
            raise ParamError("offset_features", "offset_features.crossfit: the inner folds that give each "
                             "fold's training rows their out-of-fold offset: K >= 2")
        if self.cache_frozen and not self.freeze_layers:
            raise ParamError("cache_frozen", "cache_frozen caches the frozen layers: set freeze_layers N > 0")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    epochs: float = param(1.0, "passes over the training rows (fractions allowed); 0 = no training: a "
                               "cross-fitted stage whose head starts from a linear probe (init: lp) predicts "
                               "with each fold's probe alone (LP, against LP-FT)", ge=0)
    lr: float = param(1e-4, "peak learning rate (LoRA: peft scales the adapter's output by alpha / r on "
                            "top)", gt=0)
    head_lr: float | None = param(None, "learning rate of the head (null = lr)", gt=0)
    global_batch: int | None = param(
        None, "rows per optimizer step over all processes, as the write-ups state it: the runner derives "
              "each process's micro-batch rows (at most batch_size) and accumulation from the process count "
              "(core/config/batch.py); with batch_tokens a step takes micro-batches until it holds this many "
              "rows; null = batch_size x grad_accum per process (grows with the process count)", ge=1)
    batch_size: int = param(4, "rows per micro-batch (with global_batch: at most, per process)", ge=1)
    grad_accum: int = param(1, "micro-batches per optimizer step and process (only without global_batch)",
                            ge=1)
    batch_tokens: int | None = param(
        None, "token-budget micro-batches: as many length-grouped rows as fit in this many padded tokens "
              "(rows x longest row; a longer row alone) instead of batch_size rows; an optimizer step "
              "takes global_batch rows (or grad_accum micro-batches per process), so its micro-batch count "
              "(or row count) varies, and its gradient is the mean over its rows; null = batch_size rows",
        ge=1)
    packed: bool = param(False, "padding-free micro-batches: a micro-batch's rows concatenated into one "
                                "sequence, position ids restarting per row (transformers masks attention "
                                "between the rows; padding-free kernels with flash attention on CUDA; with "
                                "sdpa or eager attention the masked attention costs the square of the packed "
                                "length)")
    max_length: int = param(512, "token budget per row in training", ge=MIN_LENGTH)
    optimizer: Literal["adamw", "adamw_kahan", "adamw_8bit", "paged_adamw_8bit"] = param(
        "adamw", "adamw: torch AdamW; adamw_kahan: AdamW with Kahan-summed updates (torch-optimi), for "
                 "bf16/fp16 weights (2nd [R2]); adamw_8bit / paged_adamw_8bit: bitsandbytes 8-bit states "
                 "(3rd [R3m])")
    betas: list[float] = param([0.9, 0.999], "AdamW (beta1, beta2)")
    eps: float = param(1e-8, "AdamW epsilon", gt=0)
    weight_decay: float = param(0.0, "AdamW weight decay (decoupled, x lr)", ge=0)
    mixed_precision: Literal["no", "bf16", "fp16"] = param(
        "no", "accelerate's autocast; with model.dtype float32 the weights stay fp32 (fp32 master weights)")
    schedule: Literal["cosine", "linear", "constant"] = param(
        "cosine", "learning-rate schedule after warm-up")
    warmup_steps: int = param(0, "linear warm-up, in optimizer steps", ge=0)
    warmup_ratio: float = param(0.0, "linear warm-up as a share of the optimizer steps (instead of "
                                     "warmup_steps)", ge=0, lt=1)
    lr_floor: float = param(0.0, "the schedule starts its warm-up from and decays to this share of the peak "
                                 "lr (2nd [R2]: 0.001)", ge=0, lt=1)
    max_grad_norm: float = param(1.0, "gradient clipping (0 = off)", ge=0)
    max_steps: int = param(0, "stop after this many optimizer steps (0 = no cap)", ge=0)
    max_rows: int = param(0, "use at most this many training rows, sampled with the seed (0 = all)", ge=0)
    checkpoint_every: int = param(25, "optimizer steps between checkpoints", ge=1)
    eval_every: int = param(0, "optimizer steps between evaluations on the validation rows; the weights with "
                               "the lowest validation log loss are kept (1st [R1]: every 400 micro-batches = "
                               "100 steps); 0 = keep the last", ge=0)
    crossfit: int | None = param(None, "K: cross-fitted fine-tuning. Every row of the validation rows' "
                                       "sources (training and validation alike) is predicted by a model "
                                       "trained without its fold (grouped K-fold by prompt, seeded); the "
                                       "baselines are fitted on the same folds; the saved weights are the "
                                       "mean of the K folds' (1st [R1] averages fold adapters). null = one "
                                       "split",
                                 ge=2, le=20)

    def __post_init__(self):
        check_params(self)
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ParamError("betas", f"two values in [0, 1), got {self.betas}")
        if self.global_batch is not None and self.grad_accum != 1:
            raise ParamError("grad_accum", "give global_batch (rows per optimizer step; the runner derives "
                                           "the accumulation) or grad_accum, not both")
        if self.warmup_ratio and self.warmup_steps:
            raise ParamError("warmup_ratio", "give warmup_steps or warmup_ratio, not both")
        if self.epochs == 0 and self.crossfit is None:
            raise ParamError("epochs", "0 (no training: each fold predicts with its head's linear "
                                       "probe) needs a cross-fitted stage (crossfit: K) whose head starts "
                                       "from a probe (init: lp)")


@dataclasses.dataclass(frozen=True)
class PredictConfig:
    max_length: int = param(1024, "token budget per row at inference", ge=MIN_LENGTH)
    batch_tokens: int = param(8192, "inference batch size by token budget (rows sorted by length)", ge=1)
    max_rows: int = param(0, "evaluate at most this many validation rows (0 = all)", ge=0)
    load_in_8bit: bool = param(False, "predict with the backbone in 8-bit, bitsandbytes (9th [P9], 16th "
                                      "[P16], 5th [P5])")
    merge_lora: bool = param(False, "with load_in_8bit: merge the LoRA adapters into the weights first, then "
                                    "quantize the merged model (9th [P9] merge_and_unload)")
    quantizer: Literal["bitsandbytes", "gptq"] = param(
        "bitsandbytes", "with load_in_8bit: bitsandbytes (LLM.int8 at load) | gptq (8 bits, group size 128, "
                        "calibrated on gptq_calibration_rows of the stage's training rows, LoRA merged "
                        "first: 1st [R1] run_gptq.py; needs the gptq extra)")
    gptq_calibration_rows: int = param(128, "quantizer gptq: training rows it calibrates on (1st [R1]: "
                                            "128)", ge=1)

    @property
    def gptq(self) -> bool:
        """8-bit inference through GPTQ."""
        return self.load_in_8bit and self.quantizer == "gptq"


#: memory per GPU in GiB (nvidia-smi's total MiB / 1024) of the GPUs ``launch.gpu`` knows by name
GPU_MEMORY_GIB = {"A100-40GB": 40.0, "A100-80GB": 80.0, "H100-80GB": 79.6, "H200": 139.8, "V100-16GB": 16.0,
                  "V100-32GB": 32.0, "T4": 15.0, "L4": 22.5, "A10G": 22.5, "L40S": 45.0, "RTX-4090": 24.0}
#: GPUs without bfloat16 arithmetic (model.dtype auto would pick bf16 on them)
NO_BF16 = ("V100-16GB", "V100-32GB", "T4")


@dataclasses.dataclass(frozen=True)
class LaunchConfig:
    """The hardware a stage is meant for: ``replicate plan`` checks the stage's memory against it and
    prints the ``accelerate launch`` command (``recipes/accelerate/<parallel>.yaml``). A plan only: it is
    not in the run id (the process count a launcher really started is,
    :mod:`replicator.core.run.fingerprint`)."""

    gpus: int = param(1, "GPUs (processes) the stage runs on: accelerate launch --num_processes", ge=1)
    gpu: str = param("A100-80GB", "the GPU by name (" + ", ".join(GPU_MEMORY_GIB) + "), 'cpu', or any name "
                     "with gpu_memory_gb")
    gpu_memory_gb: float | None = param(None, "memory per GPU (or host memory for cpu) in GiB; null = from "
                                              "the GPU's name", gt=0)
    parallel: Literal["single", "ddp", "fsdp_shard_grad_op", "fsdp_full_shard", "zero2", "zero3"] = param(
        "single", "single (one process) | ddp | fsdp_shard_grad_op | fsdp_full_shard (the runner shards with "
                  "FSDP2) | zero2 (the runner partitions with DeepSpeed ZeRO-2) | zero3 (sized by the plan, "
                  "not run): what is sharded over the GPUs")

    def __post_init__(self):
        check_params(self)
        if self.gpu_memory_gb is None and self.gpu not in GPU_MEMORY_GIB:
            hint = did_you_mean(self.gpu, GPU_MEMORY_GIB)
            raise ParamError("gpu", f"gpu {self.gpu!r} is not a known name{hint}: set gpu_memory_gb (known: "
                             f"{', '.join(GPU_MEMORY_GIB)})")
        if self.gpu == "cpu" and self.parallel == "zero3":
            raise ParamError("parallel", "parallel 'zero3' is sized by the plan for GPUs and not run; choose "
                             "fsdp_full_shard (it shards the same parts) for gpu 'cpu'")
        if self.parallel == "single" and self.gpus != 1:
            raise ParamError("parallel", f"parallel 'single' runs one process but gpus is {self.gpus}; "
                             "choose ddp, fsdp_shard_grad_op, fsdp_full_shard, zero2 or zero3")

    @property
    def memory_gib(self) -> float:
        return float(self.gpu_memory_gb if self.gpu_memory_gb is not None else GPU_MEMORY_GIB[self.gpu])


@dataclasses.dataclass(frozen=True)
class StageConfig:
    """One resolved stage: the core sections plus plugin blocks (validated separately)."""

    name: str
    model: ModelConfig
    train: TrainConfig
    predict: PredictConfig
    plugins: dict
    from_stage: str | None = None
    reinit_head: bool = False
    #: predictions this stage writes for later stages: "train" (teacher probabilities on its
    #: training rows, for distillation) and/or "pool" (pseudo-labels for the ``pool`` split)
    outputs: tuple[str, ...] = ()
    #: the hardware the stage is planned for (``replicate plan``); not in the run id
    launch: LaunchConfig = dataclasses.field(default_factory=LaunchConfig)

    @property
    def unused_hooks(self) -> tuple[str, ...]:
        """The ``one`` hooks this stage never calls: a baseline (``model.base: baseline:...``) or a
        frozen-feature stage (``model.features``) formats no prompt and trains no head or loss."""
        if self.model.features or str(self.model.base).startswith("baseline:"):
            return ("prompt_format", "head", "loss")
        return ()


TOP_KEYS = {
    "name": "recipe name (defaults to the file stem)",
    "description": "free text",
    "seed": "random seed",
    "model": "backbone, LoRA, quantisation",
    "train": "optimiser and schedule",
    "predict": "inference settings",
    "plugins": "alias -> {use: plugin, parameters}",
    "launch": "the hardware planned for (gpus, gpu, parallel): replicate plan",
    "stages": "stage name -> patch over the defaults (+ from, reinit_head)",
    "toggles": "name -> merge patch",
    "substitutions": "list of what a scaled-down run stands in for the original (its report lists them)",
    "tracking": "live tracking: auto (tensorboard where installed), tensorboard, wandb, mlflow or none; "
                "not part of the run id (core/util/tracking.py; replicate run --track)",
}
STAGE_KEYS = {"model", "train", "predict", "plugins", "launch", "from", "reinit_head", "outputs"}
STAGE_OUTPUTS = ("train", "pool")

#: the combination sections, run by core/run/combination.py (not part of a run's config: each member is a run)
TOP_KEYS.update({
    "folds": "run the recipe once per fold: out-of-fold predictions, fold models averaged "
             "(core/run/folds.py)",
    "ensemble": "members (runs of this or another recipe) blended by weight (core/run/ensemble.py)",
})


# ---------------------------------------------------------------- resolution


@dataclasses.dataclass
class Resolved:
    file: str
    name: str
    seed: int
    config: dict  # the fully patched recipe (no toggles block), as the user wrote it
    stages: list[StageConfig]
    toggles: list[str]

    @functools.cached_property
    def complete(self) -> dict:
        """The config as built, every default written out (plugin blocks included): what
        ``resolved.yaml`` holds (see :func:`replicator.core.config.canonical.complete_config`)."""
        return complete_config(self)

    @property
    def config_hash(self) -> str:
        """Hash of the complete config (defaults included; the free-text description and substitutions left
        out)."""
        return config_hash({k: v for k, v in self.complete.items() if k not in FREE_TEXT})

    @property
    def final(self) -> StageConfig:
        return self.stages[-1]

    def to_yaml(self) -> str:
        """The complete config as YAML (``resolved.yaml``); it resolves again to the same stages."""
        return yaml.safe_dump(self.complete, sort_keys=False, allow_unicode=True, width=100)


#: the largest seed: numpy's legacy seeding and scikit-learn's random_state take [0, 2**32 - 1]
MAX_SEED = 2**32 - 1
#: a recipe or stage name: it names folders (reports/<name>/, artifacts/<name>/<run_id>/<stage>/), so no
#: path separator, no leading dot or dash, nothing empty
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")


def check_name(name: Any, file: str, key: str, where: str = "") -> None:
    """``name`` is an identifier-like string (:data:`NAME`), else a RecipeError naming ``key``."""
    if not isinstance(name, str):
        raise RecipeError(file, key, f"expected a string, got {type(name).__name__} {name!r}{where}")
    if not NAME.fullmatch(name):
        raise RecipeError(file, key, f"{name!r} is not a name: letters, digits, '_', '-' and '.', starting "
                          f"with a letter, a digit or '_', at most 100 characters (it names a folder){where}")


def config_hash(config: dict) -> str:
    return hash_of(config)


def load_yaml(path: str | Path) -> dict:
    """The recipe file's mapping: ``path``, or the shipped recipe of that name (:func:`find_recipe`)."""
    path = find_recipe(path)
    data = read_recipe(path)
    if not isinstance(data, dict):
        raise RecipeError(str(path), "(top)", "a recipe is a mapping")
    return data


def resolve(path: str | Path, toggles: list[str] = (), overrides: list[str] = (),
            check_plugins: bool = True, data_dir: Path | None = None) -> Resolved:
    """Load, patch and validate a recipe. Raises RecipeError naming the file and key."""
    path = find_recipe(path)
    file = str(path)
    raw = load_yaml(path)
    _check_top_keys(raw, file, TOP_KEYS, "")
    cfg, labels = patch_config(raw, file, toggles, overrides)
    named = "name" in cfg
    cfg.setdefault("name", path.stem)
    seed = cfg.setdefault("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise RecipeError(file, "seed", f"expected an integer, got {seed!r}")
    if not 0 <= seed <= MAX_SEED:
        raise RecipeError(file, "seed", f"expected an integer in [0, 2**32 - 1] (what numpy's and "
                          f"scikit-learn's seeding take), got {seed}")
    check_name(cfg["name"], file, "name", "" if named else " (taken from the file name: set name: in the "
                                                           "recipe)")
    subs = cfg.get("substitutions")
    if subs is not None and not (isinstance(subs, list) and all(isinstance(x, str) for x in subs)):
        raise RecipeError(file, "substitutions", f"expected a list of strings, got {subs!r}")
    tracking.check(cfg.get(tracking.SETTING), file)
    stages = build_stages(cfg, file)
    for s in stages:  # before any run folder is written (a misspelt base used to fail at the model load)
        check_base(s.model.base, file, f"stages.{s.name}.model.base" if "stages" in cfg else "model.base")
    if cfg.get("folds") is not None or cfg.get("ensemble") is not None:
        check_sections(cfg, stages, file)
    resolved = Resolved(file=file, name=cfg["name"], seed=seed, config=cfg, stages=stages, toggles=labels)
    if check_plugins:
        plugin_catalogue = catalogue()
        for s in stages:
            plugins = build_plugins(s.plugins, file, plugin_catalogue, unused=s.unused_hooks)
            _check_unused(plugins, s, file)
            if data_dir is not None:
                check_data(plugins, data_dir, file, s.name)
    return resolved


def _check_unused(plugins, stage: StageConfig, file: str) -> None:
    """A baseline or frozen-feature stage calls no ``augment`` or ``tta`` hook: a plugin for them would
    change the run id and nothing else, so it is an error (these stages are swap-symmetric by
    construction)."""
    if not stage.unused_hooks:
        return
    for hook in ("augment", "tta", "prompt_format", "head", "loss"):
        for alias, p in plugins.providers(hook):
            features = ", model.features" if stage.model.features else ""
            raise RecipeError(file, f"plugins.{alias}", f"stage {stage.name} ({stage.model.base}{features}) "
                              f"never calls the {hook!r} hook, so {p._use!r} would change nothing (its "
                              "predictions are swap-symmetric by construction)")


#: top-level keys that describe a run and change no number (left out of the run id)
FREE_TEXT = ("description", "substitutions")
#: top-level keys a toggle or an override may set (``toggles:`` is read from the file only)
PATCHABLE_KEYS = {k: v for k, v in TOP_KEYS.items() if k != "toggles"}
SECTIONS = ("model", "train", "predict", "plugins", "launch", "stages")


def patch_config(raw: dict, file: str, toggles=(), overrides=()) -> tuple[dict, list[str]]:
    """The recipe without its ``toggles:`` block, patched by ``toggles`` then ``overrides``, and the
    toggle labels to record (``name``, or ``name:off``/``name:on`` for a shared toggle,
    core/config/toggles.py).
    Every patch is checked like the file: an unknown top-level key is a RecipeError naming it."""
    named = recipe_toggles(raw, file)
    cfg = {k: v for k, v in raw.items() if k != "toggles"}
    labels = []
    for t in toggles:
        cfg, label = apply_toggle(cfg, t, named, file)
        _check_top_keys(cfg, file, PATCHABLE_KEYS, f" (set by toggle {t!r})")
        labels.append(label)
    for o in overrides:
        cfg = merge_patch(cfg, parse_override(o))
        _check_top_keys(cfg, file, PATCHABLE_KEYS, f" (set by override {o!r})")
    return cfg, labels


def _check_top_keys(cfg: dict, file: str, known: dict, source: str) -> None:
    for k in cfg:
        if k not in known:
            hint = "; the toggles block is read from the recipe file only" if k == "toggles" else ""
            raise RecipeError(file, str(k), f"unknown top-level key{did_you_mean(str(k), known)}{source}; "
                              f"known: {', '.join(known)}{hint}")
    for k in SECTIONS:
        if cfg.get(k) is not None and not isinstance(cfg[k], dict):
            raise RecipeError(file, k, f"expected a mapping, got {type(cfg[k]).__name__} {cfg[k]!r}{source}")


def build_stages(cfg: dict, file: str) -> list[StageConfig]:
    """The stages of a patched config: each a patch over its core sections and plugin blocks."""
    stages_raw = cfg.get("stages") or {"main": {}}
    defaults = {k: v for k, v in cfg.items() if k in ("model", "train", "predict", "plugins", "launch")}
    stages: list[StageConfig] = []
    for sname, patch in stages_raw.items():
        key = f"stages.{sname}" if "stages" in cfg else ""
        check_name(sname, file, key, " (a stage name)")
        stages.append(_build_stage(sname, patch or {}, defaults, stages, file, key))
    return stages


def _build_stage(sname: str, patch: Any, defaults: dict, earlier: list[StageConfig], file: str,
                 key: str) -> StageConfig:
    if not isinstance(patch, dict):
        raise RecipeError(file, key, "a stage is a mapping (a patch over the defaults)")
    for k in patch:
        if k not in STAGE_KEYS:
            raise RecipeError(file, f"{key}.{k}", f"unknown stage key{did_you_mean(k, STAGE_KEYS)}; "
                              f"known: {', '.join(sorted(STAGE_KEYS))}")
    names = [s.name for s in earlier]
    src = patch.get("from")
    if src is not None and src not in names:
        raise RecipeError(file, f"{key}.from",
                          f"{src!r} is not an earlier stage{did_you_mean(str(src), names)}")
    outputs = patch.get("outputs") or []
    if not isinstance(outputs, list) or any(o not in STAGE_OUTPUTS for o in outputs):
        raise RecipeError(file, f"{key}.outputs",
                          f"expected a list of {', '.join(STAGE_OUTPUTS)}, got {outputs!r}")
    merged = merge_patch(defaults, {k: v for k, v in patch.items()
                                    if k not in ("from", "reinit_head", "outputs")})
    pre = f"{key}." if key else ""
    stage = StageConfig(
        name=sname,
        model=build(ModelConfig, merged.get("model"), file, pre + "model"),
        train=build(TrainConfig, merged.get("train"), file, pre + "train"),
        predict=build(PredictConfig, merged.get("predict"), file, pre + "predict"),
        plugins=merged.get("plugins") or {},
        from_stage=src,
        reinit_head=bool(patch.get("reinit_head", False)),
        outputs=tuple(outputs),
        launch=build(LaunchConfig, merged.get("launch"), file, pre + "launch"),
    )
    _check_crossfit(stage, file, pre)
    return stage


def _check_crossfit(stage: StageConfig, file: str, pre: str) -> None:
    """A cross-fitted stage (``train.crossfit``) and cached frozen layers (``model.cache_frozen``): what they
    cannot be combined with, as resolve-time errors."""
    if stage.model.offset and not stage.train.crossfit:
        raise RecipeError(file, pre + "model.offset", "the offset baseline is fitted per fold by a "
                          "cross-fitted stage: set train.crossfit K (or offset: null)")
    if stage.model.cache_frozen and not stage.train.crossfit:
        raise RecipeError(file, pre + "model.cache_frozen", "cached frozen layers are read by a cross-fitted "
                          "stage: set train.crossfit K (or cache_frozen: false)")
    if not stage.train.crossfit:
        return
    problems = {"model.features": stage.model.features is not None
                and "a frozen-feature stage cross-fits with model.features.crossfit",
                "train.packed": stage.train.packed and stage.model.cache_frozen
                and "cached states are looked up per padded row, not per packed sequence",
                "train.eval_every": stage.train.eval_every
                and "the held-out fold is what is scored: choosing weights on it would not be honest",
                "from": stage.from_stage is not None and "a cross-fitted stage starts from the base model",
                "outputs": bool(stage.outputs) and "a cross-fitted stage writes no outputs for later stages",
                "model.base": str(stage.model.base).startswith("baseline:")
                and "a baseline is cross-fitted by every run already",
                "predict.load_in_8bit": stage.predict.load_in_8bit
                and "each fold predicts with the model it trained (8-bit prediction is `replicate predict`'s "
                    "business on a single split)"}
    for k, why in problems.items():
        if why:
            raise RecipeError(file, pre + k, f"not with train.crossfit: {why}")


def check_data(plugins, data_dir: Path, file: str, stage: str) -> None:
    """Ask each data plugin whether its files are there (the ``data_check`` hook, per plugin): the first
    plugin with problems is a RecipeError naming its block."""
    for alias, problems in plugins.check_data(data_dir):
        if problems:
            where = f" (stage {stage})" if stage != "main" else ""
            raise RecipeError(file, f"plugins.{alias}", "; ".join(problems) + where)
