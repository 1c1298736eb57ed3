"""Cached frozen layers (core/model/cached_layers.py): the model reading cached states computes what the
whole model computes (logits and LoRA gradients), for every tiny architecture; the cache persists, is
keyed by what the states depend on, and a missing sequence is an error, never a silent recomputation."""

from __future__ import annotations

import pytest
import torch

from replicator.core.config.catalogue import build_plugins
from replicator.core.config.recipe import LoraConfig, ModelConfig
from replicator.core.errors import ReplicatorError
from replicator.core.model.cached_layers import StateCache, bottom_only, cache_key, cached_bottom
from replicator.core.model.loading import load_model
from replicator.core.tokens.batches import collate, forward_logits

PLUGINS = {"data": {"use": "kaggle_csv"}, "head": {"use": "default_head"}, "loss": {"use": "cross_entropy"},
           "prompt": {"use": "plain_turns"}}


def _model(arch: str, freeze: int = 1, dropout: float = 0.0):
    torch.manual_seed(0)
    cfg = ModelConfig(base=f"tiny:{arch}", dtype="float32", freeze_layers=freeze, cache_frozen=True,
                      lora=LoraConfig(r=8, alpha=16, dropout=dropout, targets="all-linear"))
    model, tok, info = load_model(cfg, build_plugins(PLUGINS, "t.yaml"), train=True)
    return model, tok, info


def _seqs(n=(5, 17, 9, 30), seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(4, 60, (k,), generator=g).tolist() for k in n]


@pytest.fixture()
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("REPLICATOR_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.mark.parametrize("arch", ["llama", "gemma2", "gemma3", "qwen2"])
def test_cached_states_give_the_logits_and_gradients_of_the_whole_model(arch, cache_dir):
    model, tok, info = _model(arch)
    seqs = _seqs()
    ids, mask = collate(seqs, tok.pad_token_id, "cpu")
    cache = StateCache.for_model(info["path"], model, 1)
    assert cache.ensure(model, seqs, 64, tok.pad_token_id, progress=False) == len(seqs)
    # give the LoRA B matrices values so that their gradients depend on the layers below
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    grads = {}
    for mode in ("whole", "cached"):
        model.zero_grad()
        with cached_bottom(model, cache) if mode == "cached" else torch.enable_grad():
            logits = forward_logits(model, ids, mask)
        logits.sum().backward()
        grads[mode] = (logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                                         if p.requires_grad and p.grad is not None})
    (whole, gw), (cached, gc) = grads["whole"], grads["cached"]
    # exact by construction up to the summation order of one batch vs another (fp32: 1e-6 relative)
    assert torch.allclose(whole, cached, atol=1e-5, rtol=1e-5)
    assert gw.keys() == gc.keys() and any("lora" in n for n in gw)
    for n in gw:
        assert torch.allclose(gw[n], gc[n], atol=1e-5, rtol=1e-4), n
    # the block restores the model: the whole model again, same logits
    assert torch.allclose(forward_logits(model, ids, mask).detach(), whole, atol=1e-6)


def test_the_cache_persists_and_a_missing_sequence_is_an_error(cache_dir):
    model, tok, info = _model("llama")
    seqs = _seqs()
    cache = StateCache.for_model(info["path"], model, 1)
    cache.ensure(model, seqs[:2], 64, tok.pad_token_id, progress=False)
    again = StateCache.for_model(info["path"], model, 1)  # a new process finds them on disk
    assert seqs[0] in again and seqs[1] in again and seqs[2] not in again
    assert again.ensure(model, seqs[:2], 64, tok.pad_token_id, progress=False) == 0
    ids, mask = collate(seqs, tok.pad_token_id, "cpu")
    with pytest.raises(ReplicatorError, match="not in the state cache"), cached_bottom(model, again):
        forward_logits(model, ids, mask)


def test_bottom_only_computes_the_input_of_layer_n(cache_dir):
    model, tok, _ = _model("llama")
    ids, mask = collate(_seqs((7,)), tok.pad_token_id, "cpu")
    with torch.no_grad():
        whole = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        with bottom_only(model, 1) as inner:
            states = inner(input_ids=ids, attention_mask=mask).last_hidden_state
    assert torch.allclose(states, whole[1], atol=1e-6)  # hidden_states[1]: the output of layer 0


def test_the_cache_key_covers_layers_dtype_and_weights(cache_dir):
    model, _, info = _model("llama")
    k1 = cache_key(info["path"], model, 1)
    assert k1 == cache_key(info["path"], model, 1)
    assert k1 != cache_key(info["path"], model, 2)
    model.to(torch.bfloat16)
    assert k1 != cache_key(info["path"], model, 1)
    other, _, info2 = _model("qwen2")
    assert cache_key(info2["path"], other, 1) != k1
