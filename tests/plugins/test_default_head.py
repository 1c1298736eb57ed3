"""The model's own classification head, optionally zero-initialised (plugins/default_head.py)."""

from __future__ import annotations

import pytest
import torch

from replicator.plugins.default_head import DefaultHead

from ..conftest import tiny_classifier


def test_model_init_keeps_the_models_head():
    assert DefaultHead().head(hidden_size=16, num_labels=3, model=None) is None
    assert DefaultHead(init="model").head(hidden_size=16, num_labels=3, model=object()) is None


def test_zeros_init_is_a_bias_free_zero_linear_predicting_uniform():
    layer = DefaultHead(init="zeros").head(hidden_size=16, num_labels=3, model=None)
    assert isinstance(layer, torch.nn.Linear) and layer.bias is None
    assert tuple(layer.weight.shape) == (3, 16) and not layer.weight.any()
    assert layer.weight.requires_grad
    logits = layer(torch.randn(5, 16))
    assert torch.equal(logits, torch.zeros(5, 3))
    assert torch.allclose(torch.softmax(logits, -1), torch.full((5, 3), 1 / 3))


def test_zeros_head_in_a_tiny_classifier_starts_at_ln3():
    model = tiny_classifier()
    model.score = DefaultHead(init="zeros").head(hidden_size=16, num_labels=3, model=model)
    ids = torch.randint(1, 50, (4, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 0]))
    assert loss.item() == pytest.approx(float(torch.log(torch.tensor(3.0))), abs=1e-6)


def test_lp_init_is_a_zero_linear_with_a_bias_marked_for_the_probe():
    layer = DefaultHead(init="lp").head(hidden_size=8, num_labels=3, model=None)
    assert layer.linear_probe and layer.bias is not None
    assert float(layer.weight.abs().sum()) == 0 and float(layer.bias.abs().sum()) == 0
