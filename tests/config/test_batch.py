"""The global batch (core/config/batch.py): what each process runs of ``train.global_batch``, and where the
optimizer steps start in a stage's micro-batches, for 1, 2 and 8 processes."""

from __future__ import annotations

import pytest

from replicator.core.config.batch import Batching, batching, step_bounds
from replicator.core.config.recipe import TrainConfig
from replicator.core.errors import ReplicatorError


def _micro_batches(rows: int, micro: int) -> list[int]:
    """The row counts of the micro-batches a stage of ``rows`` rows makes, ``micro`` rows each (the last one
    what is left)."""
    return [min(micro, rows - start) for start in range(0, rows, micro)]


@pytest.mark.parametrize("global_batch, batch_size", [(16, 4), (8, 2), (80, 8), (64, 64)])
def test_one_two_and_eight_processes_give_the_same_global_batch_and_steps(global_batch, batch_size):
    t = TrainConfig(global_batch=global_batch, batch_size=batch_size)
    rows = 1003
    steps = set()
    for n in (1, 2, 8):
        b = batching(t, n)
        assert b.global_rows == global_batch and b.stated and b.processes == n
        assert b.micro_rows * b.accum * n == global_batch and b.micro_rows <= batch_size
        micro = _micro_batches(rows, b.micro_rows)
        bounds = step_bounds(micro, b)
        assert bounds[0] == 0 and bounds[-1] == len(micro)
        # every step but the last holds the global batch's rows
        per_step = [sum(micro[a:z]) for a, z in zip(bounds[:-1], bounds[1:], strict=True)]
        assert set(per_step[:-1]) == {global_batch} and 0 < per_step[-1] <= global_batch
        steps.add(len(bounds) - 1)
    assert steps == {-(-rows // global_batch)}


def test_a_share_takes_the_largest_micro_batch_that_divides_it():
    t = TrainConfig(global_batch=24, batch_size=5)
    assert (batching(t, 1).micro_rows, batching(t, 1).accum) == (4, 6)  # 24 rows: 4 x 6 (5 does not divide)
    assert (batching(t, 2).micro_rows, batching(t, 2).accum) == (4, 3)
    assert (batching(t, 8).micro_rows, batching(t, 8).accum) == (3, 1)


def test_a_global_batch_that_does_not_split_is_an_error_naming_the_counts_that_do():
    t = TrainConfig(global_batch=8, batch_size=2)
    with pytest.raises(ReplicatorError, match=r"train.global_batch: 8 rows per step do not split over 3 "
                                              r"processes; launch with one of \[1, 2, 4, 8\] processes"):
        batching(t, 3)
    with pytest.raises(ReplicatorError, match="stages.s1.train.global_batch"):
        batching(t, 5, where="stages.s1.train")
    with pytest.raises(ReplicatorError, match="0 processes"):
        batching(t, 0)


def test_token_budgets_fill_a_step_with_the_global_batch_whatever_the_processes():
    t = TrainConfig(global_batch=10, batch_size=4, batch_tokens=4096)
    micro = [3, 5, 2, 4, 4, 1, 6, 2]  # rows of length-grouped budgets: they vary
    bounds = {n: step_bounds(micro, batching(t, n)) for n in (1, 2, 8)}
    assert bounds[1] == bounds[2] == bounds[8] == [0, 3, 7, 8]  # 10 rows, then 15, then what is left
    assert batching(t, 8).accum is None and batching(t, 8).global_rows == 10


def test_without_a_global_batch_it_grows_with_the_processes():
    t = TrainConfig(batch_size=4, grad_accum=2)
    assert [batching(t, n).global_rows for n in (1, 2, 8)] == [8, 16, 64]
    assert not batching(t, 2).stated
    micro = _micro_batches(100, 4)  # 25 micro-batches: groups of grad_accum x processes
    assert [len(step_bounds(micro, batching(t, n))) - 1 for n in (1, 2, 8)] == [13, 7, 2]


def test_step_bounds_of_no_micro_batches_and_the_description():
    b = Batching(micro_rows=4, accum=2, global_rows=16, processes=2, stated=True)
    assert step_bounds([], b) == [0]
    assert b.describe() == "global batch 16 rows = 2 process(es) x 4 rows x 2 accumulation"
    assert "token-budget" in Batching(4, None, 16, 2, stated=True).describe()


def test_global_batch_and_grad_accum_are_not_both_given():
    with pytest.raises(Exception, match="grad_accum"):
        TrainConfig(global_batch=16, grad_accum=2)
