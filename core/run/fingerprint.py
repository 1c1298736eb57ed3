"""The fingerprint of a run: everything that can change a number, hashed into the run id.

``run_id = <recipe>-<hash8>-s<seed>``; the hash covers:

* the **complete** resolved config (:func:`replicator.core.config.canonical.complete_config`): every
  field of the model, train and predict sections and of every plugin block, defaults included, as
  built; so changing a default in the code (a plugin parameter, a prompt template given as a
  default) changes the id;
* the seed;
* the package version and a hash of the code that runs (every file of the installed
  ``replicator.core`` and ``replicator.plugins`` packages, read from their folders);
* the third-party plugin distributions (and versions) the recipe uses;
* the data files (``Plugins.data_files``) by content;
* the device (cpu/cuda), the dtype ``model.dtype: auto`` loads on it, and the versions of torch,
  transformers and peft;
* the number of processes (``WORLD_SIZE``, else accelerate's ``PartialState``), and the stages those
  processes train sharded (FSDP, :mod:`replicator.core.model.sharding`; DeepSpeed ZeRO-2,
  :mod:`replicator.core.model.zero`) with the strategy.

``fingerprint.json`` records all of it, plus the git commit and a dirty flag of the checkout the
code came from (for information: the code hash is what counts).

Not hashed: what changes no number, such as the recipe's free text and its live tracker (``tracking:``,
``replicate run --track``; :mod:`replicator.core.util.tracking`), which the complete config leaves out.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import platform
import subprocess
from importlib import metadata
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from replicator.core.config.canonical import hash_of, run_key
from replicator.core.config.catalogue import ENTRY_POINT_GROUP, build_plugins
from replicator.core.config.recipe import Resolved
from replicator.core.model.precision import auto_dtype
from replicator.core.model.sharding import strategy
from replicator.core.util.manifest import sha256_file

DISTRIBUTION = "arena-replicator"
CODE_PACKAGES = ("replicator.core", "replicator.plugins")
LIBRARIES = ("torch", "transformers", "peft", "accelerate", "bitsandbytes", DISTRIBUTION)


# ---------------------------------------------------------------- code, environment, data


def package_version() -> str | None:
    return _version(DISTRIBUTION)


def _version(dist: str) -> str | None:
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def package_folders() -> list[Path]:
    """The folders of the installed ``replicator.core`` and ``replicator.plugins`` packages."""
    return [Path(importlib.import_module(p).__file__).parent for p in CODE_PACKAGES]


def code_hash(folders: list[Path] | None = None) -> str:
    """sha256 over every file (name and content) under ``folders`` (default: the installed
    packages), ``__pycache__`` and compiled files left out."""
    h = hashlib.sha256()
    for folder in folders if folders is not None else package_folders():
        for f in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
            rel = f.relative_to(folder)
            if "__pycache__" in rel.parts or f.suffix in (".pyc", ".pyo"):
                continue
            h.update(f"{folder.name}/{rel.as_posix()}\0".encode())
            h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def git_info(folder: Path | None = None) -> dict:
    """``{"commit": sha or None, "dirty": bool or None}`` of the checkout holding the code (None
    outside a git checkout, e.g. a wheel install); dirty = uncommitted changes under core/ or plugins/."""
    folders = [folder] if folder is not None else package_folders()

    def git(*args) -> str | None:
        try:
            r = subprocess.run(["git", "-C", str(folders[0]), *args], capture_output=True, text=True,
                               timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    status = git("status", "--porcelain", "--", *map(str, folders))
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def plugin_distributions(resolved: Resolved) -> dict:
    """``{plugin name: {"distribution", "version"}}`` of the third-party plugins (entry points of
    ``replicator.plugins``) the recipe uses; built-ins are covered by the code hash."""
    used = {b["use"] for s in resolved.stages for b in (s.plugins or {}).values() if isinstance(b, dict)}
    out = {}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):  # looked up at call time (tests replace it)
        if ep.name in used:
            dist = getattr(ep, "dist", None)
            out[ep.name] = {"distribution": dist.name if dist else None,
                            "version": dist.version if dist else None, "value": ep.value}
    return dict(sorted(out.items()))


def sharding(resolved: Resolved) -> dict[str, str]:
    """``{stage: FSDP strategy or zero2}`` of the stages this launch trains sharded (none in one
    process)."""
    return {s.name: strategy(s.launch.parallel) for s in resolved.stages if strategy(s.launch.parallel)}


def n_processes() -> int:
    """How many processes train together: ``WORLD_SIZE`` (set by ``accelerate launch``/torchrun),
    else accelerate's ``PartialState().num_processes``, else 1."""
    world = os.environ.get("WORLD_SIZE", "").strip()
    if world:
        return int(world)
    try:
        from accelerate import PartialState
    except ImportError:  # pragma: no cover - accelerate is a dependency
        return 1
    return int(PartialState().num_processes)


def environment() -> dict:
    import torch

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": dev,
        "device_name": (torch.cuda.get_device_name(0) if dev == "cuda"
                        else platform.processor() or platform.machine()),
        "torch_threads": torch.get_num_threads(),
        "auto_dtype": auto_dtype(),  # what model.dtype auto loads here (core/model/precision.py)
        **{p: _version(p) for p in LIBRARIES},
    }


def file_sha256(path: Path) -> str:
    """sha256 of a data file, streamed in 1 MiB chunks (:func:`replicator.core.util.manifest.sha256_file`)."""
    return sha256_file(path)


def data_hash(resolved: Resolved, data_dir: Path) -> tuple[str, dict]:
    """(hash of the contents of every data file the stages read, {file name: sha256})."""
    files: dict[str, str] = {}
    for stage in resolved.stages:
        plugins = build_plugins(stage.plugins, resolved.file, unused=stage.unused_hooks)
        for f in map(Path, plugins.data_files(data_dir)):
            if f.exists() and str(f) not in files:
                files[str(f)] = file_sha256(f)
    digest = hashlib.sha256(json.dumps(sorted(files.values())).encode()).hexdigest()
    return digest, {Path(k).name: v for k, v in files.items()}


# ---------------------------------------------------------------- the fingerprint


def fingerprint(resolved: Resolved, data_dir: Path) -> dict:
    """Everything that identifies a run, and its id."""
    digest, files = data_hash(resolved, data_dir)
    fingerprint_info = {
        "recipe": resolved.name, "config_hash": resolved.config_hash, "seed": resolved.seed,
        "data_hash": digest, "data_files": files, "toggles": resolved.toggles,
        "code": {"version": package_version(), "hash": code_hash(), **git_info()},
        "plugin_distributions": plugin_distributions(resolved), "n_processes": n_processes(),
        "sharding": sharding(resolved), "environment": environment()}
    run_id = f"{resolved.name}-{hash_of(run_key(fingerprint_info))[:8]}-s{resolved.seed}"
    return {"run_id": run_id, **fingerprint_info}
