"""Memory per GPU of a training step and of inference: the formulas, written once. Pure arithmetic
(counts and byte sizes in, bytes out); nothing here imports torch.

These are **estimates** for planning (does a stage need 20 or 90 GiB per GPU?), not measurements.
What they assume:

* **weights**: every parameter at its storage size: 2 bytes in bf16/fp16, 4 in fp32. bitsandbytes
  quantizes only the weights of the decoder layers' Linear modules: nf4 with double quantization
  is 4 bits + an 8-bit absmax per block of 64 + an fp32 scale per 256 blocks
  (:data:`NF4_BYTES`, 0.516 byte); LLM.int8 is 1 byte (+ an fp32 scale per output row, left out).
  Training a 4/8-bit model casts every other parameter to fp32 (peft's
  ``prepare_model_for_kbit_training``). LoRA adapters are fp32 (peft's ``autocast_adapter_dtype``).
* **master weights**: fp32 copies of the trainable parameters next to 16-bit compute. When the
  trainable parameters are stored in fp32 (LoRA adapters; fp32 weights under ``mixed_precision``
  bf16/fp16) they *are* the master weights and are counted here, not under weights. DeepSpeed ZeRO
  (the runner's, :mod:`replicator.core.model.zero`) keeps the trainable parameters as stored (under weights)
  and always adds an fp32 copy of each process's partition (its master weights). 16-bit trainable
  parameters otherwise have none (pure bf16 training: what Kahan summation is for).
* **gradients**: one per trainable parameter, in its storage dtype; DDP keeps a second copy in its
  all-reduce buckets (``gradient_as_bucket_view`` off, the default).
* **optimizer states**: per trainable parameter, in the dtype of the copy the optimizer updates (the
  master copy when there is one): :data:`OPTIMIZERS`.
* **sharding** (:data:`SHARDED`): what the parallelism splits over the GPUs is divided by their
  number; FSDP full shard and ZeRO-3 also hold two gathered decoder layers (the one computing and
  the prefetched one) in the compute dtype.
* **activations**: what a decoder layer keeps per token for the backward pass, in elements of the
  compute dtype, from :data:`ACTIVATIONS` (coefficients of hidden size h, query width q = heads x
  head dim, key/value width kv and MLP width i, *measured* with transformers 5 in bf16 by summing
  the tensors autograd saves, one layer at a time: tests/model/test_memory.py re-measures them). They
  include the fp32 copies RMSNorm makes. Eager attention (Gemma-2: transformers has no SDPA for it) also keeps
  the s x s attention matrices: :data:`EAGER_ATTENTION` per head per token per position of the row
  (4 with logit softcapping, 3 without); SDPA/flash keeps none. LoRA (peft, fp32 adapters on a 16-bit
  base) adds :func:`lora_elements`. Without gradient checkpointing every layer keeps all of that; with
  it each layer keeps its input (h) and one layer at a time is recomputed in full. A micro-batch has
  ``batch_size`` rows of ``max_length`` tokens (the longest micro-batch; length-grouped batches of
  shorter rows take less); with ``train.batch_tokens``, that budget's worth of tokens in rows of
  ``max_length`` (:func:`replicator.core.run.resources.micro_batch_rows`). Embeddings, the final norm
  and the head are left out (a few h per token): count on +-15 %. In fp32 (a CPU) the same counts take
  4 bytes (an overestimate: nothing is upcast).
* **inference**: the whole model on every GPU (processes share the rows, not the model), a batch of
  ``batch_tokens`` tokens and one layer's activations at a time (the runner's forward passes
  ``use_cache=False``, so no layer's keys and values are kept).
* **overhead**: :data:`GPU_OVERHEAD_GIB` per GPU for the CUDA context, library workspaces and
  allocator fragmentation (none on a CPU).
"""

from __future__ import annotations

import dataclasses

GIB = 1024**3
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
#: bitsandbytes nf4 + double quantization: 4 bits, an 8-bit absmax per 64 weights, an fp32 scale per 256
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)
INT8_BYTES = 1.0
GPU_OVERHEAD_GIB = 1.5
#: optimizer -> (state bytes per trainable parameter, a function of the updated copy's bytes; what it keeps)
OPTIMIZERS = {
    "adamw": (lambda b: 2 * b, "exp_avg and exp_avg_sq in the updated copy's dtype (fp32: 8 B, bf16: 4 B)"),
    "adamw_kahan": (lambda b: 3 * b, "the two moments + a Kahan compensation buffer in the parameter dtype "
                                     "(bf16: 2 + 2 + 2 B)"),
    "adamw_8bit": (lambda b: 2 * (1 + 4 / 256), "bitsandbytes 8-bit moments, an fp32 absmax per 256"),
    "paged_adamw_8bit": (lambda b: 2 * (1 + 4 / 256), "as adamw_8bit, in paged memory (it may spill to the "
                                                      "host; counted on the GPU)"),
}
#: parallelism -> the components it splits over the GPUs
SHARDED = {
    "single": (), "ddp": (),
    "fsdp_shard_grad_op": ("gradients", "optimizer", "master"), "zero2": ("gradients", "optimizer", "master"),
    "fsdp_full_shard": ("weights", "gradients", "optimizer", "master"),
    "zero3": ("weights", "gradients", "optimizer", "master"),
}
COMPONENTS = ("weights", "gradients", "optimizer", "master", "activations", "overhead")

#: model_type -> activation elements per decoder layer per token = a_h h + a_q q + a_kv kv + a_i i, measured
#: in bf16 (transformers 5.24, one layer's saved tensors; Gemma-2's eager attention repeats k, v to q's width)
ACTIVATIONS = {"llama": (8, 2, 2, 4), "qwen2": (8, 2, 2, 4), "gemma2": (18, 4, 0, 4),
               "gemma3_text": (18, 8, 4, 4)}
#: eager attention's s x s matrices: elements per head per token per position of the row (the scores, the fp32
#: softmax and its 16-bit copy; + the softcapping tanh)
EAGER_ATTENTION = {True: 4, False: 3}
#: peft LoRA per decoder layer per token: fp32 copies of the adapted modules' inputs (1.2 x their widths,
#: measured), 2 x r per adapter (the fp32 rank-r intermediate), + 2 x the input widths with dropout
LORA_INPUTS, LORA_RANK, LORA_DROPOUT = 1.2, 2, 2


@dataclasses.dataclass(frozen=True)
class Model:
    """The sizes the formulas need (counts in parameters or elements)."""

    total: int          #: parameters of the sequence classifier (backbone + head), LoRA adapters not included
    quantizable: int    #: of which the decoder layers' Linear weights
    trainable: int      #: LoRA adapters + head, or the unfrozen parameters
    adapters: int       #: of which LoRA adapters (0 for full fine-tuning)
    layers: int
    hidden: int
    kv_dim: int         #: key/value width
    act_token: float    #: activation elements a decoder layer keeps per token (:func:`layer_elements`)
    act_attn: float = 0.0   #: more per token per position of its row (eager attention: heads x 3 or 4)
    act_lora: float = 0.0   #: more per token in training (:func:`lora_elements`)
    layer_params: int = 0   #: parameters of the largest decoder layer (gathered under full sharding)


def layer_elements(model_type: str, hidden: int, q_dim: int, kv_dim: int, intermediate: int) -> float:
    """Activation elements one decoder layer keeps per token (:data:`ACTIVATIONS`; a model type not
    measured gets Llama's coefficients, which :func:`activation_note` says)."""
    a_h, a_q, a_kv, a_i = ACTIVATIONS.get(model_type, ACTIVATIONS["llama"])
    return a_h * hidden + a_q * q_dim + a_kv * kv_dim + a_i * intermediate


def activation_note(model_type: str) -> str | None:
    if model_type in ACTIVATIONS:
        return None
    return f"activations of {model_type!r} not measured: Llama's coefficients used"


def lora_elements(inputs: list[int], r: int, dropout: float) -> float:
    """Activation elements LoRA adds per decoder layer per token, for adapters on modules whose input
    widths are ``inputs``."""
    return (LORA_INPUTS + LORA_DROPOUT * (dropout > 0)) * sum(inputs) + LORA_RANK * r * len(inputs)


def base_weights(m: Model, dtype_bytes: float, quant: str | None, other_bytes: float | None = None) -> float:
    """Bytes of the base model's parameters (adapters not included): quantized Linear weights at
    their quantized size and the rest at ``other_bytes`` (default ``dtype_bytes``)."""
    other = dtype_bytes if other_bytes is None else other_bytes
    if quant is None:
        return m.total * dtype_bytes
    per = {"nf4": NF4_BYTES, "int8": INT8_BYTES}[quant]
    return m.quantizable * per + (m.total - m.quantizable) * other


def activation_bytes(m: Model, rows: int, seq_len: int, unit: float, checkpointing: bool) -> float:
    """Activations of a training micro-batch: ``rows`` rows of ``seq_len`` tokens, ``unit`` bytes each."""
    per_layer = m.act_token + m.act_lora + m.act_attn * seq_len
    kept = m.layers * m.hidden + per_layer if checkpointing else m.layers * per_layer
    return float(rows * seq_len * kept * unit)


def train_memory(m: Model, *, dtype: str, quant: str | None, optimizer: str, mixed_precision: str,
                 parallel: str, gpus: int, rows: int, seq_len: int, checkpointing: bool,
                 gpu: bool = True) -> dict[str, float]:
    """Bytes per GPU of one training step on micro-batches of ``rows`` x ``seq_len`` tokens, by
    component (:data:`COMPONENTS`) and ``total``."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer {optimizer!r}: the plan knows {', '.join(OPTIMIZERS)}")
    db = DTYPE_BYTES[dtype]
    compute = 2 if db == 2 or mixed_precision in ("bf16", "fp16") else 4
    lora = m.adapters > 0 or quant is not None
    frozen = m.total - (0 if lora else m.trainable)
    weights = base_weights(dataclasses.replace(m, total=frozen), db, quant, other_bytes=4 if quant else db)
    stored = 4 if lora else db  # the trainable parameters' storage bytes
    if parallel in ("zero2", "zero3"):
        weights, master, grad = weights + stored * m.trainable, 4 * m.trainable, stored
    elif stored == 4 and compute == 2:
        master, grad = 4 * m.trainable, 4
    else:
        weights, master, grad = weights + stored * m.trainable, 0, stored
    updated = 4 if master else stored
    out = {
        "weights": float(weights),
        "gradients": float(grad * m.trainable * (2 if parallel == "ddp" else 1)),
        "optimizer": float(OPTIMIZERS[optimizer][0](updated) * m.trainable),
        "master": float(master),
        "activations": activation_bytes(m, rows, seq_len, compute, checkpointing),
        "overhead": GPU_OVERHEAD_GIB * GIB if gpu else 0.0,
    }
    for k in SHARDED[parallel]:
        out[k] /= gpus
    if parallel in ("fsdp_full_shard", "zero3"):
        out["weights"] += 2 * m.layer_params * compute
    out["total"] = sum(out[k] for k in COMPONENTS)
    return out


def inference_memory(m: Model, *, dtype: str, quant: str | None, tokens: int, seq_len: int,
                     gpu: bool = True) -> dict[str, float]:
    """Bytes per GPU of inference on a batch of ``tokens`` tokens in rows of up to ``seq_len``: the
    whole model (adapters in fp32, not merged) and one layer's activations. No key/value cache: a classifier
    reads each row in one forward, which the runner calls with ``use_cache=False``."""
    db = DTYPE_BYTES[dtype]
    out = {
        "weights": base_weights(m, db, quant) + 4.0 * m.adapters,
        "gradients": 0.0, "optimizer": 0.0, "master": 0.0,
        "activations": float(tokens * (m.act_token + m.act_attn * seq_len) * db),
        "overhead": GPU_OVERHEAD_GIB * GIB if gpu else 0.0,
    }
    out["total"] = sum(out[k] for k in COMPONENTS)
    return out
