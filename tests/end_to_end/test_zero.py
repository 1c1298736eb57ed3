"""DeepSpeed ZeRO-2 by the runner (core/model/zero.py) over two CPU processes (torchrun, gloo; DeepSpeed's CPU
accelerator): the numbers and whole weights of one process, a checkpoint with every process's optimizer
partition, a resume after a kill. On GPUs the same code runs over NCCL (not run here: no GPU was lent)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ..conftest import QUICK, RECIPES
from ..smoke_runs import FULL, _finished, _one, _same_numbers, _two

pytest.importorskip("deepspeed")  # the `deepspeed` extra: README's install command and .ci/run install it


ZERO = ["train.global_batch=16", "launch.parallel=zero2", "launch.gpus=2"]


#: 1st place's teachers in small: QLoRA (nf4 weights through bitsandbytes; 4-bit blocks need layers >= 64
#: wide)
QLORA = ["model.base=tiny:llama128", "model.load_in_4bit=true"]


#: clipping on every step (DeepSpeed clips the partitioned gradients by their global norm), and token-budget
#: micro-batches (a step's micro-batches hold different numbers of rows: each weighted by its rows)
CLIPPED = ["train.max_grad_norm=0.01", "train.batch_tokens=512"]


#: bf16 compute on fp32 weights (accelerate's autocast in both); prediction in the model's fp32 in both
BF16 = ["train.mixed_precision=bf16"]


@pytest.mark.parametrize("extra", [CLIPPED, FULL, QLORA, BF16],
                         ids=["lora_clipped_token_budget", "full_finetuning_kahan_eval", "qlora_4bit",
                              "bf16_autocast"])
def test_zero2_over_two_processes_gives_the_numbers_and_weights_of_one(isolated, extra):
    """Two processes under ZeRO-2 against one process, 16 rows per step (accumulation 1 against 2): the same
    loss history, metrics, per-row predictions and saved weights within 1e-5, with every step's gradients
    clipped (by DeepSpeed, over the partitions); the run id counts the sharding.
    With full fine-tuning, Kahan-summed AdamW inside ZeRO and periodic evaluation (best weights kept)."""
    one_dir = _one([*QUICK, *extra, "train.global_batch=16"])
    p = _two(isolated, [*QUICK, *extra, *ZERO])
    two_dir = _finished(p)
    assert "training over 2 processes with DeepSpeed ZeRO-2 (zero2)" in p.stderr
    assert "Setting accelerator to" not in p.stdout  # DeepSpeed's log goes to stderr
    one, two = _same_numbers(isolated, one_dir, two_dir)
    fp = json.loads((two_dir / "fingerprint.json").read_text())
    assert fp["sharding"] == {"main": "zero2"} and fp["n_processes"] == 2
    s1, s2 = one["stages"]["main"], two["stages"]["main"]
    assert s1["model"]["all_params"] == s2["model"]["all_params"]
    if extra is QLORA:  # the stage's backbone really is nf4 (bitsandbytes' 4-bit linear layers)
        import bitsandbytes as bnb

        from replicator.core.config.catalogue import build_plugins
        from replicator.core.config.recipe import resolve
        from replicator.core.model.loading import load_model

        r = resolve(RECIPES / "smoke.yaml", [], [*QUICK, *QLORA])
        model, _, info = load_model(r.final.model, build_plugins(r.final.plugins, "x"))
        assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
        assert info["all_params"] == s2["model"]["all_params"]
    if extra is FULL:
        assert (s2["evals"] and np.allclose(s1["evals"], s2["evals"], atol=1e-5)
                and s1["best_step"] == s2["best_step"])


def test_a_killed_zero2_run_resumes_with_each_process_taking_its_partition_back(isolated):
    """Killed after step 2 of 3 (the checkpoint holds the whole weights, each process wrote its optimizer
    partition beside it), the rerun resumes there in two processes and ends with the numbers of one
    uninterrupted process."""
    import torch

    quick = [*QUICK, "train.checkpoint_every=1"]
    p = _two(isolated, [*quick, *ZERO], env={"REPLICATOR_CRASH_AFTER_STEP": "2"})
    assert p.returncode != 0 and "simulated crash after step 2" in p.stderr
    ckpt = next((isolated / "artifacts").rglob("checkpoint.pt"))
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert state["step"] == 2 and state["optimizer"] == {"zero_partitions": 2, "zero_step": 2}
    # each process's partition beside it; those of the step-1 checkpoint are gone
    assert sorted(p.name for p in ckpt.parent.glob("checkpoint-zero-*")) == [
        "checkpoint-zero-step2-rank0.pt", "checkpoint-zero-step2-rank1.pt"]
    p = _two(isolated, [*quick, *ZERO])
    two_dir = _finished(p)
    main = json.loads((two_dir / "metrics.json").read_text())["stages"]["main"]
    assert (main["resumed_at_step"], main["optimizer_steps"]) == (2, 3)
    _same_numbers(isolated, _one([*quick, "train.global_batch=16"]), two_dir)
