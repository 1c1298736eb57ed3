"""The data folder (core/data/files.py)."""

from __future__ import annotations

from pathlib import Path

from replicator.core.data import files


def test_data_dir(monkeypatch):
    monkeypatch.delenv("REPLICATOR_DATA_DIR", raising=False)
    assert files.data_dir() == Path("data")
    monkeypatch.setenv("REPLICATOR_DATA_DIR", "/somewhere/data")
    assert files.data_dir() == Path("/somewhere/data")
