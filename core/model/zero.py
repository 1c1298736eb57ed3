"""DeepSpeed ZeRO-2 by the runner, as the recipe's ``launch.parallel: zero2`` says (1st place's launch [R1]).

With ``zero2`` and more than one process, the model and the optimizer the recipe names go through
``deepspeed.initialize``: every process keeps the whole weights, and the gradients and the optimizer
state (fp32 master copies and moments) are partitioned over the processes. The runner keeps what it
does in one process:

* accumulation: DeepSpeed's unmanaged mode (``managed_gradient_accumulation: false``): every micro-batch's
  backward goes through the engine with the runner's own loss scale, and the engine's ``step()`` at the
  end of an optimizer step reduces, clips (``train.max_grad_norm``) and updates;
* the learning-rate schedule: the runner's, on the optimizer DeepSpeed wraps (DeepSpeed gets none);
* mixed precision: accelerate's autocast around the forward, as in one process (fp32 master weights,
  ``train.mixed_precision`` compute), not DeepSpeed's bf16 mode, which would store bf16 weights;
* saving: the weights are whole in every process, so the main process writes them as one process would;
  each process writes its optimizer partition beside the checkpoint, and resuming needs the same number
  of processes (each takes its own partition back).

Why the runner and not accelerate's DeepSpeed launcher: accelerate applies DeepSpeed only to GPU
processes (``Accelerator(cpu=True)`` skips it; without it, on a CPU, accelerate reports one process while
DeepSpeed forms a group of all: measured with accelerate 1.15), so the same code could not be tested on a
CPU; and its engine would own accumulation and the schedule. DeepSpeed itself runs on a CPU (its CPU
accelerator, gloo). ZeRO-3 (partitioned weights) is not run: ``fsdp_full_shard`` shards the same parts.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from replicator.core.config.batch import batching
from replicator.core.errors import ReplicatorError
from replicator.core.util.atomic import atomic_torch_save
from replicator.core.util.distributed import rank, world_size
from replicator.core.util.logs import import_quietly

ZERO_STRATEGIES = ("zero2",)


def is_engine(model) -> bool:
    """Whether ``model`` is a DeepSpeed engine (only when DeepSpeed was imported: nothing else makes one)."""
    if "deepspeed" not in sys.modules:
        return False
    from deepspeed import DeepSpeedEngine

    return isinstance(model, DeepSpeedEngine)


def ds_config(train_config) -> dict:
    """The DeepSpeed config of a stage: ZeRO stage 2, the recipe's micro-batch, accumulation and clipping,
    the runner owning the accumulation boundary, no DeepSpeed precision (accelerate's autocast instead)."""
    plan = batching(train_config, world_size())  # token budgets: the runner fills steps
    return {
        "train_micro_batch_size_per_gpu": plan.micro_rows,
        "gradient_accumulation_steps": plan.accum or 1,
        "managed_gradient_accumulation": False,
        "gradient_clipping": float(train_config.max_grad_norm),
        "zero_optimization": {"stage": 2, "contiguous_gradients": True, "overlap_comm": False},
        "zero_allow_untested_optimizer": True,  # AdamW, Kahan-summed AdamW: ZeRO wraps any torch optimizer
        "bf16": {"enabled": False}, "fp16": {"enabled": False},
        "steps_per_print": 2**31 - 1, "wall_clock_breakdown": False,
    }


def initialize(model, optimizer, train_config, accelerator):
    """(engine, ZeRO optimizer): ``model`` placed and wrapped in accelerate's autocast, then partitioned by
    DeepSpeed over the process group the launcher formed."""
    import_quietly("deepspeed")
    try:
        import deepspeed
    except ImportError as e:
        raise ReplicatorError(f"launch.parallel zero2 needs DeepSpeed ({e}): "
                              "pip install -e \".[deepspeed]\"") from e

    model = accelerator.prepare_model(model, evaluation_mode=True)  # device and mixed precision only, no DDP
    with contextlib.redirect_stdout(sys.stderr):  # its config and ZeRO reports go to stdout
        engine, zero_optimizer, _, _ = deepspeed.initialize(model=model, optimizer=optimizer,
                                                            config=ds_config(train_config),
                                                            dist_init_required=False)
    return engine, zero_optimizer


def backward(engine, loss) -> None:
    """One micro-batch's backward: ``loss`` already carries the runner's scale (no division by grad_accum)."""
    engine.backward(loss, scale_wrt_gas=False)


def partition_file(ckpt: Path, step: int, rank: int) -> Path:
    """Where process ``rank`` keeps its optimizer partition of the checkpoint written at ``step``."""
    return ckpt.with_name(f"{ckpt.stem}-zero-step{step}-rank{rank}.pt")


def save_partition(optimizer, ckpt: Path, step: int) -> dict:
    """Every process writes its own optimizer partition next to the checkpoint (no collective: gathering
    them to one process would hold them all in its GPU memory at once); what the checkpoint says of them.
    The step is in the name, so a checkpoint never points at partitions of another step."""
    atomic_torch_save(optimizer.state_dict(), partition_file(ckpt, step, rank()))
    return {"zero_partitions": world_size(), "zero_step": step}


def remove_other_steps(ckpt: Path, step: int) -> None:
    """The partitions of earlier checkpoints (main process, once the checkpoint of ``step`` is written)."""
    keep = {partition_file(ckpt, step, r).name for r in range(world_size())}
    for old in ckpt.parent.glob(f"{ckpt.stem}-zero-step*-rank*.pt"):
        if old.name not in keep:
            old.unlink(missing_ok=True)


def load_partition(optimizer, state: dict, ckpt: Path) -> None:
    """Each process takes its own partition back (after the weights are loaded)."""
    import torch

    n = state.get("zero_partitions") if isinstance(state, dict) else None
    if not isinstance(n, int):
        raise ReplicatorError(f"{ckpt}: the checkpoint was not written under launch.parallel zero2 (no ZeRO "
                              "partitions); resume it with the launch that wrote it")
    if n != world_size():
        raise ReplicatorError(f"{ckpt}: written by {n} processes under zero2, resumed by {world_size()}; "
                              f"resume with {n} processes (each takes its own optimizer partition back)")
    path = partition_file(ckpt, state["zero_step"], rank())
    if not path.is_file():
        raise ReplicatorError(f"{ckpt}: its optimizer partition {path.name} is missing; delete {ckpt.name} "
                              "to train the stage from the start")
    parts: list = [None] * n  # DeepSpeed reads only this process's entry (a checkpoint of the same layout)
    parts[rank()] = torch.load(path, map_location="cpu", weights_only=False)
    optimizer.load_state_dict(parts, load_optimizer_states=True, load_from_fp32_weights=True)
