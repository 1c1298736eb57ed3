"""Typed parameter blocks (recipe sections and plugin parameters) built from plain dicts.

One mechanism for every block: dataclass fields declare name, type, default and documentation
(``param(default, "doc")``); :func:`build` checks unknown keys (with a did-you-mean), types and
choices, and names the recipe file and key path of the first problem.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from typing import Any, Literal, get_args, get_origin

from .errors import RecipeError

_MISSING = dataclasses.MISSING
_YAML11_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def param(default: Any = _MISSING, doc: str = "", **kw) -> Any:
    """A documented dataclass field; mutable defaults (lists, dicts) are copied per instance."""
    meta = {"doc": doc}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata=meta, **kw)
    if default is _MISSING:
        return dataclasses.field(metadata=meta, **kw)
    return dataclasses.field(default=default, metadata=meta, **kw)


def did_you_mean(name: str, choices) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def doc_of(cls) -> list[tuple[str, str, Any, str]]:
    """(name, type, default, doc) of each parameter of a dataclass, for catalogues and meta-tests."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name.startswith("_"):
            continue
        if f.default is not _MISSING:
            default = f.default
        elif f.default_factory is not _MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = "(required)"
        out.append((f.name, _type_name(hints[f.name]), default, f.metadata.get("doc", "")))
    return out


def _type_name(tp) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if origin in (list, tuple):
        args = get_args(tp)
        return f"list[{_type_name(args[0])}]" if args else "list"
    if origin is dict:
        return "dict"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _check(value: Any, tp, file: str, key: str):
    """Return ``value`` coerced to ``tp`` (int → float only), or raise RecipeError."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if value in get_args(tp):
            return value
        choices = ", ".join(repr(a) for a in get_args(tp))
        hint = did_you_mean(str(value), [str(a) for a in get_args(tp)])
        raise RecipeError(file, key, f"{value!r} is not one of {choices}{hint}")
    if origin in (typing.Union, types.UnionType):
        for arg in get_args(tp):  # a mapping for a dataclass member: report its own errors
            if dataclasses.is_dataclass(arg) and isinstance(value, dict):
                return build(arg, value, file, key)
        errors = []
        for arg in get_args(tp):
            try:
                return _check(value, arg, file, key)
            except RecipeError as e:
                errors.append(e)
        raise RecipeError(file, key, f"expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
    if tp is type(None):
        if value is None:
            return None
        raise RecipeError(file, key, f"expected null, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise RecipeError(file, key, f"expected a list, got {type(value).__name__} {value!r}")
        (arg,) = get_args(tp) or (Any,)
        return [_check(v, arg, file, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise RecipeError(file, key, f"expected a mapping, got {type(value).__name__} {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise RecipeError(file, key, f"expected a mapping, got {type(value).__name__} {value!r}")
        return build(tp, value, file, key)
    if tp is float:
        if isinstance(value, str) and _YAML11_FLOAT.fullmatch(value.strip()):
            return float(value)  # YAML 1.1 reads "1e-4" (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecipeError(file, key, f"expected a number, got {type(value).__name__} {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecipeError(file, key, f"expected an integer, got {type(value).__name__} {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise RecipeError(file, key, f"expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise RecipeError(file, key, f"expected a string, got {type(value).__name__} {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise RecipeError(file, key, f"expected {tp.__name__}, got {type(value).__name__} {value!r}")
    return value


def build(cls, data: dict | None, file: str, key: str, ignore: tuple[str, ...] = ()):
    """Instantiate dataclass ``cls`` from ``data``; ``key`` is the block's path in the recipe."""
    data = dict(data or {})
    for k in ignore:
        data.pop(k, None)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.name.startswith("_")}
    for k in data:
        if k not in fields:
            raise RecipeError(
                file, f"{key}.{k}" if key else k,
                f"unknown parameter{did_you_mean(k, fields)}; known: {', '.join(fields) or '(none)'}",
            )
    kwargs = {}
    for name, f in fields.items():
        path = f"{key}.{name}" if key else name
        if name in data:
            kwargs[name] = _check(data[name], hints[name], file, path)
        elif f.default is _MISSING and f.default_factory is _MISSING:  # type: ignore[misc]
            raise RecipeError(file, path, "required parameter is missing")
    try:
        obj = cls(**kwargs)
    except (ValueError, TypeError) as e:  # __post_init__ checks
        raise RecipeError(file, key or cls.__name__, str(e)) from None
    return obj


def to_dict(obj) -> dict:
    return dataclasses.asdict(obj)
