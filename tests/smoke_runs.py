"""The smoke recipe at QUICK size, run in one process (``run_recipe``) or two (torchrun, gloo), and what
the runs leave on disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from replicator.core.config.recipe import resolve
from replicator.core.data.files import data_dir
from replicator.core.run.pipeline import run_recipe
from replicator.core.scoring.row_predictions import read_row_predictions
from replicator.core.util.layout import WEIGHTS

from .conftest import QUICK, RECIPES


def _resolved(overrides=()):
    return resolve(RECIPES / "smoke.yaml", [], QUICK + list(overrides), data_dir=data_dir())


def _run(overrides=(), force=False):
    return run_recipe(_resolved(overrides), data_dir(), force=force, progress=False)


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])


#: 2nd place's setting in small: full fine-tuning with Kahan-summed AdamW, evaluated every 2 steps (best kept)
FULL = ["model.lora=null", "train.optimizer=adamw_kahan", "train.lr=1e-4", "train.eval_every=2"]


def _one(overrides):
    r = resolve(RECIPES / "smoke.yaml", [], overrides)
    from replicator.core.data.files import data_dir

    run_recipe(r, data_dir(), progress=False)
    run_dir = Path(os.environ["REPLICATOR_REPORTS"]) / "smoke"
    return max(run_dir.glob("smoke-*"), key=lambda p: p.stat().st_mtime)


def _two(isolated, overrides, env=None):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "replicator.core.cli", "run", str(RECIPES / "smoke.yaml"), *overrides]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def _finished(p) -> Path:
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr[-3000:]
    assert p.stdout.count("finished:") == 1, p.stdout
    return Path(p.stdout.split("finished:")[1].split()[0])


def _weights(isolated, run_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(isolated / "artifacts" / "smoke" / run_dir.name / "main" / WEIGHTS))


def _same_numbers(isolated, one_dir: Path, two_dir: Path,
                  keys=("log_loss", "tta_log_loss", "final_log_loss")):
    one, two = (json.loads((d / "metrics.json").read_text()) for d in (one_dir, two_dir))
    s1, s2 = one["stages"]["main"], two["stages"]["main"]
    assert s1["optimizer_steps"] == s2["optimizer_steps"] and s1["train_tokens"] == s2["train_tokens"]
    assert np.allclose(s1["train_loss_history"], s2["train_loss_history"], atol=1e-5, rtol=0)
    r1, r2 = (read_row_predictions(d / "valid_predictions.csv.gz") for d in (one_dir, two_dir))
    assert r1.ids == r2.ids
    views = {"log_loss": "identity", "tta_log_loss": "tta", "final_log_loss": "final"}
    for k in keys:
        p1, p2 = (np.asarray(r.views[views[k]], dtype=np.float64) for r in (r1, r2))
        if k == "final_log_loss":  # the submitted probabilities: each within 1e-5
            assert np.abs(p1 - p2).max() <= 1e-5, (k, np.abs(p1 - p2).max())
        # the log losses then differ by at most what those differences imply, to first order
        # (|d log p| <= |dp| / p on each row's label mass), with a 2x margin for the second order: a
        # bound derived from the rows themselves, not a fixed 1e-5, which the mean of -log p exceeds
        # wherever p < 1 spreads the per-row differences (1.24e-5 on a Xeon with AMX, issue 24)
        y = np.asarray(r1.labels, dtype=np.float64)
        dp = np.abs(p1 - p2) + 1e-6  # the file's 6 decimals round each side by up to 5e-7
        bound = float((y * dp / (np.minimum(p1, p2) - 5e-7)).sum(axis=1).mean())
        assert abs(one[k] - two[k]) <= 2 * bound + 1e-9, (k, one[k], two[k], bound)
    w1, w2 = _weights(isolated, one_dir), _weights(isolated, two_dir)
    assert w1.keys() == w2.keys() and all(w1[k].shape == w2[k].shape for k in w1)  # whole tensors, not shards
    assert max(float((w1[k] - w2[k]).abs().max()) for k in w1) <= 1e-5
    return one, two
