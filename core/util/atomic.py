"""Atomic writes, one implementation: build under a unique temp name in the same folder, then rename.

:func:`atomic_path` is the one mechanism; text, ``torch.save``, safetensors and whole folders
(converted models, tiny models) go through it. The temp name is unique per writer
(:mod:`tempfile`), so two processes writing the same file never share a temp file; on failure
the temp file (or folder) is removed; what lands is readable by others (files 0644, folders
0755, both less the process umask), not the 0600/0700 that :mod:`tempfile` creates.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a unique temp file next to ``path``; write it; on success it replaces ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o644 & ~_umask())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_torch_save(obj, path: Path) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def atomic_save_safetensors(tensors: dict, path: Path, metadata: dict | None = None) -> None:
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)


def atomic_folder(folder: Path, build: Callable[[Path], None], keep_existing: bool = False) -> None:
    """``build(tmp)`` fills a unique temp folder next to ``folder``, which then becomes ``folder``.

    An existing ``folder`` is replaced, or, with ``keep_existing`` (another process won the race
    to build the same thing), kept and the new build discarded. On failure the temp folder is removed.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    old: Path | None = None
    try:
        build(tmp)
        os.chmod(tmp, 0o755 & ~_umask())
        if folder.exists():
            if keep_existing:
                return
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".old", dir=folder.parent))
            os.replace(folder, old / folder.name)
        os.replace(tmp, folder)
    finally:
        for leftover in (tmp, old):
            if leftover is not None and leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)


def is_temp_name(name: str) -> bool:
    """Whether ``name`` is one of :func:`atomic_path`'s or :func:`atomic_folder`'s temp names."""
    return name.startswith(".") and (name.endswith(".tmp") or name.endswith(".old"))


def remove_temp_files(folder: Path) -> list[Path]:
    """Remove the temp files and folders of atomic writes under ``folder`` (left by a writer that was
    killed: a failing one removes its own); call it only where no other process writes (a run's
    folders under its lock). Returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = sorted((p for p in folder.rglob(".*") if is_temp_name(p.name)), key=lambda p: -len(p.parts))
    for p in found:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return found
