"""DeepSpeed ZeRO-2 by the runner (core/model/zero.py): checkpoints and a missing DeepSpeed."""

from __future__ import annotations

import sys

import pytest

from replicator.core.errors import ReplicatorError


def test_a_zero2_checkpoint_needs_the_process_count_that_wrote_it(tmp_path):
    from replicator.core.model.zero import load_partition

    ckpt = tmp_path / "checkpoint.pt"
    with pytest.raises(ReplicatorError,
                       match=r"checkpoint.pt: written by 2 processes under zero2, resumed by 1"):
        load_partition(None, {"zero_partitions": 2, "zero_step": 4}, ckpt)
    with pytest.raises(ReplicatorError,
                       match=r"checkpoint.pt: the checkpoint was not written under launch.parallel"):
        load_partition(None, {"state": {}, "param_groups": []}, ckpt)
    with pytest.raises(ReplicatorError, match=r"partition checkpoint-zero-step4-rank0.pt is missing; delete"):
        load_partition(None, {"zero_partitions": 1, "zero_step": 4}, ckpt)


def test_zero2_without_deepspeed_says_how_to_install_it(monkeypatch):
    from replicator.core.model import zero

    monkeypatch.setitem(sys.modules, "deepspeed", None)  # import deepspeed -> ImportError
    with pytest.raises(ReplicatorError,
                       match=r'launch.parallel zero2 needs DeepSpeed .*pip install -e "\.\[deepspeed\]"'):
        zero.initialize(None, None, None, None)
