"""The memory arithmetic of ``replicate plan`` (core/model/memory.py) against hand-computed cases and
against what autograd really saves."""

from __future__ import annotations

import pytest

from replicator.core.model import memory as M

pytestmark = pytest.mark.usefixtures("offline")


def _m(**kw) -> M.Model:
    base = dict(total=1000, quantizable=800, trainable=1000, adapters=0, layers=2, hidden=4, kv_dim=2,
                act_token=60, layer_params=400)
    return M.Model(**{**base, **kw})


def test_full_fine_tuning_in_bf16_under_ddp_by_hand():
    out = M.train_memory(_m(), dtype="bfloat16", quant=None, optimizer="adamw", mixed_precision="no",
                         parallel="ddp", gpus=2, rows=1, seq_len=10, checkpointing=False, gpu=False)
    # weights 1000 x 2 B; gradients 1000 x 2 B x 2 (DDP buckets); AdamW moments in bf16 2 x 2 B;
    # activations 1 row x 10 tokens x 2 layers x 60 elements x 2 B; nothing sharded under DDP
    assert out == {"weights": 2000, "gradients": 4000, "optimizer": 4000, "master": 0, "activations": 2400,
                   "overhead": 0, "total": 12400}


def test_qlora_under_zero2_by_hand():
    out = M.train_memory(_m(trainable=50, adapters=40, act_lora=10), dtype="bfloat16", quant="nf4",
                         optimizer="adamw", mixed_precision="no", parallel="zero2", gpus=4, rows=2,
                         seq_len=10, checkpointing=True)
    nf4 = 0.5 + 1 / 64 + 4 / 16384
    # 800 nf4 weights + 200 others upcast to fp32, + the 50 trainable (fp32 LoRA) whole on every GPU; ZeRO's
    # fp32 copy of each partition, fp32 gradients and fp32 AdamW moments sharded over 4; checkpointing keeps
    # 2 layer inputs of h = 4 and one layer of 60 + 10 (LoRA) elements per token, 20 tokens, 2 B each
    assert out["weights"] == pytest.approx(800 * nf4 + 200 * 4 + 50 * 4)
    assert (out["master"], out["gradients"], out["optimizer"]) == (50 * 4 / 4, 50 * 4 / 4, 50 * 8 / 4)
    assert out["activations"] == 20 * (2 * 4 + 70) * 2
    assert out["overhead"] == M.GPU_OVERHEAD_GIB * M.GIB
    assert out["total"] == pytest.approx(sum(out[k] for k in M.COMPONENTS))


def test_lora_with_kahan_under_fsdp_full_shard_and_eager_attention_by_hand():
    out = M.train_memory(_m(trainable=50, adapters=40, act_attn=3), dtype="bfloat16", quant=None,
                         optimizer="adamw_kahan", mixed_precision="no", parallel="fsdp_full_shard", gpus=2,
                         rows=1, seq_len=10, checkpointing=False, gpu=False)
    # fp32 LoRA weights next to bf16 compute are the master weights (4 B), fp32 gradients, Kahan: 3 x 4 B;
    # all sharded over 2, plus two gathered layers of 400 parameters in bf16; attention adds 3 x 10 per token
    assert out == {"weights": 1000 * 2 / 2 + 2 * 400 * 2, "gradients": 50 * 4 / 2, "optimizer": 50 * 12 / 2,
                   "master": 50 * 4 / 2, "activations": 10 * 2 * (60 + 3 * 10) * 2, "overhead": 0,
                   "total": 2600 + 100 + 300 + 100 + 3600}


def test_fp32_weights_with_bf16_compute_are_master_weights():
    out = M.train_memory(_m(), dtype="float32", quant=None, optimizer="adamw_8bit", mixed_precision="bf16",
                         parallel="fsdp_shard_grad_op", gpus=4, rows=1, seq_len=10, checkpointing=True,
                         gpu=False)
    assert out["weights"] == 0 and out["master"] == 1000 * 4 / 4 and out["gradients"] == 1000 * 4 / 4
    assert out["optimizer"] == pytest.approx(1000 * 2 * (1 + 4 / 256) / 4)
    assert out["activations"] == 10 * (2 * 4 + 60) * 2


def test_inference_by_hand():
    out = M.inference_memory(_m(trainable=50, adapters=40, act_attn=3), dtype="bfloat16", quant="int8",
                             tokens=100, seq_len=20, gpu=False)
    # int8 Linear weights, bf16 rest, fp32 adapters; one layer (60 + 3 x 20), no key/value cache
    assert out["weights"] == 800 * 1 + 200 * 2 + 40 * 4
    assert out["activations"] == 100 * (60 + 3 * 20) * 2
    assert out["total"] == out["weights"] + out["activations"]


def test_optimizer_state_bytes():
    assert M.OPTIMIZERS["adamw"][0](4) == 8 and M.OPTIMIZERS["adamw"][0](2) == 4
    assert M.OPTIMIZERS["adamw_kahan"][0](2) == 6
    assert M.OPTIMIZERS["paged_adamw_8bit"][0](4) == pytest.approx(2.03, abs=0.01)
    with pytest.raises(ValueError, match="sgd"):
        M.train_memory(_m(), dtype="bfloat16", quant=None, optimizer="sgd", mixed_precision="no",
                       parallel="single", gpus=1, rows=1, seq_len=1, checkpointing=False)


def _saved_bytes_per_layer_token(make, rows: int, seq: int, lora: dict | None = None) -> float:
    """Bytes autograd keeps per decoder layer per token in bf16 (4 layers minus 2, so embeddings and head
    cancel), counting each storage once and leaving the parameters out."""
    import torch
    from transformers import AutoModelForSequenceClassification

    def saved(layers: int) -> int:
        torch.manual_seed(0)
        model = AutoModelForSequenceClassification.from_config(make(layers)).to(torch.bfloat16)
        model.config.pad_token_id = 0
        if lora:
            from peft import LoraConfig, TaskType, get_peft_model

            model = get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_CLS, **lora))
        model.train()
        params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        seen: dict[int, int] = {}

        def pack(t):
            if t.untyped_storage().data_ptr() not in params:
                seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        ids = torch.randint(1, 100, (rows, seq))
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(input_ids=ids, attention_mask=torch.ones_like(ids))
        return sum(seen.values())

    return (saved(4) - saved(2)) / 2 / (rows * seq)


def _tiny(kind: str, **kw):
    """A maker of small configs of ``kind`` by number of layers (h 128, q 128, kv 64, i 512)."""
    from transformers import Gemma2Config, LlamaConfig, Qwen2Config

    cls = {"llama": LlamaConfig, "qwen2": Qwen2Config, "gemma2": Gemma2Config}[kind]
    return lambda layers: cls(vocab_size=100, hidden_size=128, intermediate_size=512,
                              num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                              head_dim=32, num_labels=3, **kw)


@pytest.mark.parametrize("kind, softcap", [("llama", None), ("qwen2", None), ("gemma2", 50.0),
                                           ("gemma2", None)])
def test_activation_coefficients_are_what_autograd_saves(kind, softcap):
    make = _tiny(kind, **({"attn_logit_softcapping": softcap} if kind == "gemma2" else {}))
    seq = 32
    measured = _saved_bytes_per_layer_token(make, rows=2, seq=seq)
    eager = kind == "gemma2"  # transformers has no SDPA for Gemma-2: eager attention keeps s x s matrices
    per_token = M.layer_elements(kind, 128, 128, 64, 512) + (4 * M.EAGER_ATTENTION[softcap is not None] * seq
                                                             if eager else 0)
    assert measured == pytest.approx(per_token * 2, rel=0.02)


def test_lora_activations_are_what_autograd_saves():
    make = _tiny("llama")
    lora = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.05, "target_modules": "all-linear"}
    extra = _saved_bytes_per_layer_token(make, 2, 32, lora) - _saved_bytes_per_layer_token(make, 2, 32)
    inputs = [128, 128, 128, 128, 128, 128, 512]  # q, k, v, o (q width 128), gate, up, down
    assert extra == pytest.approx(M.lora_elements(inputs, 8, 0.05) * 2, rel=0.1)
