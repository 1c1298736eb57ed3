"""CUDA-only checks: one LoRA training step of a Gemma-2-2B-shaped model (random weights from its
config) in bf16 and in 4-bit. Figures come from benchmarks/gpu_step.py; this test only proves the
path runs and trains."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("quant", ["bf16", "4bit"])
def test_gemma2_2b_shaped_lora_step(quant):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from benchmarks.gpu_step import one_step

    result = one_step(quant, seq_len=512, batch=2)
    assert result["loss_after"] < result["loss_before"] or result["lora_changed"]
    assert result["tokens_per_s"] > 0
