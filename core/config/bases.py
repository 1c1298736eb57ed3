"""What ``model.base`` may name, checked when the recipe is resolved (no torch, no network, nothing
written): so that a misspelt base fails as ``error: FILE: model.base: ...`` (exit 2) before a run writes its
folders, not after ``failed.json`` when the model loads.

* ``embedded:<name>``: a name :mod:`replicator.core.lib.model_names` lists;
* ``tiny:<arch>``: an architecture :mod:`replicator.core.lib.model_names` lists;
* ``baseline:<kind>``: checked by the run's preflight (:mod:`replicator.core.stages.baseline`);
* an existing local folder (a file is refused: a model is a folder with ``config.json``);
* a path that does not exist: refused when it is written as one (starts with ``/``, ``.`` or ``~``);
* otherwise a Hugging Face hub id, ``name`` or ``owner/name`` with the hub's characters (letters, digits,
  ``-``, ``_``, ``.``; at most 96 each, no ``--`` or ``..``). Whether the hub has it is not asked here
  (``plan`` and ``show`` read no weights and go offline); the model load says so.
"""

from __future__ import annotations

import re
from pathlib import Path

from replicator.core.errors import RecipeError
from replicator.core.lib.model_names import EMBEDDED, EMBEDDED_PREFIX, TINY_ARCHS, TINY_PREFIX

#: a hub id as huggingface_hub's ``validate_repo_id`` accepts it
HUB_ID = re.compile(r"^(\b[\w\-.]{1,96}\b/)?\b[\w\-.]{1,96}\b$")


def base_problem(base: object) -> str | None:
    """Why ``base`` cannot be a ``model.base`` (module docstring), None when it can."""
    if not isinstance(base, str) or not base.strip():
        return f"expected a hub id, a local folder, embedded:<name> or tiny:<arch>, got {base!r}"
    if base.startswith("baseline:"):
        return None
    if base.startswith(EMBEDDED_PREFIX):
        name = base.removeprefix(EMBEDDED_PREFIX)
        return None if name in EMBEDDED else (
            f"unknown embedded model {name!r}; known: {', '.join(f'embedded:{k}' for k in EMBEDDED)}")
    if base.startswith(TINY_PREFIX):
        arch = base.removeprefix(TINY_PREFIX)
        return None if arch in TINY_ARCHS else (
            f"unknown tiny architecture {arch!r}; known: {', '.join(f'tiny:{a}' for a in TINY_ARCHS)}")
    path = Path(base).expanduser()
    if path.exists():
        return None if path.is_dir() else f"{base!r} is a file; a local model is a folder (with config.json)"
    if base.startswith(("/", ".", "~")):
        return f"local folder {base!r} does not exist"
    if HUB_ID.match(base) and "--" not in base and ".." not in base:
        return None
    return (f"{base!r} is neither an existing local folder nor a hub id (owner/name: letters, digits, '-', "
            "'_', '.'), nor embedded:<name>, tiny:<arch> or baseline:<kind>")


def check_base(base: object, file: str, key: str) -> None:
    """A RecipeError naming ``file`` and ``key`` when ``base`` cannot be a ``model.base``."""
    problem = base_problem(base)
    if problem:
        raise RecipeError(file, key, problem)
