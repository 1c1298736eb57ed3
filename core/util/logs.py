"""Logging: every module logs to ``logging.getLogger(__name__)``, under the ``replicator`` logger.

The library configures nothing (Python shows warnings and errors only); the command line calls
:func:`setup` once: ``-q`` shows warnings and errors, the default shows progress messages (INFO),
``-v`` shows DEBUG messages and turns on the hook trace (``REPLICATOR_TRACE=1``).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import logging
import os
import sys
import warnings
from collections.abc import Iterator

ROOT = "replicator"
TRACE_ENV = "REPLICATOR_TRACE"
_HANDLER_FLAG = "_replicator_handler"


class _ShortNames(logging.Formatter):
    """``[pipeline] message``: the module name without ``replicator.core.``/``replicator.``."""

    def format(self, record: logging.LogRecord) -> str:
        record.short = record.name.removeprefix("replicator.core.").removeprefix("replicator.")
        return super().format(record)


def level_of(verbosity: int) -> int:
    """-1 (quiet) -> WARNING, 0 -> INFO, 1 or more (verbose) -> DEBUG."""
    return logging.WARNING if verbosity < 0 else logging.INFO if verbosity == 0 else logging.DEBUG


class _Stderr(logging.StreamHandler):
    """A handler that writes to whatever ``sys.stderr`` is when a record comes, not to the stream that was
    ``sys.stderr`` when it was made. A command run inside another program (a test's ``CliRunner``, pytest's
    capture) gets a ``sys.stderr`` that is closed once the command returns; a handler that kept it would
    fail on the next record (``--- Logging error --- ValueError: I/O operation on closed file``)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # always sys.stderr: what __init__ or setStream sets is ignored
        pass


def setup(verbosity: int = 0) -> logging.Logger:
    """Send ``replicator.*`` records at the level of ``verbosity`` to stderr (one handler, replaced
    on a second call; it looks ``sys.stderr`` up at each record, :class:`_Stderr`); verbosity >= 1 also
    sets ``REPLICATOR_TRACE=1`` (the hook trace). The command line also turns the logger's propagation off
    while a command runs, so that a handler an imported library adds to the root logger (GPT-QModel's
    ``basicConfig``) prints none of them a second time."""
    logger = logging.getLogger(ROOT)
    for h in [h for h in logger.handlers if getattr(h, _HANDLER_FLAG, False)]:
        logger.removeHandler(h)
    handler = _Stderr()
    setattr(handler, _HANDLER_FLAG, True)
    handler.setFormatter(_ShortNames("[%(short)s] %(message)s" if verbosity < 1
                                     else "%(asctime)s %(levelname)s [%(short)s] %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level_of(verbosity))
    if verbosity >= 1:
        os.environ[TRACE_ENV] = "1"
    return logger


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers' own logging at ERROR and its progress bars off inside the block (a model load
    report lists a new head as "missing", which is expected), both restored afterwards. Its model code is
    imported first with its output captured (:func:`import_quietly`): ``transformers.modeling_utils``
    imports torchao whenever it is installed (``quantizers/quantizer_torchao.py``), which logs "Failed to
    load ... .so" and makes torch warn about ``register_constant``."""
    import_quietly("transformers.modeling_utils")
    from transformers.utils import logging as hf_logging

    before, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(before)
        if bars:
            hf_logging.enable_progress_bar()


class _Records(logging.Handler):
    """Collects the records that reach it (formatted), for :func:`captured`."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self.lines.append(f"{record.levelname} [{record.name}] {record.getMessage()}")


def _loggers() -> list[logging.Logger]:
    return [logging.getLogger(), *(lg for lg in list(logging.Logger.manager.loggerDict.values())
                                   if isinstance(lg, logging.Logger))]


@contextlib.contextmanager
def captured(what: str) -> Iterator[None]:
    """What the block (a third-party import) prints, warns or logs goes to the debug log of
    ``replicator.core.util.logs`` as one record, not to the console: stdout and stderr, warnings (the
    filters stay as the block left them: libraries that silence their own warnings keep doing so), and
    log records that propagate to the root logger. The root logger's handlers and level are restored
    (``logging.basicConfig`` in a dependency would print every library's INFO lines, and each of ours a
    second time); handlers that print to the console print to the capture inside the block (torch's
    own, which warns about ``_pytree``), those created in the block that write to its captured stream
    write to stderr from then on, and the environment is restored."""

    buf = io.StringIO()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    consoles = (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
    moved: dict[logging.StreamHandler, object] = {}  # handlers that print to the console (torch's), not ours
    for lg in _loggers():
        for h in lg.handlers:
            if (isinstance(h, logging.StreamHandler) and not getattr(h, _HANDLER_FLAG, False)
                    and h not in moved and any(h.stream is c for c in consoles)):
                with contextlib.suppress(AttributeError):  # logging.lastResort's stream cannot be set
                    moved[h] = h.setStream(buf)
    records = _Records()
    root.addHandler(records)
    warned: list[str] = []
    showwarning = warnings.showwarning

    def keep(message, category, filename, lineno, file=None, line=None):
        warned.append(warnings.formatwarning(message, category, filename, lineno, line).rstrip())

    warnings.showwarning = keep
    env, stderr = dict(os.environ), sys.stderr
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            yield
    finally:
        warnings.showwarning = showwarning
        root.handlers[:] = [h for h in root.handlers if h in handlers]
        root.setLevel(level)
        for h, stream in moved.items():
            h.setStream(stream)
        for lg in _loggers():
            for h in lg.handlers:
                if isinstance(h, logging.StreamHandler) and h.stream is buf:
                    h.setStream(stderr)
        os.environ.clear()
        os.environ.update(env)
        lines = [*buf.getvalue().splitlines(), *records.lines, *warned]
        if any(line.strip() for line in lines):
            logging.getLogger(__name__).debug("%s printed (kept off the console):\n%s", what,
                                              "\n".join(line for line in lines if line.strip()))


def import_quietly(name: str) -> None:
    """Import ``name`` (when installed and not yet imported) inside :func:`captured`: what it prints, warns
    or logs on import goes to the debug log (``-v`` shows it), its root log handlers and environment
    changes are undone (GPT-QModel adds a root ``StreamHandler`` and sets ``PYTORCH_ALLOC_CONF``;
    DeepSpeed logs "Setting accelerator to ..." and sets ``PYTORCH_NVML_BASED_CUDA_CHECK``).
    For libraries the runner uses itself (DeepSpeed for ZeRO, GPT-QModel for GPTQ) and for those another
    library would import when its probe of them could not be kept off
    (:func:`replicator.core.model.loading.keep_probes_off`)."""

    if name in sys.modules or importlib.util.find_spec(name) is None:
        return
    with captured(f"import {name}"):
        importlib.import_module(name)
