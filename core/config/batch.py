"""Rows per optimizer step as a recipe states it, turned into what each process runs.

A write-up states a global batch: rows per optimizer step, whatever the number of GPUs (16th [P16]: 8;
2nd's m3 [R2]: 16). A recipe says the same with ``train.global_batch``; ``train.batch_size`` is then the
most rows one process holds in one forward pass (a memory bound), and the runner derives the micro-batch
rows and the accumulation from the process count it was launched with, so that 1, 2 or 8 processes take
the same rows per step and the same number of steps. With token-budget micro-batches (``batch_tokens``)
an optimizer step takes micro-batches until it holds ``global_batch`` rows, whatever the process count.

Without ``global_batch`` (the older form, kept for small experiments) ``batch_size`` x ``grad_accum`` is per
process, and the global batch grows with the process count.
"""

from __future__ import annotations

import dataclasses

from replicator.core.errors import ReplicatorError


@dataclasses.dataclass(frozen=True)
class Batching:
    """What one process runs per optimizer step."""

    #: rows per micro-batch (with ``batch_tokens``: its token budget decides; this is ``batch_size``)
    micro_rows: int
    #: micro-batches per process per optimizer step (None with token budgets: the step fills by rows)
    accum: int | None
    #: rows per optimizer step over all processes (with token budgets: at least this many)
    global_rows: int
    processes: int
    #: whether the recipe stated the global batch (else it grows with the process count)
    stated: bool

    def describe(self) -> str:
        per = ("token-budget micro-batches" if self.accum is None
               else f"{self.micro_rows} rows x {self.accum} accumulation")
        return f"global batch {self.global_rows} rows = {self.processes} process(es) x {per}"


def batching(train_config, processes: int, where: str = "train") -> Batching:
    """The micro-batch rows and accumulation for ``processes`` processes: ``global_batch`` rows per step
    split evenly over the processes, each process's share in micro-batches of at most ``batch_size`` rows
    (the largest divisor of the share that fits). A global batch that ``processes`` does not divide is an
    error that names the counts that do."""
    if processes < 1:
        raise ReplicatorError(f"{where}: {processes} processes")
    g, most = train_config.global_batch, train_config.batch_size
    if g is None:
        return Batching(most, train_config.grad_accum, most * train_config.grad_accum * processes, processes,
                        stated=False)
    if train_config.batch_tokens:
        return Batching(most, None, g, processes, stated=True)
    if g % processes:
        fits = [n for n in range(1, g + 1) if g % n == 0]
        raise ReplicatorError(f"{where}.global_batch: {g} rows per step do not split over {processes} "
                              f"processes; launch with one of {fits} processes or change global_batch")
    share = g // processes
    micro = max(d for d in range(1, min(most, share) + 1) if share % d == 0)
    return Batching(micro, share // micro, g, processes, stated=True)


def step_bounds(micro_rows: list[int], b: Batching) -> list[int]:
    """Where each optimizer step starts in the stage's list of micro-batches (their row counts), and the
    end: fixed groups of ``accum`` x processes micro-batches, or, with token budgets, as many micro-batches
    as reach ``global_rows`` rows (the last step takes what is left)."""
    n = len(micro_rows)
    if b.accum is not None:
        group = b.accum * b.processes
        return [*range(0, n, group), n] if n else [0]
    bounds, rows = [0], 0
    for i, r in enumerate(micro_rows):
        rows += r
        if rows >= b.global_rows and i + 1 < n:
            bounds.append(i + 1)
            rows = 0
    return [*bounds, n] if n else [0]
