"""``replicate plan``: every stage of a resolved recipe at full size, without weights or data.

For each stage: the model built on the meta device (:mod:`replicator.core.model.meta`), its parameters
and what trains, the memory per GPU of training and of inference (:mod:`replicator.core.model.memory`,
estimates), the global batch and what each of the ``launch.gpus`` processes runs of it
(:func:`replicator.core.config.batch.batching`, as the runner derives it), the rows, tokens and optimizer
steps of an epoch from the published sizes of the data it names, whether it fits (and can run on) the
hardware of its ``launch:`` section, and the command that launches it. :func:`plan` computes (``--json``
prints it), :func:`format_plan` writes the table.
"""

from __future__ import annotations

import math
import shlex
from pathlib import Path
from typing import Any

import numpy as np

from replicator.core.config.batch import Batching, batching
from replicator.core.config.catalogue import build_plugins
from replicator.core.config.recipe import NO_BF16, LaunchConfig, Resolved, StageConfig, resolve
from replicator.core.data.competition import read_competition_csv
from replicator.core.errors import RecipeError, ReplicatorError
from replicator.core.lib.full_size import capped
from replicator.core.model import memory as M
from replicator.core.model import meta
from replicator.core.model.embedded import resolve_embedded
from replicator.core.model.precision import compute_precision, planned_auto_dtype

#: Gemma-3 tokens of a competition row (every turn of prompt, response_a and response_b joined by newlines,
#: no template): percentiles 0..100 over the 1,478 real rows of the shared train.csv, measured with the
#: embedded Gemma-3-270M tokenizer (:func:`measure_row_tokens`, :func:`percentiles`;
#: tests/run/test_resources.py)
ROW_TOKENS = (
    8, 37, 50, 67, 76, 85, 93, 100, 106, 112, 117, 122, 133, 141, 148, 160, 169, 176, 185, 196, 206, 211, 220,
    227, 233, 248, 263, 272, 281, 289, 302, 315, 330, 342, 350, 361, 376, 390, 401, 415, 423, 436, 454, 464,
    472, 483, 496, 510, 520, 528, 542, 556, 565, 578, 586, 596, 611, 620, 638, 651, 665, 677, 682, 702, 713,
    720, 730, 747, 756, 767, 780, 791, 805, 822, 837, 867, 880, 896, 921, 946, 960, 984, 1003, 1034, 1066,
    1101, 1136, 1189, 1228, 1281, 1361, 1421, 1494, 1598, 1727, 1848, 2016, 2355, 2847, 3645, 11098)
TOKENS_NOTE = ("tokens ~ is the mean Gemma-3 token count of a real competition row cut at max_length, "
               "without the prompt template (~20-200 tokens more); Llama-3 and Qwen2 tokenizers count "
               "otherwise, and the other sources' rows have other lengths")


def mean_tokens(max_length: int, table=ROW_TOKENS) -> float:
    """Mean of min(row tokens, max_length) over a percentile table (trapezoids between percentiles)."""
    cut = [min(t, max_length) for t in table]
    return sum((a + b) / 2 for a, b in zip(cut[:-1], cut[1:], strict=True)) / (len(cut) - 1)


def percentiles(lengths: list[int]) -> tuple[int, ...]:
    """The 0..100 percentiles of ``lengths`` (linear interpolation), rounded: a :data:`ROW_TOKENS` table."""

    return tuple(int(round(v)) for v in np.percentile(np.asarray(lengths), np.arange(101)))


def measure_row_tokens(data_dir: Path) -> list[int]:
    """Gemma-3 token counts of the rows of ``data_dir``'s competition train.csv (the embedded model is
    converted once when it is not cached yet)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_embedded("embedded:gemma-3-270m"))
    rows = read_competition_csv(Path(data_dir) / "lmsys-chatbot-arena" / "train.csv", require_labels=True)
    texts = ["\n".join(t or "" for t in r["prompt"] + r["response_a"] + r["response_b"]) for r in rows]
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def source_rows(plugin, stage: StageConfig, recipe: str) -> dict | None:
    """{train, valid, pool, size} rows the data plugin gives this stage at full size, as the plugin says
    (its ``full_size_rows``: core/lib/full_size.py); None when it does not know."""
    full_size_rows = getattr(plugin, "full_size_rows", None)
    rows = full_size_rows(stage.name, recipe) if full_size_rows is not None else None
    return None if rows is None else {"train": 0, "valid": 0, "pool": 0, **rows}


def micro_batch_rows(t, b: Batching | None = None) -> float:
    """Rows of ``max_length`` tokens in the largest training micro-batch: with ``train.batch_tokens`` the
    budget over ``max_length`` (rows x longest row <= budget: the most activation memory is the budget's
    worth of tokens in rows of ``max_length``, whose attention is widest; a row over the budget is alone,
    so at least one row); else the rows ``b`` derives for the stage's processes (``train.global_batch``),
    or ``batch_size`` (without ``b``: the most one process holds)."""
    if getattr(t, "batch_tokens", None):
        return max(t.batch_tokens, t.max_length) / t.max_length
    return b.micro_rows if b is not None else t.batch_size


def attention_span(t, rows: float) -> int:
    """Positions the attention of the largest micro-batch spans: its rows' ``max_length``, or with
    ``train.packed`` (the rows concatenated into one sequence) all its tokens."""
    return round(rows * t.max_length) if getattr(t, "packed", False) else t.max_length


def optimizer_steps(rows: float, t, processes: int) -> int:
    """Optimizer steps of an epoch of ``rows`` rows on ``processes`` processes: ``global_batch`` rows per
    step whatever the process count (with token budgets a step takes micro-batches until it holds that
    many: at most this many steps); without it ``batch_size`` x ``grad_accum`` rows per process, or with
    token budgets full budgets of ``batch_tokens`` (at least this many steps)."""
    if getattr(t, "global_batch", None):
        return math.ceil(rows / t.global_batch)
    if getattr(t, "batch_tokens", None):
        return math.ceil(rows * mean_tokens(t.max_length) / (t.batch_tokens * t.grad_accum * processes))
    return math.ceil(rows / (t.batch_size * t.grad_accum * processes))


def stage_data(stage: StageConfig, plugins, recipe: str, gpus: int) -> dict:
    """Rows, tokens and optimizer steps of an epoch of ``stage`` (rows x the copies each augment plugin
    makes of a row: a swap duplicate, 2nd place's PAB + PAPB layouts), and the rows it predicts."""
    t = stage.train
    sources, unknown = {}, []
    for alias, p in plugins.providers("data_sources"):
        rows = source_rows(p, stage, recipe)
        if rows is None:
            unknown.append(f"{alias} ({p._use})")
        elif rows["train"] or rows["valid"] or rows["pool"]:
            sources[alias] = {k: v for k, v in rows.items() if v}
    train = capped(sum(s.get("train", 0) for s in sources.values()), t.max_rows)
    multipliers = {"swap_multiplier": 1}  # each augment plugin's copies of a row (core/lib/full_size.py)
    for _, plugin in plugins.providers("augment"):
        for key, copies in getattr(plugin, "train_copies", dict)().items():
            multipliers[key] = multipliers.get(key, 1) * copies
    per_epoch = train * math.prod(multipliers.values())
    valid = capped(sum(s.get("valid", 0) for s in sources.values()), stage.predict.max_rows)
    pool = sum(s.get("pool", 0) for s in sources.values())
    steps = optimizer_steps(per_epoch, t, gpus)
    total = math.ceil(steps * t.epochs)
    return {"sources": sources, "unknown_sources": unknown, "train_rows": train,
            "swap_multiplier": multipliers.pop("swap_multiplier"),
            "rows_per_epoch": per_epoch, "epochs": t.epochs, "tokens_per_epoch_max": per_epoch * t.max_length,
            "tokens_per_epoch_est": round(per_epoch * mean_tokens(t.max_length)), "steps_per_epoch": steps,
            "steps": min(total, t.max_steps) if t.max_steps else total,
            "predicted_rows": valid + pool * ("pool" in stage.outputs) + train * ("train" in stage.outputs),
            **{key: copies for key, copies in multipliers.items() if copies > 1}}


# ---------------------------------------------------------------- launching


def accelerate_config(recipe: Path) -> Path:
    """The accelerate config beside the recipe, one for every parallelism: recipes/accelerate/multi_gpu.yaml
    (accelerate starts the processes; what is sharded comes from the recipe: the runner wraps DDP through
    accelerate, shards FSDP itself, core/model/sharding.py, and partitions ZeRO-2 with DeepSpeed,
    core/model/zero.py)."""
    return Path(recipe).parent / "accelerate" / "multi_gpu.yaml"


def launch_command(recipe: Path, launch: LaunchConfig, toggles=(), overrides=()) -> str:
    """The command that runs the recipe on the hardware ``launch`` names."""
    args = "".join(f" -t {shlex.quote(t)}" for t in toggles)
    args += "".join(f" {shlex.quote(o)}" for o in overrides)
    run = f"run {shlex.quote(str(recipe))}{args}"
    if launch.parallel == "single":
        return f"replicate {run}"
    # accelerate launch --cpu starts one process without MPI (core/util/distributed.py)
    if launch.gpu == "cpu":
        return f"torchrun --nproc_per_node {launch.gpus} -m replicator.core.cli {run}"
    return (f"accelerate launch --config_file {shlex.quote(str(accelerate_config(recipe)))} "
            f"--num_processes {launch.gpus} -m replicator.core.cli {run}")


# ---------------------------------------------------------------- one stage


def _key(resolved: Resolved, stage: StageConfig, field: str) -> str:
    return f"stages.{stage.name}.{field}" if "stages" in resolved.config else field


def _gib(d: dict[str, float]) -> dict[str, float]:
    return {k: round(v / M.GIB, 1) for k, v in d.items()}


#: GPUs flash_attention_2 does not run on (it needs Ampere or newer: the ones without bf16)
NO_FLASH = NO_BF16


def attention_of(resolved: Resolved, stage: StageConfig, c: meta.Counts, model) -> str:
    """The attention implementation the runner's model gets: ``model.attn_implementation``, ``auto`` being
    transformers' choice (``c.attention``: sdpa, or eager where the model has no SDPA, Gemma-2); a kernel
    transformers refuses for the model is a RecipeError (the runner's load would fail)."""
    asked = getattr(stage.model, "attn_implementation", "auto")
    if asked == "auto":
        return c.attention if c.attention in M.KERNELS else "sdpa"
    supported = {"sdpa": "_supports_sdpa", "flash_attention_2": "_supports_flash_attn"}.get(asked)
    if supported and not getattr(model, supported, True):
        raise RecipeError(resolved.file, _key(resolved, stage, "model.attn_implementation"),
                          f"transformers has no {asked} attention for {c.arch} (its default: {c.attention}); "
                          "use eager, or flash_attention_2 where it has it")
    return asked


def stage_sizes(resolved: Resolved, stage: StageConfig, plugins, dtype: str = "bfloat16"):
    """(meta counts, memory.Model, attention implementation) of the stage's model as the runner builds it,
    in ``dtype``."""

    m, file = stage.model, resolved.file
    config = meta.load_config(m.base, file, _key(resolved, stage, "model.base"))
    model = meta.build_meta(config, plugins)
    c = meta.counts(model)
    attention = attention_of(resolved, stage, c, model)
    lora = None
    if m.lora is not None and not m.features:
        key = _key(resolved, stage, "model.lora.targets")
        lora = (m.lora.r, meta.lora_targets(c, m.lora.targets, file, key))
    try:
        trainable, adapters = (0, 0) if m.features else meta.trainable(c, lora, m.freeze_layers)
    except ValueError as e:
        raise RecipeError(file, _key(resolved, stage, "model.freeze_layers"), str(e)) from None
    eager = M.kernel(attention) == "eager"
    masks = 1 + ("sliding_attention" in (getattr(config, "layer_types", None) or []))  # full (+ sliding)
    sizes = M.Model(
        total=c.total, quantizable=c.quantizable, trainable=trainable, adapters=adapters, layers=c.layers,
        hidden=c.hidden, kv_dim=c.kv_dim, layer_params=max(c.layer_params),
        act_token=M.layer_elements(c.model_type, c.hidden, c.q_dim, c.kv_dim, c.intermediate, attention),
        act_attn=c.heads * M.EAGER_ATTENTION[c.softcap and m.attn_softcap] if eager else 0.0,
        act_lora=0.0 if lora is None else M.lora_elements([i for _, i, _ in lora[1]], lora[0],
                                                           m.lora.dropout),
        bwd_token=M.backward_elements(c.model_type, c.hidden, c.intermediate),
        bwd_attn=c.heads * M.EAGER_BACKWARD if eager else 0.0,
        bwd_freed=M.freed_elements(c.model_type, c.hidden, c.intermediate) if eager else 0.0,
        fwd_attn=c.heads * M.EAGER_FORWARD if eager else 0.0,
        mask_bytes=M.mask_bytes(attention, masks, M.DTYPE_BYTES[dtype]))
    return c, sizes, attention


def _budget_note(t) -> str:
    steps = (f"the steps count {t.global_batch} rows each (a step takes micro-batches until it holds them)"
             if getattr(t, "global_batch", None) else
             "the steps count full budgets (padding and partly filled budgets add some)")
    return (f"train.batch_tokens {t.batch_tokens}: activations of the worst micro-batch, "
            f"{max(t.batch_tokens, t.max_length):,} tokens in rows of max_length; {steps}")


def stage_batch(resolved: Resolved, stage: StageConfig) -> tuple[Batching | None, dict]:
    """What each of the stage's ``launch.gpus`` processes runs of its global batch (as the runner derives
    it), and its plan entry; (None, {error}) when the global batch does not split over them."""
    t, gpus = stage.train, stage.launch.gpus
    try:
        b = batching(t, gpus, where=_key(resolved, stage, "train"))
    except ReplicatorError as e:
        return None, {"global_rows": t.global_batch, "processes": gpus, "stated": True, "error": str(e)}
    return b, {"global_rows": b.global_rows, "micro_rows": b.micro_rows, "accumulation": b.accum,
               "processes": gpus, "stated": b.stated, "token_budget": t.batch_tokens}


def _attention_note(what: str, sizes: M.Model, attention: str, tokens: float, span: int, unit: int,
                    mem: dict[str, float], gpu: str) -> str | None:
    """What eager attention's s x s matrices take of an estimate that does not fit (``what``: train or
    inference, ``tokens`` of its largest batch, attention over ``span`` positions)."""
    s_by_s = M.attention_bytes(sizes, tokens, span, unit, training=what == "train") / M.GIB
    if M.kernel(attention) != "eager" or s_by_s < 0.1 * mem["total"]:
        return None
    kept = "saved, their backward's gradients, the masks" if what == "train" else "at the softmax, the masks"
    batch = "micro-batch" if what == "train" else "batch (predict.batch_tokens)"
    fix = ("model.attn_implementation flash_attention_2 keeps none (sdpa where transformers has it)"
           if gpu != "cpu" and gpu not in NO_FLASH else
           f"fewer tokens per {batch.split(' ')[0]} take less (flash_attention_2, which keeps none, does "
           f"not run on {gpu})")
    return (f"{what}: eager attention's s x s matrices ({kept}) take {s_by_s:.1f} GiB of the "
            f"{mem['total']:.1f} at the longest {batch}, {tokens:,.0f} tokens, attention over {span:,}; "
            f"{fix}")


def _fit_flags(out: dict, what: str, mem: dict, stage: StageConfig, sizes, attention: str, dtype: str,
               train_shape: tuple, infer_shape: tuple) -> None:
    """A flag (and a note on attention's share) where ``what`` (train / inference) does not fit the GPU;
    ``train_shape``: (rows of the longest micro-batch, attention span), ``infer_shape``: (tokens per
    batch, the longest row)."""
    t, launch = stage.train, stage.launch
    if mem["total"] <= launch.memory_gib:
        return
    out["flags"].append(f"DOES NOT FIT: {what} needs {mem['total']:.1f} GiB per GPU, {launch.gpu} "
                        f"has {launch.memory_gib:g}")
    if what == "train":
        unit = 2 if out["model"]["mixed_precision"] in ("bf16", "fp16") else 4
        rows, span = train_shape
        note = _attention_note(what, sizes, attention, rows * t.max_length, span, unit, mem, launch.gpu)
    else:
        tokens, seq = infer_shape
        note = _attention_note(what, sizes, attention, tokens, min(seq, tokens), M.DTYPE_BYTES[dtype], mem,
                               launch.gpu)
    if note:
        out["notes"].append(note)


def _plan_training(out: dict, resolved: Resolved, stage: StageConfig, sizes, dtype: str, quant, on_gpu: bool):
    """The training part of a stage's plan: its batch (``out["batch"]``), optimizer and autocast
    (``out["model"]``); (training memory, rows of the longest micro-batch, attention span)."""
    m, t, launch, file = stage.model, stage.train, stage.launch, resolved.file
    if quant and m.lora is None:
        raise RecipeError(file, _key(resolved, stage, "model.lora"),
                          "full fine-tuning of a 4/8-bit model is not possible; set model.lora")
    optimizer, mixed = getattr(t, "optimizer", "adamw"), getattr(t, "mixed_precision", "no")
    if optimizer not in M.OPTIMIZERS:
        raise RecipeError(file, _key(resolved, stage, "train.optimizer"),
                          f"the plan does not know {optimizer!r}; known: {', '.join(M.OPTIMIZERS)}")
    b, out["batch"] = stage_batch(resolved, stage)
    if b is None:
        out["flags"].append(f"CANNOT RUN: {out['batch']['error']}")
    rows = micro_batch_rows(t, b)
    span = attention_span(t, rows)
    out["batch"].update(memory_rows=round(rows, 2), row_tokens=t.max_length, attention_span=span)
    train = _gib(M.train_memory(
        sizes, dtype=dtype, quant=quant, optimizer=optimizer, mixed_precision=mixed,
        parallel=launch.parallel, gpus=launch.gpus, rows=rows, seq_len=t.max_length,
        checkpointing=m.gradient_checkpointing, gpu=on_gpu, span=span))
    # the autocast the runner trains under (core/model/precision.py): a 16-bit model's own
    out["model"].update(optimizer=optimizer, mixed_precision=compute_precision(dtype, mixed))
    if getattr(t, "batch_tokens", None):
        out["notes"].append(_budget_note(t))
    return train, rows, span


def plan_stage(resolved: Resolved, stage: StageConfig, toggles=(), overrides=()) -> dict:
    """The plan of one stage (see the module docstring); memory in GiB rounded to 0.1."""

    m, launch, file = stage.model, stage.launch, resolved.file
    out: dict[str, Any] = {"stage": stage.name, "base": m.base, "launch": {
        "gpus": launch.gpus, "gpu": launch.gpu, "memory_gib": launch.memory_gib, "parallel": launch.parallel},
        "flags": [], "notes": []}
    if str(m.base).startswith("baseline:"):
        out["notes"].append("a baseline: no model to plan")
        return out
    plugins = build_plugins(stage.plugins, file, unused=stage.unused_hooks)
    dtype = m.dtype if m.dtype != "auto" else planned_auto_dtype(launch.gpu)
    c, sizes, attention = stage_sizes(resolved, stage, plugins, dtype)
    quant, on_gpu = "nf4" if m.load_in_4bit else "int8" if m.load_in_8bit else None, launch.gpu != "cpu"
    tuning = "none (frozen features)" if m.features else "lora" if sizes.adapters else "full"
    out["model"] = {"arch": c.arch, "layer_class": c.layer_class, "attention": attention,
                    "attn_implementation": getattr(m, "attn_implementation", "auto"), "params": c.total,
                    "head": c.head, "published_size": c.total - c.head + c.lm_head,
                    "trainable": sizes.trainable, "lora_adapters": sizes.adapters, "dtype": dtype,
                    "quantization": quant, "fine_tuning": tuning}
    if M.activation_note(c.model_type):
        out["notes"].append(M.activation_note(c.model_type))
    if stage.train.crossfit:
        k = stage.train.crossfit
        out["notes"].append(f"train.crossfit {k}: {k} trainings, each on about {k - 1}/{k} of the rows below "
                            "and scoring the rest, one after another in one process (~"
                            f"{k - 1}x the training tokens of one training)")
    if m.cache_frozen:
        out["notes"].append(f"model.cache_frozen: layers 0-{m.freeze_layers - 1} run once per token sequence "
                            "(every view of every row); training and prediction compute the layers above "
                            "only, reading the cached states (REPLICATOR_CACHE/states)")
    if attention == "flash_attention_2" and (not on_gpu or launch.gpu in NO_FLASH):
        out["flags"].append(f"CANNOT RUN: model.attn_implementation flash_attention_2 needs an Ampere or "
                            f"newer CUDA GPU (and the flash-attn package); {launch.gpu} is not one")
    memory: dict[str, Any] = {}
    rows = span = 0.0
    if not m.features:
        memory["train"], rows, span = _plan_training(out, resolved, stage, sizes, dtype, quant, on_gpu)
    tokens, seq = (m.features.batch_tokens, m.features.max_length) if m.features else \
        (stage.predict.batch_tokens, stage.predict.max_length)
    infer_quant = "int8" if stage.predict.load_in_8bit else quant
    # 8-bit prediction with the adapters merged first (predict.merge_lora, GPTQ: core/model/inference.py)
    merged = bool(stage.predict.load_in_8bit and (getattr(stage.predict, "merge_lora", False)
                                                  or getattr(stage.predict, "quantizer", "") == "gptq"))
    memory["inference"] = _gib(M.inference_memory(sizes, dtype=dtype, quant=infer_quant, tokens=tokens,
                                                  seq_len=min(seq, tokens), gpu=on_gpu, merged=merged))
    out["memory_gib"] = memory
    for what, mem in memory.items():
        _fit_flags(out, what, mem, stage, sizes, attention, dtype, (rows, span), (tokens, seq))
    if dtype == "bfloat16" and launch.gpu in NO_BF16:
        out["flags"].append(f"{launch.gpu} has no bfloat16: set model.dtype float16")
    out["fits"] = not any(f.startswith(("DOES NOT FIT", "CANNOT RUN")) for f in out["flags"])
    if not m.features:
        out["data"] = stage_data(stage, plugins, resolved.name, launch.gpus)
        if out["data"]["unknown_sources"]:
            unknown = ", ".join(out["data"]["unknown_sources"])
            out["notes"].append(f"rows of {unknown}: size unknown, not counted")
    out["command"] = launch_command(Path(file), launch, toggles, overrides)
    return out


def plan_resources(recipe: str | Path, toggles=(), overrides=()) -> dict:
    """The plan of every stage of the resolved recipe (no weights, no data read)."""

    resolved = resolve(recipe, list(toggles), list(overrides))
    stages = [plan_stage(resolved, s, toggles, overrides) for s in resolved.stages]
    notes = []
    if len({(s.launch.gpus, s.launch.parallel) for s in resolved.stages}) > 1:
        notes.append("the stages name different launch settings, but `replicate run` runs every stage under "
                     "one launcher (and the run id counts the processes): run the recipe with the largest, "
                     "or split it")
    zero2 = [s.name for s in resolved.stages if s.launch.parallel == "zero2"]
    if zero2:
        notes.append(f"zero2 (stages {', '.join(zero2)}): the runner partitions gradients and optimizer "
                     "states with DeepSpeed ZeRO-2 itself (core/model/zero.py); tested over two CPU "
                     "processes (gloo), 4-bit QLoRA included, not yet on GPUs (NCCL)")
    zero3 = [s.name for s in resolved.stages if s.launch.parallel == "zero3"]
    if zero3:
        notes.append(f"zero3 (stages {', '.join(zero3)}) is sized here but not run: fsdp_full_shard shards "
                     "the same parts with the runner's FSDP2")
    for s in resolved.stages:
        cfg = accelerate_config(Path(resolved.file))
        if s.launch.parallel != "single" and s.launch.gpu != "cpu" and not cfg.is_file():
            notes.append(f"{cfg} not found (stage {s.name}): the shipped ones are in recipes/accelerate/")
    return {"recipe": resolved.name, "file": resolved.file, "toggles": list(resolved.toggles),
            "stages": stages, "fits": all(s.get("fits", True) for s in stages), "notes": notes}


# ---------------------------------------------------------------- the table


def _n(x: float) -> str:
    return f"{x / 1e9:.2f}B" if x >= 1e9 else f"{x / 1e6:.1f}M" if x >= 1e6 else f"{x:,.0f}"


def _model_lines(md: dict, memory: dict) -> list[str]:
    cols = [*M.COMPONENTS, "total"]
    quant = f", {md['quantization']}" if md["quantization"] else ""
    train = f", optimizer {md['optimizer']}, mixed precision {md['mixed_precision']}" if "optimizer" in md \
        else ""
    lines = [f"  model      {md['arch']}, {md['dtype']}{quant}, {md['attention']} attention",
             f"  params     {md['params']:,} ({_n(md['params'])}: backbone + a {md['head']:,}-parameter "
             f"head, no LM head; published size {_n(md['published_size'])})",
             f"  trainable  {md['trainable']:,} ({_n(md['trainable'])}, {md['fine_tuning']}{train})",
             "  GiB/GPU    " + "".join(f"{c:>12}" for c in cols)]
    return lines + [f"  {what:<11}" + "".join(f"{mem[c]:>12.1f}" for c in cols)
                    for what, mem in memory.items()]


def _batch_line(b: dict) -> str:
    packed = b["attention_span"] > b["row_tokens"]
    span = f" (packed: attention over {b['attention_span']:,})" if packed else ""
    at = (f"; memory at the longest micro-batch: {b['memory_rows']:g} row(s) x {b['row_tokens']:,} "
          f"tokens{span}")
    n = b["processes"]
    if "error" in b:
        return (f"  batch      global batch {b['global_rows']} rows per optimizer step (train.global_batch): "
                f"does not split over {n} GPU(s){at}")
    if b["token_budget"]:
        per = f"micro-batches of {b['token_budget']:,} padded tokens"
        per += f" x {b['accumulation']} accumulation" if b["accumulation"] else ", as many as the rows need"
    else:
        per = f"{b['micro_rows']} row(s) x {b['accumulation']} accumulation"
    if b["stated"]:
        return (f"  batch      global batch {b['global_rows']} rows per optimizer step (train.global_batch)"
                f" = {n} GPU(s) x {per}{at}")
    return (f"  batch      {n} GPU(s) x {per} per optimizer step (no train.global_batch: the global batch "
            f"grows with the GPU count){at}")


def _data_lines(d: dict) -> list[str]:
    srcs = " + ".join(f"{a} {v['train']:,}" for a, v in d["sources"].items() if v.get("train"))
    swap = f" x{d['swap_multiplier']} swap" if d["swap_multiplier"] > 1 else ""
    swap += f" x{d['layout_multiplier']} layouts" if d.get("layout_multiplier", 1) > 1 else ""
    return [f"  rows       {d['train_rows']:,} ({srcs or 'none'}){swap} = {d['rows_per_epoch']:,} per epoch, "
            f"x {d['epochs']:g} epoch(s); predicts {d['predicted_rows']:,} rows",
            f"  tokens     per epoch <= {_n(d['tokens_per_epoch_max'])} (rows x max_length), ~ "
            f"{_n(d['tokens_per_epoch_est'])}",
            f"  steps      {d['steps_per_epoch']:,} per epoch, {d['steps']:,} in all"]


def format_plan(p: dict) -> str:
    """The plan as a readable table per stage."""
    toggles = "".join(f" -t {t}" for t in p["toggles"])
    lines = [f"plan of {p['file']}{toggles} (estimates: core/model/memory.py says what they assume)"]
    for s in p["stages"]:
        lg = s["launch"]
        lines += ["", f"stage {s['stage']}: {s['base']} on {lg['gpus']}x {lg['gpu']} "
                      f"({lg['memory_gib']:g} GiB), {lg['parallel']}"]
        if "model" in s:
            lines += _model_lines(s["model"], s["memory_gib"])
        if "batch" in s:
            lines.append(_batch_line(s["batch"]))
        if "data" in s:
            lines += _data_lines(s["data"])
        lines += [f"  !! {f}" for f in s["flags"]] + [f"  note: {n}" for n in s["notes"]]
        if "command" in s:
            lines.append(f"  command    {s['command']}")
    lines += ["", f"note: {TOKENS_NOTE}", *[f"note: {n}" for n in p["notes"]],
              "every stage fits" if p["fits"] else
              "SOME STAGES DO NOT FIT or cannot run on their launch (!! above)"]
    return "\n".join(lines)
