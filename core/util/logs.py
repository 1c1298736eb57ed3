"""Logging: every module logs to ``logging.getLogger(__name__)``, under the ``replicator`` logger.

The library configures nothing (Python shows warnings and errors only); the command line calls
:func:`setup` once: ``-q`` shows warnings and errors, the default shows progress messages (INFO),
``-v`` shows DEBUG messages and turns on the hook trace (``REPLICATOR_TRACE=1``).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import os
import sys
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


def setup(verbosity: int = 0) -> logging.Logger:
    """Send ``replicator.*`` records at the level of ``verbosity`` to stderr (one handler, replaced
    on a second call); verbosity >= 1 also sets ``REPLICATOR_TRACE=1`` (the hook trace)."""
    logger = logging.getLogger(ROOT)
    for h in [h for h in logger.handlers if getattr(h, _HANDLER_FLAG, False)]:
        logger.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
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
    report lists a new head as "missing", which is expected), both restored afterwards."""
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


#: packages that print to stdout or change the environment on import, and why they are imported at all
NOISY_IMPORTS = {
    # peft imports it for every LoRA model once it is installed; it prints a banner and warnings and sets
    # PYTORCH_ALLOC_CONF / CUDA_DEVICE_ORDER (every run's CUDA allocator settings would change)
    "gptqmodel": "peft",
    # accelerate imports it whenever it is installed (unwrap_model); it logs "Setting accelerator to ..."
    # and sets PYTORCH_NVML_BASED_CUDA_CHECK (its logger keeps the stream it found: stderr from then on)
    "deepspeed": "accelerate",
}


def import_quietly(name: str) -> None:
    """Import ``name`` (when installed and not yet imported) with stdout sent to stderr and the environment
    restored, so that ``replicate``'s stdout stays its own (:data:`NOISY_IMPORTS` says why each is needed).
    Called before a model is built (:func:`replicator.core.model.loading.load_model`)."""

    if name in sys.modules or importlib.util.find_spec(name) is None:
        return
    env = dict(os.environ)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            importlib.import_module(name)
    finally:
        os.environ.clear()
        os.environ.update(env)
