"""The classification head and the trainable tensors of a sequence classifier (core/model/tensors.py)."""

from __future__ import annotations

import pytest
import torch

from replicator.core.errors import ReplicatorError
from replicator.core.model.tensors import HEAD_NAMES, NUM_LABELS, head_module, trainable_state

from ..conftest import tiny_classifier


class _WithClassifier(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Linear(4, 8)
        self.classifier = torch.nn.Linear(8, NUM_LABELS)


class _WithBoth(_WithClassifier):
    def __init__(self):
        super().__init__()
        self.score = torch.nn.Linear(8, NUM_LABELS, bias=False)


def test_head_module_finds_the_score_head_of_a_tiny_classifier():
    model = tiny_classifier()
    name, head = head_module(model)
    assert name == "score" and head is model.score
    assert isinstance(head, torch.nn.Linear) and head.out_features == NUM_LABELS


def test_head_module_finds_a_classifier_head_and_prefers_score():
    m = _WithClassifier()
    assert head_module(m) == ("classifier", m.classifier)
    both = _WithBoth()
    assert HEAD_NAMES[0] == "score"
    assert head_module(both) == ("score", both.score)


def test_head_module_without_a_head_names_the_model_and_the_names_looked_for():
    with pytest.raises(ReplicatorError, match=r"^Sequential has no classification head named score or "
                                              r"classifier$"):
        head_module(torch.nn.Sequential(torch.nn.Linear(2, 2)))


def test_trainable_state_lists_only_tensors_that_require_grad():
    model = tiny_classifier()
    for p in model.parameters():
        p.requires_grad_(False)
    model.score.weight.requires_grad_(True)
    layer = model.model.layers[1].self_attn.q_proj.weight
    layer.requires_grad_(True)
    state = trainable_state(model)
    assert set(state) == {"score.weight", "model.layers.1.self_attn.q_proj.weight"}
    assert torch.equal(state["score.weight"], model.score.weight)
    assert state["score.weight"].device.type == "cpu"
    assert not state["score.weight"].requires_grad, "detached"
    state["score.weight"].zero_()
    assert model.score.weight.abs().sum() > 0, "a copy: changing it leaves the model alone"


def test_trainable_state_of_a_full_fine_tune_is_every_parameter():
    model = tiny_classifier()
    state = trainable_state(model)
    assert list(state) == [k for k, _ in model.named_parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    assert trainable_state(model) == {}
