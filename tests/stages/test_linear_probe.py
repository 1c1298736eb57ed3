"""The linear-probe head init (core/stages/linear_probe.py, ``default_head`` ``init: lp``): the model with
the probed head predicts what the fitted regression predicts; the L2 strength is chosen by grouped CV on
the training rows; a head without a bias is refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from replicator.core.config.catalogue import build_plugins
from replicator.core.config.recipe import LoraConfig, ModelConfig
from replicator.core.errors import ReplicatorError
from replicator.core.model.loading import load_model
from replicator.core.stages.baseline import linear_probs
from replicator.core.stages.linear_probe import (
    C_GRID,
    fit_probe,
    pooled_features,
    set_head,
    wants_probe,
)
from replicator.core.tokens.batches import collate, forward_logits


def _model(init: str):
    torch.manual_seed(0)
    plugins = build_plugins({"data": {"use": "kaggle_csv"}, "head": {"use": "default_head", "init": init},
                             "loss": {"use": "cross_entropy"}, "prompt": {"use": "plain_turns"}}, "t.yaml")
    cfg = ModelConfig(base="tiny:llama", dtype="float32", lora=LoraConfig(r=4, alpha=8, dropout=0.0))
    return load_model(cfg, plugins, train=True)


def _data(n=60, seed=0):
    rng = np.random.default_rng(seed)
    seqs = [rng.integers(4, 60, rng.integers(3, 20)).tolist() for _ in range(n)]
    y = np.eye(3)[rng.integers(0, 3, n)]
    return seqs, y, np.array([f"g{i // 2}" for i in range(n)])


def test_the_probed_head_predicts_what_the_regression_predicts():
    model, tok, _ = _model("lp")
    assert wants_probe(model)
    seqs, y, groups = _data()
    x = pooled_features(model, tok, seqs, batch_tokens=64, progress=False)
    params, cv = fit_probe(x, y, groups, seed=0)
    assert set(cv) == {str(c) for c in C_GRID} and params["C"] in C_GRID
    assert params["C"] == min(C_GRID, key=lambda c: cv[str(c)])
    set_head(model, params)
    model.eval()
    ids, mask = collate(seqs, tok.pad_token_id, "cpu")
    with torch.no_grad():
        p = torch.softmax(forward_logits(model, ids, mask)[:, :3].float(), -1).numpy()
    assert np.allclose(p, linear_probs(params, x), atol=1e-5)


def test_pooled_features_do_not_depend_on_the_batch():
    model, tok, _ = _model("lp")
    seqs, _, _ = _data(12)
    small = pooled_features(model, tok, seqs, batch_tokens=1, progress=False)  # one row per batch
    large = pooled_features(model, tok, seqs, batch_tokens=10_000, progress=False)
    assert np.allclose(small, large, atol=1e-5)


@pytest.mark.parametrize("init", ["zeros", "model"])
def test_a_head_without_a_probe_init_is_not_probed_and_cannot_take_one(init):
    model, tok, _ = _model(init)
    assert not wants_probe(model)
    seqs, y, groups = _data(20)
    params, _ = fit_probe(pooled_features(model, tok, seqs, 64, progress=False), y, groups, seed=0)
    with pytest.raises(ReplicatorError, match="needs a weight and a bias"):
        set_head(model, params)
