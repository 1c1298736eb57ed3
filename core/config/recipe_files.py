"""Finding a recipe file: a path as given, else a shipped recipe by name (``2nd`` or ``2nd.yaml``).

The shipped recipes are package data (``replicator.recipes``, the project's ``recipes/`` folder), so every
documented command works from any folder: ``replicate run 2nd -t tiny``, ``replicate ablate --toggle swap``.
A path that exists always wins over a shipped name, so a user's own ``recipes/2nd.yaml`` is theirs.

A recipe file is read strictly (:func:`read_recipe`): UTF-8 text, and a mapping that gives a key twice, at
any level, is an error naming both lines (PyYAML would keep the last one silently)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import yaml

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


class DuplicateKey(yaml.YAMLError):
    """A mapping gives ``key`` (its dotted path) twice, on lines ``first`` and ``second``."""

    def __init__(self, key: str, first: int, second: int):
        self.key, self.first, self.second = key, first, second
        super().__init__(f"{key}: given twice, on lines {first} and {second}")


#: the tag of a YAML merge key (``<<: *anchor``): the keys it brings may be overridden, as YAML allows
MERGE = "tag:yaml.org,2002:merge"


class StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a mapping that gives a key twice (:class:`DuplicateKey`).

    The composed document is checked before anything is constructed, so merge keys are still as
    written: ``<<: *anchor`` followed by one of the anchor's keys overrides it, as YAML intends."""

    def construct_document(self, node):
        self._check_keys(node, "", set())
        return super().construct_document(node)

    def _check_keys(self, node, path: str, seen_nodes: set) -> None:
        if id(node) in seen_nodes:  # an alias of a node already checked (or a recursive one)
            return
        seen_nodes.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._check_keys(item, f"{path}[{i}]", seen_nodes)
            return
        if not isinstance(node, yaml.MappingNode):
            return
        lines: dict = {}
        for key_node, value_node in node.value:
            if key_node.tag == MERGE:
                self._check_keys(value_node, path, seen_nodes)
                continue
            scalar = isinstance(key_node, yaml.ScalarNode)
            key = self.construct_object(key_node, deep=True) if scalar else None
            name = f"{path}.{key}" if path else str(key)
            line = key_node.start_mark.line + 1
            if scalar:
                if key in lines:
                    raise DuplicateKey(name, lines[key], line)
                lines[key] = line
            self._check_keys(value_node, name, seen_nodes)


def read_recipe(path: Path) -> object:
    """The YAML document of the recipe file ``path`` (found by :func:`find_recipe`), read strictly: a file
    that cannot be read, is not UTF-8 text, is not YAML or gives a key twice is a RecipeError naming the
    file (and the key with both lines)."""
    file = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise RecipeError(file, "(file)", f"cannot be read: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise RecipeError(file, "(file)", f"not UTF-8 text (byte 0x{data[e.start]:02x} on line {line}); save "
                          "the recipe as UTF-8") from None
    try:
        return yaml.load(text, Loader=StrictLoader)  # a SafeLoader: plain data only
    except DuplicateKey as e:
        raise RecipeError(file, e.key, f"the key is given twice, on lines {e.first} and {e.second} (YAML "
                          "would keep the last one silently); keep one") from None
    except yaml.YAMLError as e:
        raise RecipeError(file, "(yaml)", f"not valid YAML: {e}") from None
