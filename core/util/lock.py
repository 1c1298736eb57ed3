"""One process at a time per run: an exclusive lock on ``<run folder's parent>/.<run_id>.lock``.

A second ``replicate run`` of the same run id (same fingerprint) started while the first one runs
waits for it (logging which run, which lock and which process holds it), then finds the run
finished and reuses it. ``REPLICATOR_LOCK_TIMEOUT`` (seconds) bounds the wait: past it the second
run stops with an error naming the run, the lock file and the holder; unset, it waits as long as
the first one runs. The lock is an ``fcntl.flock`` on the file: the kernel releases it when the
holder exits, even when killed, so a stale lock file never blocks anything; the holder removes the
file when it is done (checking, after locking, that the path still names the locked file, so that
removing it never lets two processes in).

Why not the ``filelock`` package (installed, 4.x): its ``FileLock`` takes the same ``flock`` and times out
the same way, but it leaves the lock file in place on release (by design, so that waiters share one inode)
and records no holder: its timeout says only that the lock "could not be acquired". Two behaviours
tests/util/test_lock.py checks would go: the file removed when the run is done, and the waiting message
and the timeout error naming the process that holds the run ("pid N on HOST"). Adding both around it would
mean writing into and unlinking through its private descriptor, which is the part of this module that
needs care; so the lock stays ours.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

from replicator.core.errors import ReplicatorError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None

log = logging.getLogger(__name__)

TIMEOUT_ENV = "REPLICATOR_LOCK_TIMEOUT"
POLL_SECONDS = 0.2


def lock_path(run_dir: Path) -> Path:
    return Path(run_dir).parent / f".{Path(run_dir).name}.lock"


def _timeout() -> float | None:
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ReplicatorError(f"{TIMEOUT_ENV}={raw!r}: expected a number of seconds") from None
    if value < 0:
        raise ReplicatorError(f"{TIMEOUT_ENV}={raw!r}: expected a number of seconds >= 0")
    return value


def _holder(path: Path) -> str:
    try:
        text = path.read_text().strip()
    except OSError:
        text = ""
    return text or "another process"


def _try_lock(path: Path) -> int | None:
    """A descriptor of ``path`` locked by us, or None when another process holds the lock."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    try:
        same = os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:  # the last holder removed it after we opened it: try again
        same = False
    if not same:
        os.close(fd)
        return None
    return fd


def _acquire(path: Path, run_id: str) -> int:
    timeout, start, told = _timeout(), time.monotonic(), False
    while True:
        fd = _try_lock(path)
        if fd is not None:
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()} on {os.uname().nodename}\n".encode())
            return fd
        waited = time.monotonic() - start
        if timeout is not None and waited >= timeout:
            raise ReplicatorError(f"run {run_id} is being computed by {_holder(path)} (lock {path}); "
                                  f"gave up after {waited:.0f} s ({TIMEOUT_ENV}={timeout:g})")
        if not told:
            log.warning("run %s is being computed by %s (lock %s): waiting for it to finish", run_id,
                        _holder(path), path)
            told = True
        time.sleep(POLL_SECONDS)


@contextlib.contextmanager
def run_lock(run_dir: Path, run_id: str) -> Iterator[Path]:
    """Hold the run's lock inside the block (waiting for another holder first); yield its path."""
    if fcntl is None:  # pragma: no cover - not POSIX
        log.warning("no fcntl on this platform: run %s is not locked against a second process", run_id)
        yield lock_path(run_dir)
        return
    path = lock_path(run_dir)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = _acquire(path, run_id)
    except OSError as e:
        raise ReplicatorError(f"cannot create the lock file {path} of run {run_id}: "
                              f"{e.strerror or e}") from None
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # while still locked: a waiter that opened it sees another inode and retries
        os.close(fd)
