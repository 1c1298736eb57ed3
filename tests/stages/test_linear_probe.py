"""The linear-probe head init (core/stages/linear_probe.py, ``default_head`` or ``response_pool``
``init: lp``): the model with the probed head predicts what the fitted regression predicts (a pair head's
with the offset added); the L2 strength is chosen by grouped CV on the training rows; a pair probe learns
the residual over its offset; a head without a bias is refused."""

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
    PAIR_C_GRID,
    fit_pair_probe,
    fit_probe,
    memoised_features,
    pair_probs,
    pooled_features,
    set_head,
    set_pair_head,
    wants_probe,
)
from replicator.core.tokens.batches import collate, forward_logits
from replicator.plugins.plain_turns import PlainTurns
from replicator.plugins.response_pool_head import ResponsePoolHead

from ..plugins.test_response_pool_head import _pooled_model, _row


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


def test_memoised_features_compute_each_sequence_once_and_equal_the_direct_ones(monkeypatch):
    """A cross-fitted stage probes every fold from the same weights: a sequence probed in one fold is not
    computed again in the next, and its features are the ones a direct computation gives."""
    import replicator.core.stages.linear_probe as lp

    model, tok, _ = _model("lp")
    seqs, _, _ = _data(20)
    direct = pooled_features(model, tok, seqs, batch_tokens=64, progress=False)
    computed = []
    real = lp.pooled_features

    def counting(model, tokenizer, batch, *a):
        computed.extend(batch)
        return real(model, tokenizer, batch, *a)

    monkeypatch.setattr(lp, "pooled_features", counting)
    memo: dict = {}
    first = memoised_features(model, tok, seqs[:12], 64, False, memo)  # fold 1's rows
    second = memoised_features(model, tok, seqs[6:], 64, False, memo)  # fold 2's: six of them seen
    assert len(computed) == 20 and len(memo) == len({tuple(s) for s in seqs})
    assert np.allclose(first, direct[:12], atol=1e-5) and np.allclose(second, direct[6:], atol=1e-5)
    assert np.array_equal(second[:6], first[6:])  # the memo's own values, not recomputed


@pytest.mark.parametrize("init", ["zeros", "model"])
def test_a_head_without_a_probe_init_is_not_probed_and_cannot_take_one(init):
    model, tok, _ = _model(init)
    assert not wants_probe(model)
    seqs, y, groups = _data(20)
    params, _ = fit_probe(pooled_features(model, tok, seqs, 64, progress=False), y, groups, seed=0)
    with pytest.raises(ReplicatorError, match="needs a weight and a bias"):
        set_head(model, params)


def _ll(p, y):
    return float(-np.mean(np.sum(y * np.log(np.clip(p, 1e-15, 1)), axis=1)))


def test_a_pair_head_probed_with_an_offset_predicts_what_its_regression_predicts(tok):
    rng = np.random.default_rng(0)
    words = np.array(["yes", "no", "maybe so", "a longer answer here", "ok", "sure thing, friend"])
    rows = [_row(" ".join(rng.choice(words, 2)), " ".join(rng.choice(words, 3))) for _ in range(40)]
    fmt = PlainTurns(show_lengths=True)
    seqs = [list(fmt.prompt_format(row=r, tokenizer=tok, max_length=200).input_ids) for r in rows]
    model = _pooled_model(tok, ResponsePoolHead(init="lp"))
    assert wants_probe(model) and not model.score.diff.weight.any()  # zero until probed
    x = pooled_features(model, tok, seqs, batch_tokens=400, progress=False)
    assert x.shape == (40, 3 * 16)  # d, |d|, (a + b) / 2
    assert np.allclose(x[:, 16:32], np.abs(x[:, :16]))
    y = np.eye(3)[rng.integers(0, 3, 40)]
    off = np.log(rng.dirichlet(np.ones(3), 40))
    params, cv = fit_pair_probe(x, y, off, np.array([f"g{i // 2}" for i in range(40)]), seed=0)
    assert set(cv) == {str(c) for c in PAIR_C_GRID}
    assert params["C"] == min(PAIR_C_GRID, key=lambda c: cv[str(c)])
    set_pair_head(model, params)
    assert model.score.diff.weight.any() and not model.score.emit_features
    ids, mask = collate(seqs, tok.pad_token_id, "cpu")
    with torch.no_grad():
        p = torch.softmax(forward_logits(model, ids, mask).double() + torch.as_tensor(off), -1).numpy()
    assert np.allclose(p, pair_probs(params, x, off), atol=1e-5)


def test_a_pair_probe_learns_the_residual_over_its_offset():
    """Labels drawn from offset + a pair model: the probe fitted with the offset beats the offset alone on
    new rows and recovers the residual's direction; fitted without the offset and then used with it (what
    training would do), it is worse."""
    rng = np.random.default_rng(1)
    h, true = 6, {"w": [1.2, -0.8, 0.0, 0.0, 0.4, 0.0], "v": [0.6] + [0.0] * 11, "c": -0.5}

    def draw(n):
        xd = rng.normal(size=(n, h))
        x = np.hstack([xd, np.abs(xd), rng.normal(size=(n, h))])
        off = np.log(rng.dirichlet(np.full(3, 2.0), n))
        p = pair_probs(true, x, off)
        y = np.eye(3)[[rng.choice(3, p=q) for q in p]]
        return x, y, off

    x, y, off = draw(1500)
    groups = np.array([str(i) for i in range(len(x))])
    params, _ = fit_pair_probe(x, y, off, groups, seed=0)
    blind, _ = fit_pair_probe(x, y, None, groups, seed=0)
    xn, yn, offn = draw(3000)
    with_offset = _ll(pair_probs(params, xn, offn), yn)
    assert with_offset < _ll(np.exp(offn), yn) - 0.05  # the offset alone
    assert with_offset < _ll(pair_probs(blind, xn, offn), yn)
    assert np.corrcoef(params["w"], true["w"])[0, 1] > 0.9
