"""The memory arithmetic of ``replicate plan`` (core/model/memory.py) against hand-computed cases and
against what autograd really saves."""

from __future__ import annotations

import dataclasses
import weakref

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
    # the trainable weights are fp32 masters (core/model/precision.py keep_masters): 1000 x 4 B; fp32
    # gradients x 2 (DDP buckets); AdamW moments in fp32 2 x 4 B; activations 1 row x 10 tokens x 2 layers
    # x 60 elements x 2 B (bf16 autocast); nothing sharded under DDP
    assert out == {"weights": 0, "gradients": 8000, "optimizer": 8000, "master": 4000, "gathered": 0,
                   "activations": 2400, "temporary": 0, "overhead": 0, "total": 22400}
    kahan = M.train_memory(_m(), dtype="bfloat16", quant=None, optimizer="adamw_kahan", mixed_precision="no",
                           parallel="ddp", gpus=2, rows=1, seq_len=10, checkpointing=False, gpu=False)
    # adamw_kahan keeps the bf16 weights: 1000 x 2 B, bf16 gradients x 2, two moments + compensation in bf16
    assert kahan == {"weights": 2000, "gradients": 4000, "optimizer": 6000, "master": 0, "gathered": 0,
                     "activations": 2400, "temporary": 0, "overhead": 0, "total": 14400}


def test_one_process_shards_nothing():
    kw = dict(dtype="bfloat16", quant=None, optimizer="adamw_kahan", mixed_precision="no", rows=1, seq_len=10,
              checkpointing=False, gpu=False)
    single = M.train_memory(_m(), parallel="single", gpus=1, **kw)
    for parallel in ("ddp", "fsdp_shard_grad_op", "fsdp_full_shard", "zero2", "zero3"):
        assert M.train_memory(_m(), parallel=parallel, gpus=1, **kw) == single, parallel


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
    assert out["overhead"] == M.GPU_OVERHEAD_GIB * M.GIB and out["gathered"] == 0
    assert out["total"] == pytest.approx(sum(out[k] for k in M.COMPONENTS))


def test_lora_with_kahan_under_fsdp_full_shard_and_eager_attention_by_hand():
    out = M.train_memory(_m(trainable=50, adapters=40, act_attn=3), dtype="bfloat16", quant=None,
                         optimizer="adamw_kahan", mixed_precision="no", parallel="fsdp_full_shard", gpus=2,
                         rows=1, seq_len=10, checkpointing=False, gpu=False)
    # fp32 LoRA weights next to bf16 compute are the master weights (4 B), fp32 gradients, Kahan: 3 x 4 B;
    # all sharded over 2 with the bf16 base; gathered whole: the root module (1000 - 2 x 400 parameters) and
    # two layers in bf16, + one layer's adapters' (40 / 2) unsharded bf16 gradients and their fp32
    # reduce-scatter input (FSDP's bf16 policy); attention adds 3 x 10 per token
    assert out == {"weights": 1000 * 2 / 2, "gradients": 50 * 4 / 2, "optimizer": 50 * 12 / 2,
                   "master": 50 * 4 / 2, "gathered": (200 + 2 * 400) * 2 + 20 * (2 + 4),
                   "activations": 10 * 2 * (60 + 3 * 10) * 2, "temporary": 0, "overhead": 0,
                   "total": 1000 + 100 + 300 + 100 + 2120 + 3600}


def test_shard_grad_op_holds_the_whole_model_beside_its_shard():
    kw = dict(quant=None, optimizer="adamw_kahan", mixed_precision="no", rows=1, seq_len=10,
              checkpointing=True, gpu=False)
    out = M.train_memory(_m(), dtype="bfloat16", parallel="fsdp_shard_grad_op", gpus=4, **kw)
    # the bf16 shard (1000 x 2 B / 4) at all times, and from each layer's forward to its backward the layer
    # gathered: the whole model in bf16; one layer's bf16 gradients + their fp32 reduce-scatter input
    assert out["weights"] == 1000 * 2 / 4
    assert out["gathered"] == 1000 * 2 + 400 * (2 + 4)
    full = M.train_memory(_m(), dtype="bfloat16", parallel="fsdp_full_shard", gpus=4, **kw)
    assert full["weights"] == out["weights"] and full["gathered"] == (200 + 2 * 400) * 2 + 400 * (2 + 4)
    # fp32 weights without a policy: gathered and reduced as stored
    fp32 = M.train_memory(_m(), dtype="float32", parallel="fsdp_shard_grad_op", gpus=4, **kw)
    assert fp32["gathered"] == 1000 * 4 + 400 * (4 + 4)


def test_fp32_weights_with_bf16_compute_are_master_weights():
    out = M.train_memory(_m(), dtype="float32", quant=None, optimizer="adamw_8bit", mixed_precision="bf16",
                         parallel="fsdp_shard_grad_op", gpus=4, rows=1, seq_len=10, checkpointing=True,
                         gpu=False)
    assert out["weights"] == 0 and out["master"] == 1000 * 4 / 4 and out["gradients"] == 1000 * 4 / 4
    assert out["optimizer"] == pytest.approx(1000 * 2 * (1 + 4 / 256) / 4)
    assert out["activations"] == 10 * (2 * 4 + 60) * 2
    assert out["gathered"] == 1000 * 2 + 400 * (2 + 4)  # FSDP's bf16 policy gathers in bf16


def test_temporaries_are_the_larger_of_the_per_token_gradients_and_eager_attention():
    m = _m(bwd_token=100, bwd_attn=12, bwd_freed=200)
    kw = dict(dtype="bfloat16", quant=None, optimizer="adamw_kahan", mixed_precision="no", parallel="single",
              gpus=1, checkpointing=True, gpu=False)
    short = M.train_memory(m, rows=2, seq_len=10, **kw)
    long = M.train_memory(m, rows=2, seq_len=100, **kw)
    assert short["temporary"] == 20 * 100 * 2  # 12 x 10 - 200 < 100 per token
    assert long["temporary"] == 200 * (12 * 100 - 200) * 2
    packed = M.train_memory(m, rows=2, seq_len=100, span=200, **kw)  # one sequence of 200 tokens
    assert packed["temporary"] == 200 * (12 * 200 - 200) * 2
    masked = M.train_memory(dataclasses.replace(m, mask_bytes=4), rows=2, seq_len=100, **kw)
    assert masked["activations"] - long["activations"] == 2 * 100 * 100 * 4  # rows x s x s x bytes


def test_inference_by_hand():
    out = M.inference_memory(_m(trainable=50, adapters=40, fwd_attn=5, mask_bytes=2), dtype="bfloat16",
                             quant="int8", tokens=100, seq_len=20, gpu=False)
    # int8 Linear weights, bf16 rest, fp32 adapters; one layer (60 + 5 x 20 at the softmax), the masks
    # (2 B per row per position squared), no key/value cache
    assert out["weights"] == 800 * 1 + 200 * 2 + 40 * 4
    assert out["activations"] == 100 * (60 + 5 * 20) * 2 + 100 * 20 * 2
    assert out["total"] == out["weights"] + out["activations"]
    merged = M.inference_memory(_m(trainable=50, adapters=40), dtype="bfloat16", quant="int8", tokens=100,
                                seq_len=20, gpu=False, merged=True)
    assert merged["weights"] == 800 * 1 + 200 * 2  # predict.merge_lora: the adapters are in the int8 weights


def test_optimizer_state_bytes():
    assert M.OPTIMIZERS["adamw"][0](4) == 8 and M.OPTIMIZERS["adamw"][0](2) == 4
    assert M.OPTIMIZERS["adamw_kahan"][0](2) == 6
    assert M.OPTIMIZERS["paged_adamw_8bit"][0](4) == pytest.approx(2.03, abs=0.01)
    with pytest.raises(ValueError, match="sgd"):
        M.train_memory(_m(), dtype="bfloat16", quant=None, optimizer="sgd", mixed_precision="no",
                       parallel="single", gpus=1, rows=1, seq_len=1, checkpointing=False)


def _build(config, attention: str | None = None):
    """A bf16 sequence classifier of ``config`` with ``attention`` (``sdpa!``: transformers' sdpa function put
    in place of the kernel transformers chose, for Gemma-2, which transformers gives no SDPA)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    forced = attention == "sdpa!"
    model = AutoModelForSequenceClassification.from_config(
        config, **({"attn_implementation": attention} if attention and not forced else {})).to(torch.bfloat16)
    if forced:
        model.config._attn_implementation_internal = "sdpa"
    model.config.pad_token_id = 0
    return model


def _saved_bytes_per_layer_token(make, rows: int, seq: int, lora: dict | None = None,
                                 attention: str | None = None) -> float:
    """Bytes autograd keeps per decoder layer per token in bf16 (4 layers minus 2, so embeddings and head
    cancel), counting each storage once and leaving the parameters out."""
    import torch

    def saved(layers: int) -> int:
        model = _build(make(layers), attention)
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


SHAPES = [(128, 4, 32, 2, 512), (128, 4, 64, 1, 256)]  # h, heads, head dim, kv heads, i: q = h and q != h


def _tiny(kind: str, h: int = 128, heads: int = 4, head_dim: int = 32, kv_heads: int = 2, i: int = 512, **kw):
    """A maker of small configs of ``kind`` by number of layers (default h 128, q 128, kv 64, i 512)."""
    from transformers import Gemma2Config, Gemma3TextConfig, LlamaConfig, Qwen2Config

    cls = {"llama": LlamaConfig, "qwen2": Qwen2Config, "gemma2": Gemma2Config,
           "gemma3_text": Gemma3TextConfig}[kind]
    return lambda layers: cls(vocab_size=100, hidden_size=h, intermediate_size=i,
                              num_hidden_layers=layers, num_attention_heads=heads,
                              num_key_value_heads=kv_heads,
                              head_dim=head_dim, num_labels=3, **kw)


@pytest.mark.parametrize("kind, attention, softcap", [
    ("llama", "sdpa", None), ("llama", "eager", None), ("qwen2", "sdpa", None), ("qwen2", "eager", None),
    ("gemma2", "eager", 50.0), ("gemma2", "eager", None), ("gemma2", "sdpa!", None),
    ("gemma3_text", "sdpa", None), ("gemma3_text", "eager", None)])
@pytest.mark.parametrize("shape", SHAPES, ids=["q=h", "q!=h"])
def test_activation_coefficients_are_what_autograd_saves(kind, attention, softcap, shape):
    """The per-token coefficients of each model type and kernel (Gemma-2 ``auto`` is eager: transformers has
    no SDPA for it; its sdpa row, what flash_attention_2 keeps, with sdpa forced in after loading)."""
    h, heads, head_dim, kv_heads, i = shape
    make = _tiny(kind, h, heads, head_dim, kv_heads, i,
                 **({"attn_logit_softcapping": softcap} if kind == "gemma2" else {}))
    seq = 32
    measured = _saved_bytes_per_layer_token(make, rows=2, seq=seq, attention=attention)
    kernel = attention.rstrip("!")
    s_by_s = heads * M.EAGER_ATTENTION[softcap is not None] * seq if kernel == "eager" else 0
    per_token = M.layer_elements(kind, h, heads * head_dim, kv_heads * head_dim, i, kernel) + s_by_s
    assert measured == pytest.approx(per_token * 2, rel=0.02)


class _LiveBytes:
    """Bytes of every tensor allocated under it and still alive, and their peak: a dispatch mode that sees
    each op's outputs and a finalizer on each new storage (what the CUDA allocator would count, without
    its rounding and caching)."""

    def __init__(self):
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_flatten

        owner = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                for t in tree_flatten(out)[0]:
                    if hasattr(t, "untyped_storage"):
                        storage = t.untyped_storage()
                        key = storage.data_ptr()
                        if key and key not in owner.live:
                            owner.live[key] = storage.nbytes()
                            owner.now += storage.nbytes()
                            weakref.finalize(storage, owner.free, key)
                owner.peak = max(owner.peak, owner.now)
                return out

        self.live: dict[int, int] = {}
        self.now = self.peak = 0
        self.mode = Mode()

    def free(self, key: int) -> None:
        self.now -= self.live.pop(key, 0)


def _backward_and_inference_peaks(make, seq: int, attention: str | None = None) -> tuple[float, float]:
    """Per token, in bf16 elements, of a one-layer model whose weights are frozen (their gradients are the
    gradients' component): what its backward allocates at its peak beyond what the forward left, and the
    peak of a forward without gradients."""
    import torch

    model = _build(make(1), attention)
    for p in model.parameters():
        p.requires_grad_(False)
    ids = torch.randint(1, 100, (2, seq))
    embeds = model.get_input_embeddings()(ids).detach()
    tokens = ids.numel()
    model.train()
    track = _LiveBytes()
    with track.mode:
        logits = model(inputs_embeds=embeds.requires_grad_(True), attention_mask=torch.ones_like(ids)).logits
        saved, track.peak = track.now, track.now
        logits.float().sum().backward()
    backward = (track.peak - saved) / tokens / 2
    model.eval()
    track = _LiveBytes()
    with torch.no_grad(), track.mode:
        model(inputs_embeds=embeds.detach(), attention_mask=torch.ones_like(ids))
    return backward, track.peak / tokens / 2


@pytest.mark.parametrize("kind, attention, softcap, seq", [
    ("llama", "sdpa", None, 32), ("llama", "eager", None, 512), ("gemma2", "eager", 50.0, 32),
    ("gemma2", "eager", 50.0, 512), ("gemma2", "eager", None, 512), ("gemma3_text", "eager", None, 512)])
@pytest.mark.parametrize("shape", [(128, 512), (256, 512), (128, 1024)], ids=["h128-i512", "h256", "i1024"])
def test_backward_temporaries_are_what_the_backward_allocates(kind, attention, softcap, seq, shape):
    """The peak of one layer's backward over its saved tensors: the per-token gradients (short rows) or eager
    attention's s x s gradients less what the layer freed before them (long rows); and eager attention's
    peak in a forward without gradients, with the masks (Gemma: full and sliding)."""
    h, i = shape
    make = _tiny(kind, h=h, i=i, **({"attn_logit_softcapping": softcap} if kind == "gemma2" else {}))
    backward, inference = _backward_and_inference_peaks(make, seq, attention)
    heads, eager = 4, attention == "eager"
    bwd = M.Model(total=0, quantizable=0, trainable=0, adapters=0, layers=1, hidden=h, kv_dim=64, act_token=0,
                  bwd_token=M.backward_elements(kind, h, i), bwd_attn=heads * M.EAGER_BACKWARD * eager,
                  bwd_freed=M.freed_elements(kind, h, i) * eager)
    assert backward == pytest.approx(M.temporary_bytes(bwd, 1, seq, 1), rel=0.02)
    if eager and seq > 100:  # the s x s matrices dominate: heads x EAGER_FORWARD + the masks (2 B each)
        masks = 2 if kind.startswith("gemma") else 1
        assert inference == pytest.approx(seq * (heads * M.EAGER_FORWARD + masks), rel=0.15)


def test_lora_activations_are_what_autograd_saves():
    make = _tiny("llama")
    lora = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.05, "target_modules": "all-linear"}
    extra = _saved_bytes_per_layer_token(make, 2, 32, lora) - _saved_bytes_per_layer_token(make, 2, 32)
    inputs = [128, 128, 128, 128, 128, 128, 512]  # q, k, v, o (q width 128), gate, up, down
    assert extra == pytest.approx(M.lora_elements(inputs, 8, 0.05) * 2, rel=0.1)
