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
* **master weights**: fp32 copies of the trainable parameters next to 16-bit compute. The runner keeps
  every trainable parameter in fp32 (:func:`replicator.core.model.precision.keep_masters`: LoRA
  adapters, heads, a full fine-tune's weights) unless the optimizer is ``adamw_kahan``, which keeps
  16-bit weights (pure bf16 training with Kahan-summed updates, 2nd [R2]); a 16-bit model's forward runs
  under its own autocast, fp32 weights' under ``mixed_precision``. fp32 trainable parameters next to
  16-bit compute *are* the master weights and are counted here, not under weights. DeepSpeed ZeRO (the
  runner's, :mod:`replicator.core.model.zero`) keeps the trainable parameters as stored (under weights)
  and always adds an fp32 copy of each process's partition (its master weights).
* **gradients**: one per trainable parameter, in its storage dtype; DDP keeps a second copy in its
  all-reduce buckets (``gradient_as_bucket_view`` off, the default).
* **optimizer states**: per trainable parameter, in the dtype of the copy the optimizer updates (the
  master copy when there is one): :data:`OPTIMIZERS`.
* **sharding** (:data:`SHARDED`): what the parallelism splits over the GPUs is divided by their
  number. One process shards nothing (the runner wraps neither FSDP nor DeepSpeed then): its plan is
  ``single``'s.
* **gathered**: what a sharding parallelism holds whole during the forward and backward, beside the
  shards (:func:`gathered_bytes`). FSDP2 (``fully_shard``, :mod:`replicator.core.model.sharding`) keeps a
  shard of every weight on each GPU at all times, all-gathers a layer's weights for its forward and
  backward (in bf16 under the bf16 policy the runner gives bf16 models and ``mixed_precision`` bf16,
  else as stored), and holds the layer's unsharded gradients until they are copied into the
  reduce-scatter buffer (fp32 under that policy), which stays allocated until the next layer's
  reduce-scatter. Counted: ``fsdp_shard_grad_op`` (``reshard_after_forward=False``: every layer stays
  gathered from its forward to its backward) the whole model; ``fsdp_full_shard`` the root module
  (embeddings, final norm, head: all-gathered for the whole forward and again for the whole backward,
  which starts at the head) and two decoder layers (the one computing and the prefetched one); both,
  one layer's unsharded gradients + its reduce-scatter input (torch 2.13 ``_fsdp_param_group.py`` /
  ``_fsdp_collectives.py`` ``foreach_reduce``, read, not measured on GPUs). ZeRO-3: two gathered layers
  (DeepSpeed's buckets and persistent small parameters left out).
* **activations**: what a decoder layer keeps per token for the backward pass, in elements of the
  compute dtype, from :data:`ACTIVATIONS` (coefficients of hidden size h, query width q = heads x
  head dim, key/value width kv and MLP width i, per model type and attention kernel, *measured* with
  transformers 5 in bf16 by summing the tensors autograd saves, one layer at a time:
  tests/model/test_memory.py re-measures them). They include the fp32 copies RMSNorm makes. The kernel
  is ``model.attn_implementation``'s, ``auto`` being transformers' choice (sdpa, or eager for Gemma-2,
  which transformers gives no SDPA because of its logit softcapping). Eager attention also keeps the
  s x s attention matrices: :data:`EAGER_ATTENTION` per head per token per position of the row (4 with
  logit softcapping, 3 without); SDPA (memory-efficient/flash backends on CUDA, the flash kernel on a
  CPU) and flash_attention_2 keep no s x s matrix (a per-head logsumexp; flash_attention_2's kv are
  not repeated to q's width, so sdpa's coefficients overstate it a little). The 4D attention masks
  transformers builds (one per layer type: full and sliding for Gemma; in the model's dtype for eager,
  bool for sdpa, none for flash_attention_2) are counted too (:data:`MASKS`). LoRA (peft, fp32 adapters
  on a 16-bit base) adds :func:`lora_elements`. Without gradient checkpointing every layer keeps all of
  that; with it each layer keeps its input (h) and one layer at a time is recomputed in full. A
  micro-batch has ``batch_size`` rows of ``max_length`` tokens (the longest micro-batch; length-grouped
  batches of shorter rows take less); with ``train.global_batch`` the rows the runner derives for the
  stage's process count (:func:`replicator.core.config.batch.batching`); with ``train.batch_tokens``,
  that budget's worth of tokens in rows of ``max_length``
  (:func:`replicator.core.run.resources.micro_batch_rows`); with ``train.packed`` the rows are one
  sequence, and attention (and its mask) spans all of its tokens. Embeddings, the final norm and the
  head are left out (a few h per token): count on +-15 %. In fp32 (a CPU) the same counts take 4 bytes
  (an overestimate: nothing is upcast).
* **temporary**: what one layer's backward allocates beyond the tensors it saved, at its peak
  (:func:`temporary_bytes`), *measured* like the activations but as live bytes (a dispatch-mode tracker
  of every allocation and free, bf16, one-layer models of several widths: tests/model/test_memory.py):
  per token :data:`BACKWARD` (the MLP's gradients, or the final RMSNorm's fp32 gradients: 10 h); with
  eager attention, at the softmax's backward, :data:`EAGER_BACKWARD` more s x s matrices per head (the
  gradient of the softmax's bf16 copy, its fp32 cast and the fp32 gradient of the softmax input, beside
  the saved fp32 output), less what the layer's backward has freed by then (:data:`EAGER_FREED`: the
  MLP's and the norms' saved tensors). The largest of those, per token, at the longest micro-batch.
  LoRA's backward temporaries are left out.
* **inference**: the whole model on every GPU (processes share the rows, not the model), a batch of
  ``batch_tokens`` tokens and one layer's activations at a time (the runner's forward passes
  ``use_cache=False``, so no layer's keys and values are kept); eager attention's s x s matrices at the
  peak of a forward without gradients: :data:`EAGER_FORWARD` per head (measured as the temporaries).
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
#: parallelism -> the components it splits over the GPUs (FSDP2 shards the weights under both strategies; what
#: it gathers is :func:`gathered_bytes`)
SHARDED = {
    "single": (), "ddp": (),
    "fsdp_shard_grad_op": ("weights", "gradients", "optimizer", "master"),
    "zero2": ("gradients", "optimizer", "master"),
    "fsdp_full_shard": ("weights", "gradients", "optimizer", "master"),
    "zero3": ("weights", "gradients", "optimizer", "master"),
}
FSDP = ("fsdp_shard_grad_op", "fsdp_full_shard")
COMPONENTS = ("weights", "gradients", "optimizer", "master", "gathered", "activations", "temporary",
              "overhead")
#: model.attn_implementation -> the kernel family whose saved tensors :data:`ACTIVATIONS` measured (flash
#: keeps what sdpa's flash backend keeps)
KERNELS = {"eager": "eager", "sdpa": "sdpa", "flash_attention_2": "sdpa"}

#: (model_type, kernel) -> activation elements per decoder layer per token = a_h h + a_q q + a_kv kv + a_i i,
#: measured in bf16 (transformers 5.25, torch 2.13, CPU, one layer's saved tensors, a mask of ones; eager
#: repeats k, v to q's width). Gemma-2's sdpa row: its layers with transformers' sdpa function put in place
#: of eager after loading (transformers refuses sdpa for Gemma-2), what flash_attention_2 keeps
ACTIVATIONS = {("llama", "sdpa"): (8, 2, 2, 4), ("llama", "eager"): (8, 4, 0, 4),
               ("qwen2", "sdpa"): (8, 2, 2, 4), ("qwen2", "eager"): (8, 4, 0, 4),
               ("gemma2", "eager"): (18, 4, 0, 4), ("gemma2", "sdpa"): (18, 2, 2, 4),
               ("gemma3_text", "sdpa"): (18, 6, 6, 4), ("gemma3_text", "eager"): (18, 8, 4, 4)}
#: eager attention's s x s matrices: elements per head per token per position of the row (the scores, the fp32
#: softmax and its 16-bit copy; + the softcapping tanh)
EAGER_ATTENTION = {True: 4, False: 3}
#: eager attention's backward at its peak (the softmax's): s x s elements per head per token per position
#: more than it saved (the gradient of the 16-bit copy, its fp32 cast, the fp32 gradient of the softmax's
#: input), with or without softcapping (measured)
EAGER_BACKWARD = 3
#: eager attention's forward without gradients at its peak (the softmax): s x s elements per head per token
#: per position (the 16-bit scores, their fp32 conversion, the fp32 softmax; measured: 5.4-5.8 with the masks
#: and the per-token tensors of the tiny models)
EAGER_FORWARD = 5
#: model_type -> (b_h, b_i, c_h): per-token elements one decoder layer's backward allocates beyond what it
#: saved at its peak = max(b_h h, b_i i - c_h h): the final RMSNorm's fp32 gradients (b_h h, once per model)
#: or the MLP's gradients (measured, live bytes, bf16, h 128-512, i 512-2048)
BACKWARD = {"llama": (10, 3, 1), "qwen2": (10, 3, 1), "gemma2": (10, 3, 3), "gemma3_text": (10, 3, 3)}
#: model_type -> (f_i, f_h): per-token elements a decoder layer's backward has freed when its eager
#: attention's backward starts (the MLP's and the norms' saved tensors) = f_i i + f_h h (measured as BACKWARD)
EAGER_FREED = {"llama": (3, 3), "qwen2": (3, 3), "gemma2": (3, 7), "gemma3_text": (3, 7)}
#: kernel -> bytes per element of a 4D attention mask (rows x positions x positions; None: the model's dtype);
#: flash_attention_2 builds none (transformers 5 ``masking_utils``)
MASKS = {"eager": None, "sdpa": 1, "flash_attention_2": 0}
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
    bwd_token: float = 0.0  #: per token, what a layer's backward adds at its peak (:func:`backward_elements`)
    bwd_attn: float = 0.0   #: eager: more per token per position at its attention's backward (heads x 3)
    bwd_freed: float = 0.0  #: eager: per token, freed by then (:func:`freed_elements`)
    fwd_attn: float = 0.0   #: eager: s x s elements per token per position of a forward without gradients
    mask_bytes: float = 0.0  #: bytes of the 4D attention masks per token per position of its row

    @property
    def outside_layers(self) -> int:
        """Parameters outside the decoder layers (embeddings, final norm, head: FSDP's root module)."""
        return max(0, self.total - self.layers * self.layer_params)


def kernel(attn_implementation: str) -> str:
    """The kernel family (:data:`KERNELS`) of a resolved attention implementation."""
    return KERNELS[attn_implementation]


def layer_elements(model_type: str, hidden: int, q_dim: int, kv_dim: int, intermediate: int,
                   attention: str = "sdpa") -> float:
    """Activation elements one decoder layer keeps per token with ``attention`` (:data:`ACTIVATIONS`; a model
    type not measured gets Llama's coefficients, which :func:`activation_note` says)."""
    family = kernel(attention)
    a_h, a_q, a_kv, a_i = ACTIVATIONS.get((model_type, family), ACTIVATIONS[("llama", family)])
    return a_h * hidden + a_q * q_dim + a_kv * kv_dim + a_i * intermediate


def backward_elements(model_type: str, hidden: int, intermediate: int) -> float:
    """Elements per token a decoder layer's backward allocates beyond what it saved, at its peak
    (:data:`BACKWARD`), attention's s x s matrices aside."""
    b_h, b_i, c_h = BACKWARD.get(model_type, BACKWARD["llama"])
    return max(b_h * hidden, b_i * intermediate - c_h * hidden)


def freed_elements(model_type: str, hidden: int, intermediate: int) -> float:
    """Elements per token a decoder layer's backward has freed when its (eager) attention's starts."""
    f_i, f_h = EAGER_FREED.get(model_type, EAGER_FREED["llama"])
    return f_i * intermediate + f_h * hidden


def activation_note(model_type: str) -> str | None:
    if (model_type, "sdpa") in ACTIVATIONS:
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


def mask_bytes(attention: str, masks: int, dtype_bytes: float) -> float:
    """Bytes per row per position squared of the ``masks`` 4D attention masks ``attention`` is given
    (:data:`MASKS`)."""
    per = MASKS[attention]
    return masks * (dtype_bytes if per is None else per)


def activation_bytes(m: Model, rows: float, seq_len: int, unit: float, checkpointing: bool,
                     span: int | None = None) -> float:
    """Activations of a training micro-batch: ``rows`` rows of ``seq_len`` tokens, ``unit`` bytes each;
    attention spans ``span`` positions (default ``seq_len``; a packed micro-batch: all its tokens)."""
    span = span or seq_len
    tokens = rows * seq_len
    per_layer = m.act_token + m.act_lora + m.act_attn * span
    kept = m.layers * m.hidden + per_layer if checkpointing else m.layers * per_layer
    return float(tokens * kept * unit + tokens * span * m.mask_bytes)


def temporary_bytes(m: Model, tokens: float, span: int, unit: float) -> float:
    """What one decoder layer's backward adds at its peak over the tensors it saved, for ``tokens`` tokens
    whose attention spans ``span`` positions: the largest of the per-token gradients and eager attention's
    s x s gradients less what the layer has freed before them."""
    return float(tokens * max(m.bwd_token, m.bwd_attn * span - m.bwd_freed) * unit)


def gathered_bytes(m: Model, parallel: str, *, frozen: float, param_bytes: int, compute: int,
                   reduce_fp32: bool, layer_trainable: float) -> float:
    """Bytes a sharding parallelism holds whole on each GPU during the forward and backward (module
    docstring, **gathered**); 0 for the others. ``frozen``: bytes of the frozen parameters as stored;
    ``param_bytes``: of a trainable one as FSDP gathers it (the policy's bf16, else as stored);
    ``reduce_fp32``: gradients reduced in fp32 (FSDP's bf16 policy); ``layer_trainable``: trainable
    parameters of one decoder layer."""
    if parallel == "zero3":
        return 2.0 * m.layer_params * compute
    if parallel not in FSDP:
        return 0.0
    if parallel == "fsdp_shard_grad_op":  # every layer stays gathered from its forward to its backward
        params = frozen + param_bytes * m.trainable
    else:  # the root module and two layers
        params = (m.outside_layers + 2 * m.layer_params) * compute
    # one layer's unsharded gradients (in the gathered dtype), then its reduce-scatter input
    return float(params + layer_trainable * (param_bytes + (4 if reduce_fp32 else param_bytes)))


def train_memory(m: Model, *, dtype: str, quant: str | None, optimizer: str, mixed_precision: str,
                 parallel: str, gpus: int, rows: float, seq_len: int, checkpointing: bool,
                 gpu: bool = True, span: int | None = None) -> dict[str, float]:
    """Bytes per GPU of one training step on micro-batches of ``rows`` x ``seq_len`` tokens whose attention
    spans ``span`` positions (default ``seq_len``; packed: ``rows`` x ``seq_len``), by component
    (:data:`COMPONENTS`) and ``total``."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer {optimizer!r}: the plan knows {', '.join(OPTIMIZERS)}")
    if gpus == 1:  # one process: the runner wraps neither DDP, FSDP nor DeepSpeed
        parallel = "single"
    span = span or seq_len
    db = DTYPE_BYTES[dtype]
    # the autocast of the forward (core/model/precision.py compute_precision): the 16-bit weights' own, else
    # train.mixed_precision
    mixed = {"bfloat16": "bf16", "float16": "fp16"}.get(dtype, mixed_precision)
    compute = 2 if mixed in ("bf16", "fp16") else 4
    lora = m.adapters > 0 or quant is not None
    frozen = m.total - (0 if lora else m.trainable)
    weights = base_weights(dataclasses.replace(m, total=frozen), db, quant, other_bytes=4 if quant else db)
    # the trainable parameters' storage bytes: fp32 (LoRA adapters; master weights, keep_masters) but under
    # adamw_kahan, which keeps 16-bit weights
    stored = 4 if lora or optimizer != "adamw_kahan" else db
    frozen_bytes = weights
    if parallel in ("zero2", "zero3"):
        weights, master, grad = weights + stored * m.trainable, 4 * m.trainable, stored
    elif stored == 4 and compute == 2:
        master, grad = 4 * m.trainable, 4
    else:
        weights, master, grad = weights + stored * m.trainable, 0, stored
    updated = 4 if master else stored
    policy = mixed == "bf16"  # FSDP's MixedPrecisionPolicy: gathers in bf16, reduces in fp32
    out = {
        "weights": float(weights),
        "gradients": float(grad * m.trainable * (2 if parallel == "ddp" else 1)),
        "optimizer": float(OPTIMIZERS[optimizer][0](updated) * m.trainable),
        "master": float(master),
        "gathered": gathered_bytes(m, parallel, frozen=frozen_bytes, param_bytes=2 if policy else stored,
                                   compute=compute, reduce_fp32=policy,
                                   layer_trainable=m.adapters / max(m.layers, 1) if lora else m.layer_params),
        "activations": activation_bytes(m, rows, seq_len, compute, checkpointing, span),
        "temporary": temporary_bytes(m, rows * seq_len, span, compute),
        "overhead": GPU_OVERHEAD_GIB * GIB if gpu else 0.0,
    }
    for k in SHARDED[parallel]:
        out[k] /= gpus
    out["total"] = sum(out[k] for k in COMPONENTS)
    return out


def attention_bytes(m: Model, tokens: float, span: int, unit: float, training: bool = True) -> float:
    """Of the activations and temporaries, eager attention's s x s matrices (0 for the other kernels): what a
    plan that does not fit can save with flash attention."""
    if training:
        return float(tokens * span * (m.act_attn * unit + m.mask_bytes)
                     + temporary_bytes(m, tokens, span, unit)
                     - temporary_bytes(dataclasses.replace(m, bwd_attn=0.0), tokens, span, unit))
    return float(tokens * span * (m.fwd_attn * unit + m.mask_bytes))


def inference_memory(m: Model, *, dtype: str, quant: str | None, tokens: int, seq_len: int,
                     gpu: bool = True, merged: bool = False) -> dict[str, float]:
    """Bytes per GPU of inference on a batch of ``tokens`` tokens in rows of up to ``seq_len``: the
    whole model (adapters in fp32 beside it, or ``merged`` into its weights before they are quantized:
    ``predict.merge_lora``, GPTQ) and one layer's activations (eager attention: at the peak of its
    softmax). No key/value cache: a classifier reads each row in one forward, which the runner calls with
    ``use_cache=False``."""
    db = DTYPE_BYTES[dtype]
    out = {
        "weights": base_weights(m, db, quant) + (0.0 if merged else 4.0 * m.adapters),
        "gradients": 0.0, "optimizer": 0.0, "master": 0.0, "gathered": 0.0,
        "activations": float(tokens * (m.act_token + m.fwd_attn * seq_len) * db
                             + tokens * seq_len * m.mask_bytes),
        "temporary": 0.0,
        "overhead": GPU_OVERHEAD_GIB * GIB if gpu else 0.0,
    }
    out["total"] = sum(out[k] for k in COMPONENTS)
    return out
