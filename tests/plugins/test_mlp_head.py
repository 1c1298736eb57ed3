"""2nd place's MLP head (plugins/mlp_head.py)."""

from __future__ import annotations

import torch

from replicator.plugins.mlp_head import MLPHead


def test_mlp_head_shape():
    head = MLPHead().head(hidden_size=16, num_labels=3, model=None)
    kinds = [type(m).__name__ for m in head]
    assert kinds == ["Dropout", "Linear", "Dropout", "GELU", "Linear"]
    assert head[1].out_features == 8 and head[4].out_features == 3 and head[0].p == 0.1
    assert head(torch.randn(2, 5, 16)).shape == (2, 5, 3)
