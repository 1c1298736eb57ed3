"""Tiny random models built from a config, for tests and quick checks (``model.base: tiny:<arch>``).

The tokenizer is a word-level tokenizer built in memory from a fixed vocabulary (plus every
printable ASCII character as a fallback piece), so nothing is downloaded. Models are cached per
process under the cache folder; building one takes milliseconds.
"""

from __future__ import annotations

import string
from pathlib import Path

from replicator.core.lib.model_names import TINY_ARCHS, TINY_PREFIX
from replicator.core.util.atomic import atomic_folder
from replicator.core.util.layout import cache_root

PREFIX, ARCHS = TINY_PREFIX, TINY_ARCHS
_WORDS = (
    "the a an is are was be to of and or in on for with that this it you i we they what how why "
    "which who when where can could would should will not no yes please write explain code python "
    "function answer response question better worse user assistant model round prompt tie both "
    "good bad sorry cannot help here is list one two three first second example thank hello"
).split()


def is_tiny(base: str) -> bool:
    return base.startswith(PREFIX)


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<bos>", "<eos>", "<unk>"]
    vocab = {t: i for i, t in enumerate(specials)}
    for w in _WORDS + list(string.printable.strip()):
        vocab.setdefault(w, len(vocab))
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                       pre_tokenizers.Punctuation()])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", bos_token="<bos>",
                                   eos_token="<eos>", unk_token="<unk>", padding_side="right")


def _config(arch: str, vocab_size: int):
    common = dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                  pad_token_id=0, bos_token_id=1, eos_token_id=2, num_labels=3)
    if arch == "llama":
        from transformers import LlamaConfig

        return LlamaConfig(**common)
    if arch == "llama128":
        from transformers import LlamaConfig

        return LlamaConfig(**{**common, "hidden_size": 128, "intermediate_size": 256})
    if arch == "qwen2":
        from transformers import Qwen2Config

        return Qwen2Config(**common)
    if arch == "gemma2":
        from transformers import Gemma2Config

        return Gemma2Config(**common, head_dim=8, sliding_window=16)
    if arch == "gemma3":
        from transformers import Gemma3TextConfig

        return Gemma3TextConfig(**common, head_dim=8, sliding_window=16)
    raise ValueError(f"unknown tiny architecture {arch!r}; known: {', '.join(ARCHS)}")


def resolve_tiny(base: str) -> Path:
    """Build (once) and return a folder with a tiny random model + tokenizer for ``tiny:<arch>``."""
    import torch
    from transformers import AutoModelForCausalLM

    arch = base[len(PREFIX):]
    folder = cache_root() / "tiny" / arch
    if (folder / "config.json").exists():
        return folder
    tokenizer = _tokenizer()
    config = _config(arch, len(tokenizer))
    state = torch.random.get_rng_state()
    torch.manual_seed(1234)  # the same tiny weights everywhere, without touching the caller's RNG
    model = AutoModelForCausalLM.from_config(config)
    torch.random.set_rng_state(state)

    def build(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    atomic_folder(folder, build, keep_existing=True)  # another process may have won the race
    return folder
