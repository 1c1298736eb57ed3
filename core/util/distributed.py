"""Several processes (``accelerate launch --num_processes N``): who writes, where everyone waits, and
how a prediction split over the processes comes back whole.

One process (the default) makes every helper a no-op: rank 0 of 1, the main process, no barrier,
nothing gathered. Under a launcher (``WORLD_SIZE`` > 1) accelerate's ``PartialState`` sets up the
process group from the launcher's environment, on CPU with gloo. On CPU the launcher is
``torchrun --nproc_per_node N`` (``accelerate launch --cpu --num_processes N`` starts a single
process unless MPI is configured).
"""

from __future__ import annotations

import os

import numpy as np


def world_size() -> int:
    """The number of processes the launcher started (``WORLD_SIZE``), 1 without a launcher."""
    raw = os.environ.get("WORLD_SIZE", "").strip()
    return int(raw) if raw else 1


def use_cpu() -> bool:
    """CPU processes (gloo): ``ACCELERATE_USE_CPU`` set (``accelerate launch --cpu``), or no CUDA device.
    accelerate forms a process group of CPU processes only when told so."""
    if os.environ.get("ACCELERATE_USE_CPU", "").strip().lower() in ("1", "true", "yes"):
        return True
    import torch

    return not torch.cuda.is_available()


def _state():
    from accelerate import PartialState

    return PartialState(cpu=use_cpu())


def rank() -> int:
    return _state().process_index if world_size() > 1 else 0


def is_main() -> bool:
    """Whether this process writes files (rank 0; the only process without a launcher)."""
    return rank() == 0


def barrier() -> None:
    """Every process waits here until all have arrived (nothing to wait for in one process)."""
    if world_size() > 1:
        _state().wait_for_everyone()


def shard(n: int) -> list[int]:
    """The positions ``0..n-1`` this process handles: every ``world_size()``-th, starting at its rank
    (rows sorted by length first, so every process gets about the same work)."""
    return list(range(rank(), n, world_size()))


def gather_rows(positions: list[int], values: np.ndarray, n: int) -> np.ndarray:
    """The ``n`` rows of ``values`` computed by all processes (each gave its ``positions``), put
    back in order: every position exactly once, no duplicate and no padding left."""
    parts: list = [(list(positions), np.asarray(values))]
    if world_size() > 1:
        import torch.distributed as dist

        parts = [None] * world_size()
        dist.all_gather_object(parts, (list(positions), np.asarray(values)))
    out = np.zeros((n, *np.asarray(values).shape[1:]), dtype=np.float64)
    seen = np.zeros(n, dtype=int)
    for pos, vals in parts:
        out[pos] = vals
        seen[pos] += 1
    if not (seen == 1).all():
        raise RuntimeError(f"gathered predictions: {int((seen == 0).sum())} row(s) predicted by no process, "
                           f"{int((seen > 1).sum())} by several (expected each exactly once)")
    return out


def all_sum(value: float) -> float:
    """``value`` summed over the processes (the same float on every process)."""
    if world_size() == 1:
        return value
    import torch
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item())
