"""The training loop of one stage, written out in one place: plan -> optimizer -> steps -> checkpoints.

The same code runs in one process and under a launcher: ``accelerate launch --num_processes N`` on
GPUs, ``torchrun --nproc_per_node N`` on CPU (gloo; ``accelerate launch --cpu`` starts one process
unless MPI is set up): an optimizer step takes ``global_batch`` rows from one schedule, whatever the
process count (core/config/batch.py derives each process's micro-batch rows and accumulation; without
``global_batch``, ``grad_accum`` micro-batches per process, so N processes with ``grad_accum`` g give the
same steps as one process with N x g);
each process takes every N-th micro-batch of the step, padded with weight-0 repeats to the same
count, gradients are synchronised once per step (``no_sync`` before the last micro-batch), and
the loss is scaled so that the averaged gradient is the mean over the step's micro-batches, as
in one process. Dropout masks are seeded per micro-batch (:func:`micro_seed`), so they do not
depend on which process runs it. Only the main process writes checkpoints.
A stage with ``checkpoint.pt`` resumes from it: model, optimizer, scheduler, RNG, loss history and
token count come back, so a killed run finishes with the same numbers as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import logging
import math
import os
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from replicator.core.config.batch import batching, step_bounds
from replicator.core.config.recipe import StageConfig
from replicator.core.errors import ReplicatorError
from replicator.core.model import zero
from replicator.core.model.loading import load_trainable
from replicator.core.model.precision import compute_precision, keep_masters
from replicator.core.model.sharding import (
    FSDP_STRATEGIES,
    gradient_sync,
    is_sharded,
    load_optimizer_state,
    optimizer_state,
    shard_model,
    strategy,
    trainable_to_save,
    whole,
)
from replicator.core.model.tensors import head_module
from replicator.core.model.zero import backward as zero_backward
from replicator.core.model.zero import is_engine
from replicator.core.tokens.batches import (
    Encoder,
    collate,
    forward_logits,
    forward_packed_logits,
    length_grouped_batches,
    token_budget_batches,
    units_of,
)
from replicator.core.util.atomic import atomic_save_safetensors, atomic_torch_save
from replicator.core.util.distributed import all_sum, barrier, use_cpu, world_size
from replicator.core.util.tracking import Tracker, current

log = logging.getLogger(__name__)
CHECKPOINT = "checkpoint.pt"
#: what a checkpoint must hold to be resumed from (:meth:`Loop.resume`)
RESUME_KEYS = ("step", "trainable", "optimizer", "scheduler", "torch_rng", "history")
BEST = "best.safetensors"


def epoch_schedule(train_rows, stage: StageConfig, plugins, encoder, seed: int, n_processes: int = 1):
    """Per epoch: augmented rows and their micro-batches (the derived micro-batch rows of
    core/config/batch.py, or up to ``batch_tokens`` padded tokens); then the optimizer steps: where each
    starts in the stage's list of micro-batches (``global_batch`` rows, or ``grad_accum`` micro-batches
    from each of the ``n_processes`` processes), the end last."""
    train_config = stage.train
    plan = batching(train_config, n_processes, f"stage {stage.name}: train")
    n_epochs = max(1, math.ceil(train_config.epochs))
    epochs = []
    for e in range(n_epochs):
        rows = plugins.chain("augment", "rows", list(train_rows), epoch=e, seed=seed)
        encoder.prepare(rows, train_config.max_length)  # the token cache: tokenise the misses in one pass
        lengths = [len(encoder(r, train_config.max_length)) for r in rows]
        rng = random.Random(f"{seed}:{e}")
        if train_config.batch_tokens:
            batches = token_budget_batches(lengths, units_of(rows), train_config.batch_tokens, rng)
        else:
            batches = length_grouped_batches(lengths, units_of(rows), plan.micro_rows, rng)
        if e == n_epochs - 1 and train_config.epochs < n_epochs:
            batches = batches[: max(1, int(len(batches) * (train_config.epochs - (n_epochs - 1))))]
        epochs.append((rows, batches))
    micro = [(e, b) for e, (_, batches) in enumerate(epochs) for b in batches]
    bounds = step_bounds([len(b) for _, b in micro], plan)
    if train_config.max_steps:
        bounds = bounds[: train_config.max_steps + 1]
    return epochs, micro, bounds


def keep_freed_memory() -> bool:
    """glibc malloc on Linux: keep the memory a training step frees for the next step instead of handing
    it back to the kernel. By default glibc serves big tensors with fresh mmaps and trims the heap top, so
    every step faults in its activations anew, page by page (measured on a CPU, Gemma-3-270M, 8 x 256
    tokens: 650k minor faults, a third of the step's CPU time), and more so when micro-batch shapes vary.
    No mmaps and no trimming (``mallopt``; trim threshold -1 is glibc's "never") end that; the resident
    memory stays at its high-water mark, which a training step reaches anyway. Whether it applied."""

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_mmap_max = -1, -4
    return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, -1))


def _param_groups(model, train_config, head_name: str):
    """The backbone's trainable tensors at ``lr``, the head's at ``head_lr`` (one learning rate each:
    LoRA's alpha / r scaling is in the adapter's forward, not in the optimizer)."""
    head, body = [], []
    for n, p in model.named_parameters():
        if p.requires_grad:
            (head if f".{head_name}." in f".{n}" or n.startswith(head_name + ".") else body).append(p)
    groups = [{"params": body, "lr": train_config.lr}]
    if head:
        groups.append({"params": head, "lr": train_config.head_lr or train_config.lr})
    return [g for g in groups if g["params"]]


def check_precision(model, train_config) -> None:
    """The guard after :func:`~replicator.core.model.precision.keep_masters`: no 16-bit trainable weight under
    a plain optimizer. An update smaller than half the weight's bf16 spacing (2^-8 relative) is rounded
    away, so at lr 2.5e-6 most weights would never move; Kahan-summed AdamW keeps the lost part."""
    import torch

    low = {p.dtype for p in model.parameters()
           if p.requires_grad and p.dtype in (torch.bfloat16, torch.float16)}
    if low and train_config.optimizer != "adamw_kahan":
        raise ReplicatorError(
            f"train.optimizer {train_config.optimizer}: {sorted(str(d).replace('torch.', '') for d in low)} "
            "trainable weights lose every update below their 16-bit resolution (at lr 2.5e-6 nearly all "
            "of them); set train.optimizer: adamw_kahan (Kahan-summed updates, as 2nd place [R2]) or "
            "model.dtype: float32 with train.mixed_precision: bf16 (fp32 master weights)")


def check_parallel(distributed_type) -> None:
    """Refuse accelerate's own sharding launchers: the runner shards itself, as the recipe's
    ``launch.parallel`` says (FSDP2, core/model/sharding.py; DeepSpeed ZeRO-2, core/model/zero.py), and saves
    whole tensors; accelerate's FSDP plugin or DeepSpeed engine would wrap the model a second time and own the
    optimizer step."""
    name = str(getattr(distributed_type, "value", distributed_type))
    if name in ("FSDP", "DEEPSPEED"):
        raise ReplicatorError(
            f"accelerate launched the run with {name}: the runner shards the model itself (FSDP2 or "
            "DeepSpeed ZeRO-2) as the recipe's launch.parallel says, and an accelerate FSDP or DeepSpeed "
            "launch would wrap it a second time. Launch with recipes/accelerate/multi_gpu.yaml "
            "(`replicate plan RECIPE` prints the command)")


def build_optimizer(groups, train_config):
    """The optimizer the recipe names, with its betas, eps and weight decay."""
    import torch

    kw = {"lr": train_config.lr, "betas": tuple(train_config.betas), "eps": train_config.eps,
          "weight_decay": train_config.weight_decay}
    if train_config.optimizer == "adamw":
        return torch.optim.AdamW(groups, **kw)
    if train_config.optimizer == "adamw_kahan":
        import optimi

        return optimi.AdamW(groups, kahan_sum=True, foreach=False, **kw)
    if not torch.cuda.is_available():
        raise ReplicatorError(f"train.optimizer {train_config.optimizer}: bitsandbytes' 8-bit optimizers "
                              "need a CUDA GPU; on a CPU use adamw (the smoke toggles do, and their "
                              "reports say so)")
    import bitsandbytes as bnb

    cls = bnb.optim.PagedAdamW8bit if train_config.optimizer == "paged_adamw_8bit" else bnb.optim.AdamW8bit
    return cls(groups, **kw)


def lr_factor(step: int, total: int, warmup: int, schedule: str, floor: float) -> float:
    """The learning rate of optimizer step ``step`` (0-based) as a share of the peak: linear warm-up from
    ``floor`` over ``warmup`` steps, then ``schedule`` (cosine / linear decay to ``floor``, or constant)."""
    if step < warmup:
        return floor + (1 - floor) * step / warmup
    if schedule == "constant":
        return 1.0
    done = (step - warmup) / max(1, total - warmup)
    shape = 0.5 * (1 + math.cos(math.pi * done)) if schedule == "cosine" else 1 - done
    return floor + (1 - floor) * max(0.0, shape)


def build_scheduler(optimizer, train_config, steps: int):

    import torch

    warmup = train_config.warmup_steps or round(train_config.warmup_ratio * steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, functools.partial(
        lr_factor, total=steps, warmup=warmup, schedule=train_config.schedule, floor=train_config.lr_floor))


@dataclasses.dataclass
class Loop:
    """What the loop carries from step to step (and what a checkpoint saves)."""

    acc: Any
    model: Any
    optimizer: Any
    scheduler: Any
    ckpt: Path
    step: int = 0
    history: list[float] = dataclasses.field(default_factory=list)
    tokens: int = 0
    #: (optimizer step, validation log loss) of each periodic evaluation (``train.eval_every``)
    evals: list[tuple[int, float]] = dataclasses.field(default_factory=list)

    def save(self, step: int) -> None:
        import torch

        main = self.acc.is_main_process  # a sharded model is gathered whole to it: every process takes part
        trainable = trainable_to_save(self.model, self.acc.unwrap_model(self.model), main)
        engine = zero.is_engine(self.model)
        if engine:  # every process writes its own partition, all before the checkpoint that names them
            optimizer = zero.save_partition(self.optimizer, self.ckpt, step)
            barrier()
        else:
            optimizer = optimizer_state(self.model, self.optimizer)
        if not main:
            return
        atomic_torch_save({
            "step": step, "trainable": trainable,
            "optimizer": optimizer, "scheduler": self.scheduler.state_dict(),
            "torch_rng": torch.random.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "history": self.history, "tokens": self.tokens, "evals": self.evals,
        }, self.ckpt)
        if engine:
            zero.remove_other_steps(self.ckpt, step)

    def resume(self) -> bool:
        """Continue from the checkpoint: weights, optimizer, schedule, RNG, history. False, and nothing
        changed, when it cannot be read (garbage, truncated, not a checkpoint of this loop): a warning names
        it and why, the main process removes it and the stage trains from the start, so that rerunning the
        same command recovers by itself; so does one whose weights do not fit the model (checked before any
        is copied). One whose weights loaded but whose optimizer or schedule state does not fit is an error
        naming it and saying to delete it."""
        import torch

        try:
            state = torch.load(self.ckpt, map_location="cpu", weights_only=False)
            if not isinstance(state, dict) or not all(k in state for k in RESUME_KEYS):
                raise ValueError(f"not a checkpoint of this trainer (expected {', '.join(RESUME_KEYS)})")
            # checks every saved tensor against the model before it copies any: a misfit changes nothing
            load_trainable(self.acc.unwrap_model(self.model), state["trainable"], where=str(self.ckpt))
        except Exception as e:  # unpickling raises anything: UnpicklingError, RuntimeError, EOFError, ...
            why = str(e).removeprefix(f"{self.ckpt}: ").strip()
            log.warning("%s cannot be resumed from (%s: %s): removed, the stage trains from the start",
                        self.ckpt, type(e).__name__, why.splitlines()[0][:200] if why else "")
            if self.acc.is_main_process:
                self.ckpt.unlink(missing_ok=True)
            return False
        try:
            if zero.is_engine(self.model):
                zero.load_partition(self.optimizer, state["optimizer"], self.ckpt)
            else:
                load_optimizer_state(self.model, self.optimizer, state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            torch.random.set_rng_state(state["torch_rng"])
            if torch.cuda.is_available() and state.get("cuda_rng") is not None:
                torch.cuda.set_rng_state_all(state["cuda_rng"])
            self.step, self.history, self.tokens = state["step"], state["history"], state.get("tokens", 0)
            self.evals = [tuple(e) for e in state.get("evals", [])]
        except ReplicatorError:
            raise
        except Exception as e:  # loaded in part: the model's weights are the checkpoint's, the rest is not
            raise ReplicatorError(f"{self.ckpt}: cannot resume from it ({type(e).__name__}: {e}); delete it "
                                  "and rerun to train this stage from the start") from e
        return True

    def evaluate(self, step: int, score_fn, best: Path) -> None:
        """Score the model at ``step`` (``score_fn``: validation log loss, every process takes part);
        the main process keeps its weights in ``best`` when no earlier evaluation scored lower."""

        with whole(self.model) as model:
            score = float(score_fn(model))
        self.model.train()
        better = not self.evals or score < min(s for _, s in self.evals)
        if better:  # every process decides the same (the score is the gathered one)
            weights = trainable_to_save(self.model, self.acc.unwrap_model(self.model),
                                        self.acc.is_main_process)
        if better and self.acc.is_main_process:
            atomic_save_safetensors(weights, best,
                                    metadata={"step": str(step), "valid_log_loss": repr(score)})
        self.evals.append((step, score))
        log.info("step %d: validation log loss %.5f (best %.5f)", step, score, min(s for _, s in self.evals))
        barrier()

    def keep_best(self, best: Path) -> dict:
        """Load the best evaluated weights into the model; what the summary says of the evaluations."""
        from safetensors.torch import load_file

        step, score = min(self.evals, key=lambda e: (e[1], e[0]))
        load_trainable(self.acc.unwrap_model(self.model), load_file(str(best)), where=str(best))
        log.info("kept the weights of step %d (validation log loss %.5f)", step, score)
        return {"evals": [list(e) for e in self.evals], "best_step": step, "best_valid_log_loss": score}


def _start(stage: StageConfig, model, info, steps: int, init_from: Path | None, artifacts: Path) -> Loop:
    """The accelerator, optimizer and schedule; the weights of ``init_from``; a checkpoint resumed."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from safetensors.torch import load_file

    train_config = stage.train
    # the precision rules (core/model/precision.py): 16-bit weights compute under their own autocast, the
    # trainable ones are fp32 masters (before the weights of init_from load into them, at full precision)
    mixed = compute_precision(info["dtype"], train_config.mixed_precision)
    keep_masters(model, train_config.optimizer)
    AcceleratorState._reset_state()  # each stage states its precision; the process group (PartialState) stays
    acc = Accelerator(cpu=use_cpu(), mixed_precision=mixed)
    check_parallel(acc.distributed_type)
    if init_from is not None:
        n = load_trainable(model, load_file(str(init_from)), skip_head=stage.reinit_head,
                           where=str(init_from))
        log.info("started from %s (%d tensors%s)", init_from, n,
                 ", head re-initialised" if stage.reinit_head else "")
    check_precision(model, train_config)
    parallel = strategy(stage.launch.parallel)
    # FSDP2 by the runner (core/model/sharding.py): before the optimizer, which holds the sharded weights
    if parallel in FSDP_STRATEGIES:
        model = shard_model(model, parallel, acc.device, mixed)
        log.info("training sharded over %d processes (%s, FSDP2)", acc.num_processes, parallel)
    optimizer = build_optimizer(_param_groups(model, train_config, info["head"]), train_config)
    # the runner steps the schedule (on the optimizer ZeRO wraps, too): accelerate would step a prepared
    # one once per process per optimizer step
    scheduler = build_scheduler(optimizer, train_config, steps)
    if parallel in zero.ZERO_STRATEGIES:
        model, optimizer = zero.initialize(model, optimizer, train_config, acc)
        log.info("training over %d processes with DeepSpeed ZeRO-2 (%s)", acc.num_processes, parallel)
    elif not parallel:
        model, optimizer = acc.prepare(model, optimizer)
    loop = Loop(acc, model, optimizer, scheduler, artifacts / CHECKPOINT)
    if loop.ckpt.exists() and loop.resume():  # an unreadable one is removed: training starts over
        log.info("resuming from %s at step %d/%d", loop.ckpt, loop.step, steps)
    return loop


def _micro_step(loop: Loop, rows, encoder, tokenizer, train_config, loss_fn, aux_loss, scale: float) -> float:
    """Forward and backward of one micro-batch, its loss multiplied by ``scale``; that loss as a float."""
    import torch

    acc = loop.acc
    seqs = [encoder(r, train_config.max_length) for r in rows]
    ids, mask = collate(seqs, tokenizer.pad_token_id, acc.device)
    labels = torch.tensor([r["label"] for r in rows], dtype=torch.float32, device=acc.device)
    if train_config.packed:
        logits = forward_packed_logits(loop.model, head_module(acc.unwrap_model(loop.model))[1], seqs,
                                       acc.device)
    else:
        logits = forward_logits(loop.model, ids, mask)
    logits = logits.float()  # an autocast forward's logits are 16-bit; the loss is computed in fp32
    extra = {"rows": rows, "input_ids": ids, "attention_mask": mask}
    loss = loss_fn(logits, labels, extra)
    if aux_loss is not None:
        loss = loss + aux_loss(logits, extra)
    loss = loss * scale
    if is_engine(loop.model):
        zero_backward(loop.model, loss)
    else:
        acc.backward(loss)
    return loss.item()


def share(everyone: list, rank: int, n: int) -> list[tuple[int, Any, float]]:
    """This process's part of one optimizer step's micro-batches: ``(index in the step, micro-batch,
    weight)`` for every ``n``-th, padded with weight-0 repeats so that every process runs as many
    forward/backward passes (gradients are averaged over processes in lockstep)."""
    mine = [(k, mb, 1.0) for k, mb in enumerate(everyone) if k % n == rank]
    per_process = math.ceil(len(everyone) / n)
    pad = [(k, everyone[k], 0.0) for k in range(len(everyone))]
    return mine + pad[: per_process - len(mine)]


def micro_seed(seed: int, index: int) -> int:
    """The torch seed of the ``index``-th micro-batch of a stage (dropout masks): fixed by the
    micro-batch, not by which process runs it or how many ran before it on that process."""
    return (seed * 1_000_003 + index) % 2**63


def step_scales(everyone, n_processes: int, by_rows: bool) -> list[float]:
    """The loss factor of each micro-batch of a step: processes average gradients, so ``n_processes``
    x its share of the step, 1 / (micro-batches) or, with ``by_rows`` (token-budget micro-batches of
    varying row counts), its rows / the step's rows: the step's gradient is then the mean over its
    rows (each micro-batch's loss is a mean over its own rows)."""
    if not by_rows:
        return [n_processes / len(everyone)] * len(everyone)
    rows = sum(len(batch) for _, batch in everyone)
    return [n_processes * len(batch) / rows for _, batch in everyone]


def _step(loop: Loop, everyone, first_index: int, seed: int, run_micro, by_rows: bool = False) -> float:
    """One optimizer step: this process's micro-batches (gradients synchronised once, on the last),
    the update; the step's mean loss over all processes (per micro-batch, or per row with ``by_rows``)."""

    import torch

    acc = loop.acc
    own_sync = is_sharded(loop.model) or is_engine(loop.model)  # not DDP's no_sync
    mine = share(everyone, acc.process_index, acc.num_processes)
    scales = step_scales(everyone, acc.num_processes, by_rows)
    total = 0.0
    for j, (k, (e, batch), weight) in enumerate(mine):
        torch.manual_seed(micro_seed(seed, first_index + k))
        sync = j == len(mine) - 1
        with contextlib.nullcontext() if sync or own_sync else acc.no_sync(loop.model), \
                gradient_sync(loop.model, sync):
            total += run_micro(e, batch, scales[k] * weight)
    return all_sum(total) / acc.num_processes


def _optimizer_step(loop: Loop, train_config, measure: bool = False):
    """Clip, update, step the schedule, zero the gradients; the gradient norm before clipping (a tensor or
    float; None where it is not at hand: no clipping and not ``measure``, or a sharded model without
    clipping). Measuring reads the gradients and changes none of them."""

    if is_engine(loop.model):  # reduces the partitioned gradients, clips (its config), updates, zeroes
        loop.model.step()
        loop.scheduler.step()
        norm = getattr(loop.model, "get_global_grad_norm", None)
        return norm() if measure and norm is not None else None
    norm = None
    if train_config.max_grad_norm > 0:
        norm = loop.acc.clip_grad_norm_(loop.model.parameters(), train_config.max_grad_norm)
    elif measure and not is_sharded(loop.model):
        norm = grad_norm(loop.model)
    loop.optimizer.step()
    loop.scheduler.step()
    loop.optimizer.zero_grad(set_to_none=True)
    return norm


def grad_norm(model):
    """The L2 norm of every gradient of ``model`` (fp32; the gradients are read, not changed), None when
    none has one."""
    import torch

    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return None
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))


def step_metrics(loop: Loop, loss: float, lrs: list[float], norm, step_tokens: int, seconds: float) -> dict:
    """What a step reports to the tracker and the ``on_train_step`` callbacks (see the hookspec)."""
    out = {"loss": loss, "lr": lrs[0], "tokens": loop.tokens,
           "tokens_per_second": step_tokens / seconds if seconds > 0 else None}
    if len(lrs) > 1:
        out["lr_head"] = lrs[-1]
    if norm is not None:
        full = getattr(norm, "full_tensor", None)  # FSDP2 clips to a DTensor norm
        out["grad_norm"] = float(full() if full is not None else norm)
    return {k: v for k, v in out.items() if v is not None}


@dataclasses.dataclass
class Watchers:
    """Who hears of a training's steps and evaluations (main process): the stage's tracker
    (:mod:`replicator.core.util.tracking`) and the plugins' ``on_train_step`` / ``on_evaluate`` callbacks.
    Neither changes a number; the gradient norm and step metrics are computed only where one listens."""

    stage: str
    plugins: Any
    tracker: Tracker
    #: the steps of the stage's earlier trainings (cross-fitted folds) come first on the tracker
    offset: int
    hooks: dict
    t: float = 0.0
    tokens: int = 0

    @classmethod
    def of(cls, stage: str, plugins, tracker: Tracker | None, main: bool) -> Watchers:
        tracker = tracker or current()  # the stage's (a cross-fitted fold's training too), else none
        hooks = {h: main and bool(plugins.providers(h)) for h in ("on_train_step", "on_evaluate")}
        return cls(stage, plugins, tracker, tracker.next_training(), hooks)

    @property
    def steps(self) -> bool:
        return self.tracker.active or self.hooks["on_train_step"]

    def start(self, loop: Loop) -> None:
        self.t, self.tokens = time.time(), loop.tokens

    def step(self, loop: Loop, done: int, loss: float, lrs: list[float], norm) -> None:
        if not self.steps:
            return
        metrics = step_metrics(loop, loss, lrs, norm, loop.tokens - self.tokens, time.time() - self.t)
        self.tracker.log(metrics, self.offset + done, prefix="train/")
        if self.hooks["on_train_step"]:
            self.plugins.notify("on_train_step", stage=self.stage, step=done, metrics=metrics)

    def evaluation(self, done: int, evals: list[tuple[int, float]]) -> None:
        scores = {"valid_log_loss": evals[-1][1], "best_valid_log_loss": min(s for _, s in evals)}
        self.tracker.log(scores, self.offset + done, prefix="eval/")
        if self.hooks["on_evaluate"]:
            self.plugins.notify("on_evaluate", stage=self.stage, step=done, metrics=scores)


def with_offset(loss_fn, offset):
    """``loss_fn`` of the preference logits plus ``offset(rows)`` ((B, 3) log-probabilities of a baseline,
    ``model.offset``): the model learns the residual over the baseline."""
    import torch

    def shifted(logits, labels, batch):
        add = torch.as_tensor(offset(batch["rows"]), dtype=logits.dtype, device=logits.device)
        return loss_fn(torch.cat([logits[:, :3] + add, logits[:, 3:]], dim=1), labels, batch)

    return shifted


def train_stage(stage: StageConfig, plugins, train_rows, model, tokenizer, info, artifacts: Path, seed: int,
                init_from: Path | None = None, progress: bool = True, score_fn=None, tracker=None,
                offset=None) -> dict:
    """Train ``model`` on ``train_rows``; resume from ``artifacts/checkpoint.pt`` when present. With
    ``train.eval_every``, ``score_fn(model)`` (the validation log loss) runs every that many steps and
    at the end, and the model ends with the weights that scored lowest. Steps and evaluations are
    reported to ``tracker`` (default: the stage's) and the callbacks (:class:`Watchers`). ``offset``
    (rows -> (B, 3) log-probabilities) is added to the preference logits the loss sees
    (:func:`with_offset`)."""

    train_config = stage.train
    if use_cpu() and keep_freed_memory():
        log.debug("glibc malloc keeps freed memory for the next step (no mmaps, no trimming)")
    encoder = Encoder(plugins, tokenizer)
    epochs, micro, bounds = epoch_schedule(train_rows, stage, plugins, encoder, seed, world_size())
    steps = len(bounds) - 1
    loop = _start(stage, model, info, steps, init_from, artifacts)
    loss_fn = plugins.one("loss") if offset is None else with_offset(plugins.one("loss"), offset)
    aux_loss = info.get("aux_loss")  # aux heads add their own term
    crash_after = int(os.environ.get("REPLICATOR_CRASH_AFTER_STEP", "0"))  # tests: simulate a kill
    acc, start, tokens_before = loop.acc, loop.step, loop.tokens
    watch = Watchers.of(stage.name, plugins, tracker, acc.is_main_process)
    bar = tqdm(total=steps, initial=start, desc=f"train {stage.name}",
               disable=not (progress and acc.is_main_process), dynamic_ncols=True, file=sys.stderr)
    loop.model.train()
    t0, ema = time.time(), None

    def run_micro(e, batch, scale):
        return _micro_step(loop, [epochs[e][0][i] for i in batch], encoder, tokenizer, train_config, loss_fn,
                           aux_loss, scale)

    for step in range(start, steps):
        watch.start(loop)
        everyone = micro[bounds[step]:bounds[step + 1]]
        step_loss = _step(loop, everyone, bounds[step], seed, run_micro,
                          by_rows=bool(train_config.batch_tokens))
        lrs = loop.scheduler.get_last_lr()  # the rates this step updates with
        norm = _optimizer_step(loop, train_config, measure=watch.steps)
        # tokens of the whole step (all processes), from the cached encodings: the same count everywhere
        loop.tokens += sum(len(encoder(epochs[e][0][i], train_config.max_length))
                           for e, batch in everyone for i in batch)
        _record(loop, step, step_loss)
        ema = step_loss if ema is None else 0.9 * ema + 0.1 * step_loss
        bar.update(1)
        bar.set_postfix(loss=f"{ema:.4f}",
                        tok_s=f"{(loop.tokens - tokens_before) / max(time.time() - t0, 1e-9):.0f}")
        done = step + 1
        watch.step(loop, done, step_loss, lrs, norm)
        if (train_config.eval_every and score_fn is not None
                and (done % train_config.eval_every == 0 or done == steps)):
            loop.evaluate(done, score_fn, artifacts / BEST)
            watch.evaluation(done, loop.evals)
        if done % train_config.checkpoint_every == 0 or done == steps:
            loop.save(done)
        if crash_after and done == crash_after:
            raise RuntimeError(f"simulated crash after step {done} (REPLICATOR_CRASH_AFTER_STEP)")
    bar.close()
    best = loop.keep_best(artifacts / BEST) if loop.evals else {}
    return best | _summary(loop, steps, start, train_rows, epochs, encoder, loop.tokens - tokens_before,
                           time.time() - t0)


def _record(loop: Loop, step: int, step_loss: float) -> None:
    """The step's loss into the history; a non-finite one stops training, the last good checkpoint kept."""
    if not math.isfinite(step_loss):
        loop.save(step)
        raise ReplicatorError(f"training loss is {step_loss} at step {step + 1}; "
                              f"last good checkpoint kept at {loop.ckpt}")
    loop.history.append(round(step_loss, 6))


def _summary(loop: Loop, steps, start, train_rows, epochs, encoder, new_tokens: int, elapsed: float) -> dict:
    history = loop.history
    return {
        "optimizer_steps": steps,
        "resumed_at_step": start,
        "n_train_rows": len(train_rows),
        "n_train_rows_augmented": sum(len(r) for r, _ in epochs),
        "train_loss_first": float(np.mean(history[:10])) if history else None,
        "train_loss_last": float(np.mean(history[-10:])) if history else None,
        "train_loss_history": history,
        "train_tokens": loop.tokens,
        "train_tokens_per_second": round(new_tokens / elapsed, 1) if elapsed > 0 and new_tokens else None,
        "train_truncated_share": round(encoder.truncated / max(encoder.count, 1), 4),
    }
