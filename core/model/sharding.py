"""FSDP: the runner shards the model itself, as the recipe's ``launch.parallel`` says.

With ``fsdp_full_shard`` or ``fsdp_shard_grad_op`` and more than one process, every decoder layer
(the model's ``_no_split_modules``) and then the whole model are wrapped by PyTorch's FSDP2
``fully_shard`` over all processes: each process keeps a shard of every weight, gradient and
optimizer state. ``fsdp_full_shard`` frees the gathered weights of a layer after its forward
(ZeRO-3); ``fsdp_shard_grad_op`` keeps them until the backward (ZeRO-2). ``train.mixed_precision:
bf16`` becomes FSDP's own policy (bf16 compute, fp32 gradient reduction, fp32 weights kept).

Why the runner and not accelerate's FSDP plugin: the same code then runs on GPUs and on a CPU (gloo),
where accelerate 1.x turns an FSDP launch into DDP, so it is tested on every CPU; and FSDP1's
full-state-dict gather crashes on gloo (torch 2.13, measured), FSDP2's does not.

What changes for a sharded model (``trainable_to_save``, ``optimizer_state``, ``load_optimizer_state``,
``gradient_sync`` and ``whole`` also take an unsharded one and then do what the runner did before;
``whole`` and ``trainable_to_save`` also a DeepSpeed ZeRO-2 engine, :mod:`replicator.core.model.zero`):

* saving: the trainable tensors and the optimizer state are gathered whole to the main process
  (``torch.distributed.checkpoint.state_dict``, a collective: every process calls it), so weights
  and checkpoints are the files one process would write, and load in any process count;
* loading (a checkpoint resumed, the best evaluated weights): every process reads the whole file and
  keeps its shard;
* gradient accumulation: gradients are reduced on a step's last micro-batch only;
* evaluation during training: the weights are gathered once and kept whole for the pass, so that
  processes with different numbers of batches need not run their forwards in lockstep.

After training the pipeline predicts with an unsharded model loaded from the saved weights.
"""

from __future__ import annotations

import contextlib

from replicator.core.errors import ReplicatorError
from replicator.core.model.tensors import trainable_state
from replicator.core.model.zero import ZERO_STRATEGIES, is_engine
from replicator.core.util.distributed import world_size

FSDP_STRATEGIES = ("fsdp_full_shard", "fsdp_shard_grad_op")


def strategy(parallel: str) -> str | None:
    """The sharding a stage trains with: its ``launch.parallel`` when that is an FSDP one or ZeRO-2
    (:mod:`replicator.core.model.zero`) and more than one process runs, else None (one process, DDP)."""
    if parallel == "zero3" and world_size() > 1:
        raise ReplicatorError("launch.parallel zero3 (DeepSpeed ZeRO-3) is sized by `replicate plan` but not "
                              "run: fsdp_full_shard partitions the same parts (weights, gradients, "
                              "optimizer state)")
    return parallel if parallel in FSDP_STRATEGIES + ZERO_STRATEGIES and world_size() > 1 else None


def is_sharded(model) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def _layer_classes(model) -> set[str]:
    """The class names of the modules to shard one by one: the transformers model's ``_no_split_modules``."""
    names: set[str] = set()
    for m in model.modules():
        names.update(getattr(m, "_no_split_modules", None) or [])
    return names


def shard_model(model, parallel: str, device, mixed_precision: str = "no"):
    """``model`` (on ``device``) sharded over every process with FSDP2, in place; the model."""
    import torch
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    model.to(device)
    mesh = init_device_mesh(device.type, (world_size(),))
    policy = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
              if mixed_precision == "bf16" else MixedPrecisionPolicy())
    kw = {"mesh": mesh, "mp_policy": policy, "reshard_after_forward": parallel == "fsdp_full_shard"}
    classes = _layer_classes(model)
    layers = [m for m in model.modules() if type(m).__name__ in classes]
    if not layers:
        raise ReplicatorError(f"launch.parallel {parallel}: found no decoder layers to shard in "
                              f"{type(model).__name__} (no _no_split_modules)")
    for layer in layers:
        fully_shard(layer, **kw)
    fully_shard(model, **kw)
    model._replicator_reshard = kw["reshard_after_forward"]  # what :func:`whole` restores
    return model


def _options(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kw)


def full_trainable_state(model) -> dict:
    """The trainable tensors of a sharded model, whole, on CPU, in the main process ({} elsewhere).
    Every process must call it."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    trainable = {k for k, p in model.named_parameters() if p.requires_grad}
    full = get_model_state_dict(model, options=_options(cpu_offload=True))
    return {k: v for k, v in full.items() if k in trainable}


def trainable_to_save(model, unwrapped, main: bool) -> dict | None:
    """The trainable tensors a process writes: gathered whole into the main process for a sharded model
    (every process must call this), else the main process's own copy of ``unwrapped``'s (None elsewhere)."""
    if is_sharded(model):
        return full_trainable_state(model)
    return trainable_state(unwrapped) if main else None


def load_full_state(model, state: dict) -> None:
    """Whole tensors (a subset of the model's) into a sharded model: each process keeps its shard."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    set_model_state_dict(model, state, options=_options(strict=False))


def optimizer_state(model, optimizer) -> dict:
    """The optimizer state: whole in the main process for a sharded model (a collective: every process
    calls this), else as it is."""
    if not is_sharded(model):
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=_options(cpu_offload=True))


def load_optimizer_state(model, optimizer, state: dict) -> None:
    if not is_sharded(model):
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state, options=_options())


def _fsdp_modules(model):
    from torch.distributed.fsdp import FSDPModule

    return [m for m in model.modules() if isinstance(m, FSDPModule)]


@contextlib.contextmanager
def gradient_sync(model, sync: bool):
    """Gradients reduced over the processes after this backward only when ``sync`` (a sharded model;
    DDP models use accelerate's ``no_sync``)."""
    if sync or not is_sharded(model):
        yield
        return
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


@contextlib.contextmanager
def whole(model):
    """The weights of a sharded model gathered once and kept whole inside the block: forwards then need
    no collective, so processes may run different numbers of them (evaluation on each one's rows). A
    ZeRO-2 engine's module holds whole weights already (its forwards need no collective either)."""
    if not is_sharded(model):
        yield model.module if is_engine(model) else model
        return
    modules = _fsdp_modules(model)
    model.set_reshard_after_forward(False)
    for m in modules:
        m.unshard()
    try:
        yield model
    finally:
        for m in modules:
            m.reshard()
        model.set_reshard_after_forward(getattr(model, "_replicator_reshard", True))
