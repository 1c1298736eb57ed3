"""Atomic writes (core/util/atomic.py) and the temp files they leave when killed."""

from __future__ import annotations

import pytest
import torch

from replicator.core.util import atomic as io

from ..smoke_runs import _files


def test_remove_temp_files_keeps_everything_else(tmp_path):
    for name in ("a.txt", ".hidden", ".x.tmp.keep", "d/.w.safetensors.k.tmp", "d/e/.f.1.old/inner"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("1")
    removed = io.remove_temp_files(tmp_path)
    assert sorted(p.name for p in removed) == [".f.1.old", ".w.safetensors.k.tmp"]
    assert _files(tmp_path) == [".hidden", ".x.tmp.keep", "a.txt"]
    assert io.remove_temp_files(tmp_path / "nothing") == []


def test_atomic_writes_are_readable_unique_and_clean_up(tmp_path):
    import os

    from replicator.core.util.atomic import (
        atomic_folder,
        atomic_path,
        atomic_save_safetensors,
        atomic_torch_save,
        atomic_write_bytes,
        atomic_write_text,
    )

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a" / "x.txt", "hello")
        atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
        atomic_torch_save({"t": torch.ones(2)}, tmp_path / "c.pt")
        atomic_save_safetensors({"w": torch.zeros(3)}, tmp_path / "w.safetensors", metadata={"k": "v"})
        atomic_folder(tmp_path / "folder", lambda d: (d / "f.txt").write_text("1"))
    finally:
        os.umask(old)
    assert (tmp_path / "a" / "x.txt").read_text() == "hello"
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    for f in (tmp_path / "a" / "x.txt", tmp_path / "b.bin", tmp_path / "c.pt", tmp_path / "w.safetensors"):
        assert f.stat().st_mode & 0o777 == 0o644, f
    assert (tmp_path / "folder").stat().st_mode & 0o777 == 0o755
    assert torch.load(tmp_path / "c.pt")["t"].sum() == 2
    # two writers of the same file at once get two temp files
    with atomic_path(tmp_path / "same.txt") as t1, atomic_path(tmp_path / "same.txt") as t2:
        assert t1 != t2 and t1.parent == t2.parent == tmp_path
        t1.write_text("1")
        t2.write_text("2")
    assert (tmp_path / "same.txt").read_text() == "1"  # the last writer to finish wins, whole
    atomic_write_text(tmp_path / "same.txt", "2")
    # a failed write leaves the old file and no temp file behind
    with pytest.raises(ZeroDivisionError):
        with atomic_path(tmp_path / "same.txt") as t:
            t.write_text("half")
            raise ZeroDivisionError
    assert (tmp_path / "same.txt").read_text() == "2"
    def fail(d):
        raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        atomic_folder(tmp_path / "folder", fail)
    assert (tmp_path / "folder" / "f.txt").read_text() == "1"
    # a folder build replaces the old folder, unless the existing one is kept (a race won elsewhere)
    atomic_folder(tmp_path / "folder", lambda d: (d / "g.txt").write_text("2"))
    assert [p.name for p in (tmp_path / "folder").iterdir()] == ["g.txt"]
    atomic_folder(tmp_path / "folder", lambda d: (d / "h.txt").write_text("3"), keep_existing=True)
    assert [p.name for p in (tmp_path / "folder").iterdir()] == ["g.txt"]
    leftovers = sorted(p.name for p in tmp_path.rglob("*") if p.name.startswith("."))
    assert leftovers == [], leftovers
