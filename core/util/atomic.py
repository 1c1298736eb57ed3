"""Atomic writes, one implementation: build under a unique temp name in the same folder, then rename.

:func:`atomic_path` is the one mechanism; text, ``torch.save``, safetensors and whole folders
(converted models, tiny models) go through it. The temp name is unique per writer
(:mod:`tempfile`), so two processes writing the same file never share a temp file; on failure
the temp file (or folder) is removed; what lands is readable by others (files 0644, folders
0755, both less the process umask), not the 0600/0700 that :mod:`tempfile` creates.

A write that fails raises an OSError naming the file it was writing (not its temp file, and not nothing:
a full disk's ``[Errno 28]`` carries no name), so that every command reports ``error: FILE: reason``;
torch's and safetensors' own write errors become that OSError too. :func:`atomic_write_texts` writes
several files all or none (a report's three files).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def named(e: OSError, path: Path, *also: Path) -> OSError:
    """``e`` as an error about ``path``: a write that fails says which file it was writing. An error that
    names no file (a full disk: ``[Errno 28] No space left on device``) or names one of ``also`` (the temp
    file, which the user never asked for) becomes the same error (same errno, same class) naming ``path``;
    one that names another file (the folder that could not be made) is kept."""
    if e.filename is not None and not any(str(e.filename) == str(p) for p in also):
        return e
    return OSError(e.errno, e.strerror or str(e), str(path))  # OSError(errno, ...) picks the subclass


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a unique temp file next to ``path``; write it; on success it replaces ``path``. An OSError
    names ``path`` (:func:`named`), so that the command line reports ``error: FILE: reason``."""
    path = Path(path)
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
        yield tmp
        os.chmod(tmp, 0o644 & ~_umask())
        os.replace(tmp, path)
    except OSError as e:
        err = named(e, path, *([tmp] if tmp is not None else []))
        if err is e:
            raise
        raise err from e
    finally:
        if tmp is not None and tmp.exists():
            tmp.unlink()


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_texts(texts: dict[Path, str]) -> None:
    """Several files, all or none: every one is written to its temp file first, and only when all are
    written do they replace their targets. A full disk halfway through leaves the files that were there
    (no half-written ``report.md`` beside a new ``report.json``), and the error names the file that
    failed."""
    with contextlib.ExitStack() as stack:
        tmps = {Path(path): stack.enter_context(atomic_path(Path(path))) for path in texts}
        for (path, tmp), text in zip(tmps.items(), texts.values(), strict=True):
            try:
                tmp.write_text(text, encoding="utf-8")
            except OSError as e:
                err = named(e, path, tmp)
                if err is e:
                    raise
                raise err from e


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


#: what a serializer's failure to write says: safetensors ``I/O error: ... (os error 28)``, torch.save's
#: ``[enforce fail at inline_container.cc:...]`` (its zip writer; the message has no errno)
_IO_FAILURE = re.compile(r"I/O error|os error \d+|inline_container|file write failed", re.IGNORECASE)


def _write_failure(e: Exception, path: Path, tmp: Path) -> OSError | None:
    """The OSError a serializer's failure to write ``tmp`` stands for, naming ``path`` (None when ``e`` is
    not about writing: a bug, an object that cannot be pickled). torch.save raises a RuntimeError about
    zip positions and safetensors its own error class, where ``open().write`` raises ``OSError: [Errno 28]
    No space left on device``: the errno is taken from the message, else a folder with less than 1 MiB
    left means a full disk."""
    text = str(e)
    if not _IO_FAILURE.search(text):
        return None
    m = re.search(r"os error (\d+)", text)
    code = int(m.group(1)) if m else None
    if code is None:
        with contextlib.suppress(OSError):
            code = errno.ENOSPC if shutil.disk_usage(tmp.parent).free < 1 << 20 else None
    first = text.strip().splitlines()[0][:200] if text.strip() else type(e).__name__
    return OSError(code, os.strerror(code) if code else f"could not be written ({first})", str(path))


def atomic_torch_save(obj, path: Path) -> None:
    import torch

    with atomic_path(path) as tmp:
        try:
            torch.save(obj, tmp)
        except (RuntimeError, ValueError) as e:
            err = _write_failure(e, path, tmp)
            if err is None:
                raise
            raise err from e


def atomic_save_safetensors(tensors: dict, path: Path, metadata: dict | None = None) -> None:
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        try:
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
        except OSError:
            raise
        except Exception as e:  # safetensors' SafetensorError
            err = _write_failure(e, path, tmp)
            if err is None:
                raise
            raise err from e


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
