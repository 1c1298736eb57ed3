"""Finding a recipe file: a path as given, else a shipped recipe by name (``2nd`` or ``2nd.yaml``).

The shipped recipes are package data (``replicator.recipes``, the project's ``recipes/`` folder), so every
documented command works from any folder: ``replicate run 2nd -t tiny``, ``replicate ablate --toggle swap``.
A path that exists always wins over a shipped name, so a user's own ``recipes/2nd.yaml`` is theirs."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from replicator.core.errors import RecipeError

SUFFIXES = (".yaml", ".yml")


def shipped_folder() -> Path:
    """The folder of the shipped recipes (the checkout's ``recipes/`` in an editable install)."""
    return Path(str(files("replicator.recipes")))


def shipped_names() -> list[str]:
    return sorted(p.stem for p in shipped_folder().glob("*.yaml"))


def find_recipe(recipe: str | Path) -> Path:
    """``recipe`` if it is a file; else the shipped recipe of that name; else a RecipeError naming what was
    tried and the shipped names."""
    path = Path(recipe)
    if path.is_file():
        return path
    if path.is_dir():
        raise RecipeError(str(path), "(file)", "a folder, not a recipe file")
    tried = [path]
    if len(path.parts) == 1 or (len(path.parts) == 2 and path.parts[0] == "recipes"):
        name = path.name if path.suffix in SUFFIXES else f"{path.name}.yaml"
        shipped = shipped_folder() / name
        if shipped.is_file():
            return shipped
        tried.append(shipped)
    raise RecipeError(str(path), "(file)", f"recipe file not found (tried {', '.join(map(str, tried))}; "
                      f"shipped recipes: {', '.join(shipped_names())})")
