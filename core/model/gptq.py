"""GPTQ 8-bit inference as 1st place ran it [R1] ``run_gptq.py``: the trained LoRA merged into the
weights, then every decoder block's linear layers quantized to 8 bits in groups of 128 from the
activations of 128 training texts; the classification head stays in full precision.

Through ``optimum.gptq`` with GPT-QModel's kernels (the ``gptq`` extra). Both run on a CPU too,
slowly (a 640-wide Gemma-3-270M block took about 5 minutes on 32 calibration texts here, with
another run on the same 2 cores), so the CPU smoke toggles predict in full precision.

The calibration rows are drawn once per stage, after training, from its training rows as the model
read them (``train.max_length``), and saved next to the weights (``gptq-calibration-<n>.npz``), so
``replicate predict`` on a run calibrates on the same rows. The quantized model is not stored: every
load quantizes it again.
"""

from __future__ import annotations

import contextlib
import logging
import random
import sys
from pathlib import Path

import numpy as np

from replicator.core.errors import ReplicatorError
from replicator.core.model.loading import (
    library_deprecations_ignored,
    load_tokenizer,
    resolve_base,
    trained_model,
)
from replicator.core.tokens.batches import Encoder
from replicator.core.util import atomic  # atomic_path through its module: failure-injection tests replace it
from replicator.core.util.logs import captured

log = logging.getLogger(__name__)

#: GPTQConfig(bits=8, group_size=128) [R1]
BITS, GROUP_SIZE = 8, 128


def calibration_file(folder: Path, n: int) -> Path:
    return Path(folder) / f"gptq-calibration-{n}.npz"


def write_calibration(stage, plugins, rows: list[dict], folder: Path, seed: int) -> Path:
    """Draw ``stage.predict.gptq_calibration_rows`` of ``rows`` (seeded), tokenise them as training did
    and save their token ids in ``folder`` (kept when already there: the rows depend on the train key)."""
    n = stage.predict.gptq_calibration_rows
    path = calibration_file(folder, n)
    if path.exists():
        return path
    if not rows:
        raise ReplicatorError(f"stage {stage.name}: predict.quantizer gptq calibrates on training rows; "
                              "it has none")
    encoder = Encoder(plugins, load_tokenizer(resolve_base(stage.model.base)))
    sample = random.Random(seed).sample(rows, min(n, len(rows)))
    ids = {f"row{i}": np.asarray(encoder(row, stage.train.max_length), dtype=np.int32)
           for i, row in enumerate(sample)}
    with atomic.atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **ids)
    log.info("stage %s: %d GPTQ calibration rows saved (%s)", stage.name, len(ids), path)
    return path


def read_calibration(folder: Path, n: int) -> list[np.ndarray]:
    path = calibration_file(folder, n)
    if not path.exists():
        raise ReplicatorError(f"{path}: the GPTQ calibration rows of this stage are missing; run the recipe "
                              "again (it writes them after training)")
    with np.load(path) as z:
        return [z[f"row{i}"] for i in range(len(z.files))]


def gptq_8bit(cfg, plugins, weights: Path, calibration: list[np.ndarray]):
    """(model, tokenizer): the trained model, LoRA merged, its decoder blocks quantized by GPTQ on the
    ``calibration`` token-id rows, the head untouched."""
    import torch

    try:
        with captured("import optimum.gptq"):  # GPT-QModel's banner, warnings and root log handler
            from optimum.gptq import GPTQQuantizer
    except ImportError as e:
        raise ReplicatorError(f"predict.quantizer gptq: {e}; install the gptq extra: "
                              "pip install -e '.[gptq]'") from None
    if cfg.load_in_4bit:
        raise ReplicatorError("predict.quantizer gptq: the model trained in 4-bit (QLoRA); GPTQ needs "
                              "unquantized weights to merge into and calibrate: use quantizer bitsandbytes")
    if not calibration:
        raise ReplicatorError("predict.quantizer gptq: no calibration rows")
    model, tokenizer = trained_model(cfg, plugins, weights)
    if cfg.lora is not None:
        model = model.merge_and_unload()
    rows = [torch.as_tensor(np.asarray(ids, dtype=np.int64))[None] for ids in calibration]
    data = [{"input_ids": ids, "attention_mask": torch.ones_like(ids)} for ids in rows]
    quantizer = GPTQQuantizer(bits=BITS, group_size=GROUP_SIZE, dataset=data,
                              model_seqlen=max(r.shape[1] for r in rows))
    # GPT-QModel's progress goes to stdout
    with torch.no_grad(), contextlib.redirect_stdout(sys.stderr), library_deprecations_ignored():
        quantizer.quantize_model(model.eval(), tokenizer)
    log.info("backbone quantized by GPTQ (%d bits, group size %d) on %d calibration rows", BITS, GROUP_SIZE,
             len(rows))
    return model, tokenizer
