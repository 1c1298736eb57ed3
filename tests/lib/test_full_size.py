"""``capped`` (core/lib/full_size.py)."""

from __future__ import annotations

from replicator.core.lib.full_size import capped


def test_capped():
    assert capped(1000, 0) == 1000  # 0: no cap
    assert capped(1000, 64) == 64
    assert capped(10, 64) == 10
    assert capped(0, 5) == 0
