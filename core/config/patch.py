"""Merge patches: how toggles, ``key.path=value`` overrides and stages patch a recipe.

A patch is a JSON merge patch (RFC 7396: ``null`` deletes, mappings merge, anything else
replaces), plus one rule of ours: a plugin block whose ``use`` changes is replaced whole.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from replicator.core.errors import RecipeError


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON merge patch, plus: a plugin block whose ``use`` changes is replaced whole."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if not isinstance(target, dict):
        target = {}
    if "use" in patch and target.get("use") not in (None, patch["use"]):
        target = {}
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def parse_override(text: str, file: str = "<command line>") -> dict:
    """``a.b.c=value`` -> ``{"a": {"b": {"c": value}}}`` with ``value`` parsed as YAML."""
    if "=" not in text:
        raise RecipeError(file, text, "an override has the form key.path=value")
    key, _, raw = text.partition("=")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError as e:
        raise RecipeError(file, key, f"cannot parse value {raw!r}: {e}") from None
    out: Any = value
    for part in reversed(key.strip().split(".")):
        if not part:
            raise RecipeError(file, key, "empty key segment")
        out = {part: out}
    return out
