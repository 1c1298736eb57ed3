"""The precision rules of a run, in one place: which dtype the weights load in, which dtype the trainable
weights are kept in, and which dtype the forward computes in.

* ``model.dtype: auto`` loads 16-bit weights where the device computes them natively: bf16 on a CUDA GPU
  with bf16 arithmetic (Ampere and later), fp16 on an older CUDA GPU (V100, T4: 16th [P16] trained on
  V100s), bf16 on a CPU with bf16 matrix instructions (AMX or AVX512-BF16: on such a Xeon frozen
  encoding ran 3.2x and LoRA training 1.6-1.9x faster than fp32), fp32 on any other CPU (bf16 would be
  emulated there, far slower). The choice is in the run id (``fingerprint.json``
  ``environment.auto_dtype``) and in the log.
* **Master weights.** The weights an optimizer steps are fp32 unless the optimizer is ``adamw_kahan``:
  a plain AdamW update below half a bf16 weight's spacing (2^-8 relative) is rounded away. peft keeps
  LoRA adapters in fp32 already; the rule adds the classification head (peft's trainable copy) and any
  auxiliary head, and every weight of a full fine-tune, the way peft's k-bit preparation does for 4-bit
  models. ``adamw_kahan`` (2nd [R2]) keeps 16-bit weights and Kahan-sums their updates.
* **Compute.** A model whose frozen weights are 16-bit computes its forward in that dtype under autocast
  (the fp32 adapters and heads too); ``train.mixed_precision`` asks for the same with fp32 weights.
  Logits go to the loss in fp32.
* **After training** the fp32 master copies go back to the weights' dtype, so that prediction right after
  training computes as prediction from the saved weights does (which loads them into a model of that
  dtype).
"""

from __future__ import annotations

import logging

from replicator.core.config.recipe import NO_BF16

log = logging.getLogger(__name__)

#: what :func:`load_dtype` said of ``auto`` (it says it once)
_SAID: list[str] = []
#: the autocast name of each 16-bit dtype (accelerate's ``mixed_precision``)
_MIXED = {"bfloat16": "bf16", "float16": "fp16"}


#: the CPU flags (Linux ``/proc/cpuinfo``) of native bf16 matrix arithmetic
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> set[str]:
    """The flags of the first CPU in ``cpuinfo`` (empty where there is no such file: not Linux)."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_bf16(flags: set[str] | None = None) -> list[str]:
    """This CPU's native bf16 flags (none: bf16 would be emulated)."""
    flags = cpu_flags() if flags is None else flags
    return [f for f in CPU_BF16_FLAGS if f in flags]


def auto_dtype(device: str | None = None) -> str:
    """What ``model.dtype: auto`` loads on ``device`` (``cuda`` or ``cpu``; None = CUDA when there is one)."""
    import torch

    cuda = torch.cuda.is_available() if device is None else device == "cuda"
    if not cuda:
        return "bfloat16" if cpu_bf16() else "float32"
    return "bfloat16" if torch.cuda.is_bf16_supported(including_emulation=False) else "float16"


def planned_auto_dtype(gpu: str) -> str:
    """What ``auto`` will load on the hardware a recipe's ``launch.gpu`` names (``replicate plan``): on a
    ``cpu`` launch what this CPU gets, fp16 on a GPU without bf16 arithmetic, else bf16 (the rule of
    :func:`auto_dtype`, for a device that is not this one)."""
    return auto_dtype("cpu") if gpu == "cpu" else "float16" if gpu in NO_BF16 else "bfloat16"


def why_auto() -> str:
    """Why ``auto`` loads what it loads here, for the log."""
    import torch

    dtype = auto_dtype()
    if torch.cuda.is_available():
        return f"model.dtype auto: {dtype} on {torch.cuda.get_device_name(0)}"
    flags = cpu_bf16()
    return f"model.dtype auto: {dtype} on this CPU (" + (
        f"{', '.join(flags)}: bf16 computes natively here" if flags else
        "no AMX or AVX512-BF16: bf16 would be emulated, slowly") + ")"


def load_dtype(name: str):
    """The torch dtype the weights load in for ``model.dtype`` ``name``."""
    import torch

    if name == "auto" and not _SAID:  # once per process
        _SAID.append(why_auto())
        log.info("%s", _SAID[0])
    return getattr(torch, auto_dtype() if name == "auto" else name)


def keep_masters(model, optimizer: str) -> list[str]:
    """The trainable 16-bit weights of ``model`` cast to fp32 in place (master weights), unless
    ``optimizer`` is ``adamw_kahan``; the names cast."""
    import torch

    if optimizer == "adamw_kahan":
        return []
    cast = []
    for n, p in model.named_parameters():
        if p.requires_grad and p.dtype in (torch.bfloat16, torch.float16):
            p.data = p.data.float()
            cast.append(n)
    if cast:
        log.info("%d trainable 16-bit tensors kept in fp32 (master weights): %s", len(cast),
                 ", ".join(cast[:3]) + (", ..." if len(cast) > 3 else ""))
    return cast


def compute_precision(weights_dtype: str, mixed_precision: str) -> str:
    """The autocast a training forward runs under (accelerate's ``mixed_precision``): that of the 16-bit
    dtype the model's weights loaded in (``weights_dtype``, e.g. ``bfloat16``), else
    ``train.mixed_precision``."""
    return _MIXED.get(weights_dtype, mixed_precision)


def to_weights_dtype(model, weights_dtype: str) -> int:
    """The fp32 trainable weights of a model loaded in 16-bit ``weights_dtype`` cast back to it (after
    training, before prediction), where the frozen weights around them are in that dtype; how many were
    cast. A k-bit model is left as it is: peft's k-bit preparation made its unquantized weights fp32, and
    its layers hand fp32 on."""
    import torch

    if weights_dtype not in _MIXED:
        return 0
    dtype = getattr(torch, weights_dtype)
    frozen = {p.dtype for p in model.parameters() if not p.requires_grad and p.is_floating_point()}
    if frozen and frozen != {dtype}:  # none frozen: a full fine-tune, loaded in that dtype
        return 0
    n = 0
    for p in model.parameters():
        if p.requires_grad and p.dtype == torch.float32:
            p.data = p.data.to(dtype)
            n += 1
    return n
