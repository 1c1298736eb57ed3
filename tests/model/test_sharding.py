"""FSDP by the runner (core/model/sharding.py): the strategy of each ``launch.parallel``."""

from __future__ import annotations

import pytest

from replicator.core.errors import ReplicatorError


def test_zero3_is_refused_at_run_time_with_the_fsdp_strategy_that_shards_the_same(monkeypatch):
    from replicator.core.model.sharding import strategy

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ReplicatorError, match="zero3 .* fsdp_full_shard"):
        strategy("zero3")
    assert strategy("zero2") == "zero2" and strategy("ddp") is None
