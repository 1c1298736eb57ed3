"""FSDP by the runner (core/model/sharding.py) over two CPU processes (torchrun, gloo): the numbers of one
process, whole weights and checkpoints, a resume after a kill, 4-bit QLoRA (bitsandbytes keeps each layer's
quantization state on the module, so the gathered nf4 weights dequantize as in one process). accelerate
turns an FSDP launch into DDP on a CPU, so the runner shards with PyTorch's FSDP2 itself; on GPUs the
same code runs over NCCL (not run here)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ..conftest import QUICK
from ..smoke_runs import FULL, _finished, _one, _same_numbers, _two

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
    """Two processes sharding the model against one process, 16 rows per step (accumulation 1 against 2,
    derived from global_batch, core/config/batch.py): the same loss
    history, metrics, per-row predictions and saved weights (whole tensors, within 1e-5); the run id counts
    the sharding. With full fine-tuning, Kahan-summed AdamW and periodic evaluation (best weights kept)."""
    one_dir = _one([*QUICK, *extra, "train.global_batch=16"])
    p = _two(isolated, [*QUICK, *extra, "train.global_batch=16", f"launch.parallel={parallel}",
                        "launch.gpus=2"])
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
    sharded = [*quick, "train.global_batch=16", "launch.parallel=fsdp_full_shard", "launch.gpus=2"]
    p = _two(isolated, sharded, env={"REPLICATOR_CRASH_AFTER_STEP": "2"})
    assert p.returncode != 0 and "simulated crash after step 2" in p.stderr
    p = _two(isolated, sharded)
    two_dir = _finished(p)
    main = json.loads((two_dir / "metrics.json").read_text())["stages"]["main"]
    assert (main["resumed_at_step"], main["optimizer_steps"]) == (2, 3)
    _same_numbers(isolated, _one([*quick, "train.global_batch=16"]), two_dir)


def test_fsdp_trains_bf16_weights_with_fp32_masters_as_one_process_does(isolated):
    """A GPU run's precision (bf16 weights, fp32 LoRA and head masters, bf16 autocast) sharded over two
    processes: FSDP2 holds the bf16 body and the fp32 trainable tensors in one model, and the loss history
    follows one process's. bf16 sums in another order differ in the last bits: the tolerance is bf16's
    relative spacing (2^-8) on the loss."""
    bf16 = ["model.dtype=bfloat16"]
    one_dir = _one([*QUICK, *bf16, "train.global_batch=16"])
    p = _two(isolated, [*QUICK, *bf16, "train.global_batch=16", "launch.parallel=fsdp_full_shard",
                        "launch.gpus=2"])
    two_dir = _finished(p)
    assert "kept in fp32 (master weights)" in p.stderr
    one, two = (json.loads((d / "metrics.json").read_text())["stages"]["main"] for d in (one_dir, two_dir))
    assert one["model"]["dtype"] == two["model"]["dtype"] == "bfloat16"
    h1, h2 = np.array(one["train_loss_history"]), np.array(two["train_loss_history"])
    assert np.allclose(h1, h2, rtol=2**-8, atol=0)
