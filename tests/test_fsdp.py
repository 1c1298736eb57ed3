"""FSDP by the runner (core/shard.py) over two CPU processes (torchrun, gloo): the numbers of one process,
whole weights and checkpoints, a resume after a kill, 4-bit QLoRA (bitsandbytes keeps each layer's
quantization state on the module, so the gathered nf4 weights dequantize as in one process). accelerate
turns an FSDP launch into DDP on a CPU, so the runner shards with PyTorch's FSDP2 itself; on GPUs the
same code runs over NCCL (not run here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from replicator.core.config.recipe import resolve
from replicator.core.run.pipeline import run_recipe
from replicator.core.scoring.row_predictions import read_row_predictions
from replicator.core.util.layout import WEIGHTS

from .conftest import RECIPES, TINY

QUICK = TINY + ["train.epochs=1", "train.max_rows=48", "predict.max_rows=24"]
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
    for k in keys:
        assert abs(one[k] - two[k]) <= 1e-5, (k, one[k], two[k])
    r1, r2 = (read_row_predictions(d / "valid_predictions.csv.gz") for d in (one_dir, two_dir))
    assert r1.ids == r2.ids
    assert np.abs(np.asarray(r1.views["final"]) - np.asarray(r2.views["final"])).max() <= 1e-5
    w1, w2 = _weights(isolated, one_dir), _weights(isolated, two_dir)
    assert w1.keys() == w2.keys() and all(w1[k].shape == w2[k].shape for k in w1)  # whole tensors, not shards
    assert max(float((w1[k] - w2[k]).abs().max()) for k in w1) <= 1e-5
    return one, two


#: 1st place's teachers in small: QLoRA (nf4 weights through bitsandbytes; 4-bit blocks need layers >= 64
#: wide)
QLORA = ["model.base=tiny:llama128", "model.load_in_4bit=true"]


#: clipping on every step (the global norm over the shards)
CLIPPED = ["train.max_grad_norm=0.01"]


@pytest.mark.parametrize("parallel,extra", [("fsdp_full_shard", CLIPPED), ("fsdp_shard_grad_op", FULL),
                                            ("fsdp_full_shard", QLORA)],
                         ids=["full_shard_lora_clipped", "shard_grad_op_full_finetuning_kahan_eval",
                              "full_shard_qlora_4bit"])
def test_fsdp_over_two_processes_gives_the_numbers_and_weights_of_one(isolated, parallel, extra):
    """Two processes sharding the model (grad_accum 1) against one process (grad_accum 2): the same loss
    history, metrics, per-row predictions and saved weights (whole tensors, within 1e-5); the run id counts
    the sharding. With full fine-tuning, Kahan-summed AdamW and periodic evaluation (best weights kept)."""
    one_dir = _one([*QUICK, *extra, "train.grad_accum=2"])
    p = _two(isolated, [*QUICK, *extra, "train.grad_accum=1", f"launch.parallel={parallel}", "launch.gpus=2"])
    two_dir = _finished(p)
    assert f"training sharded over 2 processes ({parallel}, FSDP2)" in p.stderr
    one, two = _same_numbers(isolated, one_dir, two_dir)
    fp = json.loads((two_dir / "fingerprint.json").read_text())
    assert fp["sharding"] == {"main": parallel} and fp["n_processes"] == 2
    if extra is FULL:
        s1, s2 = one["stages"]["main"], two["stages"]["main"]
        assert (s2["evals"] and np.allclose(s1["evals"], s2["evals"], atol=1e-5)
                and s1["best_step"] == s2["best_step"])


def test_a_killed_fsdp_run_resumes_from_its_whole_checkpoint(isolated):
    """Killed after step 2 of 3 (the checkpoint gathers the sharded weights and optimizer state whole), the
    rerun resumes there in two processes and ends with the numbers of one uninterrupted process."""
    quick = [*QUICK, "train.checkpoint_every=1"]
    sharded = [*quick, "train.grad_accum=1", "launch.parallel=fsdp_full_shard", "launch.gpus=2"]
    p = _two(isolated, sharded, env={"REPLICATOR_CRASH_AFTER_STEP": "2"})
    assert p.returncode != 0 and "simulated crash after step 2" in p.stderr
    p = _two(isolated, sharded)
    two_dir = _finished(p)
    main = json.loads((two_dir / "metrics.json").read_text())["stages"]["main"]
    assert (main["resumed_at_step"], main["optimizer_steps"]) == (2, 3)
    _same_numbers(isolated, _one([*quick, "train.grad_accum=2"]), two_dir)
