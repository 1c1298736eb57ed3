"""Checks of input and output paths before any model loads: each failure a :class:`ReplicatorError`
naming the path and what is wrong with it, never a traceback halfway through a run.

Writability is tested for real (a probe file created and removed in the nearest existing folder):
``os.access`` says yes to root even on a read-only file system.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from replicator.core.errors import ReplicatorError


def nearest_existing(path: Path) -> Path:
    """``path`` itself, or the closest of its parents that exists."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def writable_folder(folder: Path, what: str) -> None:
    """``folder`` is (or can be created as) a folder this process can write in."""
    folder = Path(folder)
    p = nearest_existing(folder)
    if not p.is_dir():
        raise ReplicatorError(f"{what} {folder}: {p} is a file, not a folder")
    if not os.access(p, os.W_OK | os.X_OK):
        raise ReplicatorError(f"{what} {folder}: {p} is not writable (permission denied)")
    try:
        fd, name = tempfile.mkstemp(prefix=".replicator-probe-", dir=p)
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        raise ReplicatorError(f"{what} {folder}: cannot write in {p}: {e.strerror or e}") from None


def readable_file(path: Path, what: str) -> None:
    """``path`` is an existing file this process can open for reading."""
    path = Path(path)
    if not path.exists():
        raise ReplicatorError(f"{what} {path}: no such file")
    if path.is_dir():
        raise ReplicatorError(f"{what} {path}: is a folder, not a file")
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as e:
        raise ReplicatorError(f"{what} {path}: cannot be read: {e.strerror or e}") from None


def output_file(path: Path, what: str) -> None:
    """``path`` can be written: not a folder, its folder writable, an existing file writable."""
    path = Path(path)
    if path.is_dir():
        raise ReplicatorError(f"{what} {path}: is a folder; give a file name")
    if path.exists() and not os.access(path, os.W_OK):
        raise ReplicatorError(f"{what} {path}: exists and is not writable (permission denied)")
    writable_folder(path.parent, f"{what} {path}: its folder")


def safetensors_problem(path: Path) -> str | None:
    """Why ``path`` is not a complete safetensors file (None when it is one): it is read as far as
    its header, and the header's tensors must end exactly where the file ends."""
    try:
        size = Path(path).stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            if n < 0 or n > size - 8:
                return f"truncated or not a safetensors file ({size} bytes, no complete header)"
            header = json.loads(f.read(n))
    except OSError as e:
        return f"cannot be read: {e.strerror or e}"
    except (ValueError, UnicodeDecodeError):
        return "not a safetensors file (its header is not JSON)"
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)
            and "data_offsets" in v]
    want = 8 + n + max(ends, default=0)
    if want != size:
        return f"truncated or damaged: {size} bytes, its header describes {want}"
    return None


def check_safetensors(path: Path, what: str = "weights") -> None:
    readable_file(path, what)
    problem = safetensors_problem(path)
    if problem:
        raise ReplicatorError(f"{what} {path}: {problem}; rerun `replicate run` with --force to rebuild it")
