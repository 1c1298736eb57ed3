"""The canonical form of a resolved recipe: every section and plugin block as built, defaults written out.

:func:`complete_config` is what ``resolved.yaml`` holds and what the run id hashes
(:mod:`replicator.core.run.fingerprint`); :func:`plain` and :func:`hash_of` are the value
conversion and the hash the step keys and token caches use too.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from replicator.core.config.catalogue import catalogue
from replicator.core.params import build

if TYPE_CHECKING:
    from replicator.core.config.recipe import Resolved, StageConfig


def plain(value: Any) -> Any:
    """Dataclasses as dicts of their public fields (names not starting with ``_``), tuples as lists,
    paths as strings: what ``yaml.safe_dump`` and ``json.dumps`` write."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)
                if f.init and not f.name.startswith("_")}
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def plugin_blocks(blocks: dict, file: str, key: str = "plugins", cat: dict | None = None) -> dict:
    """``{alias: {use: name, **every field of the built plugin}}`` in recipe order."""
    plugin_catalogue = catalogue() if cat is None else cat
    out = {}
    for alias, block in (blocks or {}).items():
        plugin = build(plugin_catalogue[block["use"]], block, file, f"{key}.{alias}", ignore=("use",))
        out[alias] = {"use": block["use"], **plain(plugin)}
    return out


def stage_block(stage: StageConfig, file: str, key: str = "", cat: dict | None = None) -> dict:
    """A stage's core sections and plugin blocks, every field written out."""
    prefix = f"{key}." if key else ""
    return {"model": plain(stage.model), "train": plain(stage.train), "predict": plain(stage.predict),
            "plugins": plugin_blocks(stage.plugins, file, f"{prefix}plugins", cat)}


def complete_config(resolved: Resolved) -> dict:
    """The resolved recipe as built, every default written out: what ``resolved.yaml`` holds and
    what the run id hashes. It resolves again to the same stages (``predict`` relies on it)."""
    plugin_catalogue = catalogue()
    out: dict[str, Any] = {"name": resolved.name, "seed": resolved.seed}
    for key in ("description", "substitutions"):  # free text: not hashed (Resolved.config_hash)
        if resolved.config.get(key):
            out[key] = resolved.config[key]
    if "stages" not in resolved.config and len(resolved.stages) == 1:
        out.update(stage_block(resolved.stages[0], resolved.file, "", plugin_catalogue))
        return out
    out["stages"] = {
        s.name: {**stage_block(s, resolved.file, f"stages.{s.name}", plugin_catalogue), "from": s.from_stage,
                 "reinit_head": s.reinit_head, "outputs": list(s.outputs)}
        for s in resolved.stages}
    return out


def hash_of(obj: Any) -> str:
    """sha256 of ``obj`` as canonical JSON (keys sorted, ASCII)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=True).encode()).hexdigest()


def run_key(fingerprint_info: dict) -> dict:
    """The parts of a fingerprint that the run id hashes (everything that can change a number)."""
    info, env = fingerprint_info, fingerprint_info["environment"]
    return {"config_hash": info["config_hash"], "seed": info["seed"], "data_hash": info["data_hash"],
            "version": info["code"]["version"], "code_hash": info["code"]["hash"],
            "plugin_distributions": info["plugin_distributions"], "n_processes": info["n_processes"],
            "sharding": info.get("sharding", {}), "device": env["device"],
            "auto_dtype": env.get("auto_dtype"), "torch": env["torch"],
            "transformers": env["transformers"], "peft": env["peft"]}
