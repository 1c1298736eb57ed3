"""Tiny random models (core/model/tiny.py): each architecture's folder, built once under the cache with a
word-level tokenizer, the same weights everywhere, nothing downloaded."""

from __future__ import annotations

import pytest
import torch

from replicator.core.model import tiny


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REPLICATOR_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "cache"


MODEL_TYPES = {"llama": "llama", "llama128": "llama", "qwen2": "qwen2", "gemma2": "gemma2",
               "gemma3": "gemma3_text"}


def test_is_tiny():
    assert tiny.is_tiny("tiny:llama") and tiny.is_tiny("tiny:whatever")
    assert not tiny.is_tiny("embedded:gemma-3-270m") and not tiny.is_tiny("llama")


WORDS = "which answer is better ?"


@pytest.mark.parametrize("arch", tiny.ARCHS)
def test_resolve_tiny_builds_each_arch_with_a_tokenizer(cache, arch):
    from transformers import AutoConfig, PreTrainedTokenizerFast

    folder = tiny.resolve_tiny(f"tiny:{arch}")
    assert folder == cache / "tiny" / arch
    assert (folder / "config.json").exists() and list(folder.glob("*.safetensors"))
    assert (folder / "tokenizer.json").exists()
    config = AutoConfig.from_pretrained(folder)
    assert config.model_type == MODEL_TYPES[arch]
    assert config.num_labels == 3 and config.num_hidden_layers == 2
    assert config.hidden_size == (128 if arch == "llama128" else 32)
    tok = PreTrainedTokenizerFast.from_pretrained(folder)  # the tokenizer as tiny saved it
    assert len(tok) == config.vocab_size
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    assert (config.pad_token_id, config.bos_token_id, config.eos_token_id) == (0, 1, 2)
    assert tok.padding_side == "right"
    ids = tok(WORDS, add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == WORDS.split() and tok.unk_token_id not in ids
    # an unknown word is <unk>; punctuation is split off; single characters are a fallback
    assert tok.tokenize("zebra, hello") == ["<unk>", ",", "hello"]
    assert tok.tokenize("x") == ["x"]


@pytest.mark.parametrize("arch", [pytest.param(a, marks=pytest.mark.xfail(
    strict=True, reason="transformers 5 AutoTokenizer rebuilds a Qwen2Tokenizer for model_type qwen2: "
                        "the saved word-level tokenizer becomes character-level (spaces dropped)"))
    if a == "qwen2" else a for a in tiny.ARCHS])
def test_the_runner_loads_the_word_level_tokenizer(cache, arch):
    from replicator.core.model.loading import load_tokenizer

    tok = load_tokenizer(str(tiny.resolve_tiny(f"tiny:{arch}")))
    assert tok.tokenize(WORDS) == WORDS.split()
    assert tok.pad_token_id == 0 and tok.padding_side == "right"


def test_resolve_tiny_is_built_once_and_reused(cache, monkeypatch):
    folder = tiny.resolve_tiny("tiny:llama")
    stamp = (folder / "config.json").stat().st_mtime_ns

    def refuse():
        raise AssertionError("rebuilt a cached tiny model")

    monkeypatch.setattr(tiny, "_tokenizer", refuse)
    assert tiny.resolve_tiny("tiny:llama") == folder
    assert (folder / "config.json").stat().st_mtime_ns == stamp


def test_resolve_tiny_weights_are_the_same_everywhere_and_leave_the_rng_alone(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    states = []
    for where in ("one", "two"):
        monkeypatch.setenv("REPLICATOR_CACHE", str(tmp_path / where))
        torch.manual_seed(99 if where == "one" else 5)
        before = torch.random.get_rng_state()
        folder = tiny.resolve_tiny("tiny:qwen2")
        assert torch.equal(torch.random.get_rng_state(), before), "the caller's RNG is untouched"
        states.append(load_file(next(folder.glob("*.safetensors"))))
    assert states[0].keys() == states[1].keys() and states[0]
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_unknown_arch_is_an_error_listing_the_known_ones(cache):
    with pytest.raises(ValueError, match=r"unknown tiny architecture 'mistral'; known: llama, gemma2, "
                                         r"gemma3, qwen2, llama128"):
        tiny.resolve_tiny("tiny:mistral")
    assert not (cache / "tiny" / "mistral").exists()


def test_tiny_model_loads_as_a_three_class_classifier(cache):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from replicator.core.model.tensors import head_module

    folder = tiny.resolve_tiny("tiny:llama")
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    batch = tok(["the answer is good", "sorry i cannot help"], return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()
    assert head_module(model)[0] == "score"
