"""The parts of a built sequence classifier that the other model modules name: its classification head
and its trainable tensors. Imports no other model module (loading, sharding and meta build on it)."""

from __future__ import annotations

from replicator.core.errors import ReplicatorError

#: outputs of the classification head (the three preference classes)
NUM_LABELS = 3
#: attribute names of the classification head in transformers' sequence classifiers
HEAD_NAMES = ("score", "classifier")


def head_module(model):
    """(attribute name, module) of ``model``'s classification head."""
    for name in HEAD_NAMES:
        if hasattr(model, name):
            return name, getattr(model, name)
    raise ReplicatorError(f"{type(model).__name__} has no classification head named "
                          f"{' or '.join(HEAD_NAMES)}")


def trainable_state(model) -> dict:
    """The trainable tensors (LoRA + head, or everything for full fine-tuning), on CPU."""
    return {k: v.detach().to("cpu").clone() for k, v in model.named_parameters() if v.requires_grad}
