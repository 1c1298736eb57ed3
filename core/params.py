"""Typed parameter blocks (recipe sections and plugin parameters) built from plain dicts.

One mechanism for every block: dataclass fields declare name, type, default and documentation
(``param(default, "doc")``) and, where a value can be out of range, its bounds
(``param(0.15, "doc", gt=0, lt=1)``) or a check (``param([...], "doc", check=fn)``); :func:`build`
checks unknown keys (with a did-you-mean), types, choices and those bounds, and names the recipe
file and key path of the first problem. Checks that involve several fields stay in the class's
``__post_init__`` and raise :class:`ParamError` naming the field, which :func:`build` reports as
``<block>.<field>``. :func:`check_params` applies the declared bounds to an instance, for a
``__post_init__`` that also wants them checked when the class is constructed directly.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from collections.abc import Callable
from typing import Any, Literal, get_args, get_origin

from replicator.core.errors import RecipeError

_MISSING = dataclasses.MISSING
_YAML11_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


class ParamError(ValueError):
    """A parameter value is wrong; ``field`` names the parameter (``build`` reports ``<block>.<field>``)
    and the message names it too, for errors outside a recipe."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(message)


def param(default: Any = _MISSING, doc: str = "", *, ge: float | None = None, gt: float | None = None,
          le: float | None = None, lt: float | None = None, check: Callable[[Any], None] | None = None,
          step: Literal["predict", "postprocess"] | None = None, **kw) -> Any:
    """A documented dataclass field; mutable defaults (lists, dicts) are copied per instance.

    ``ge``/``gt``/``le``/``lt``: bounds of a numeric value, which must also be finite (``None`` is not
    checked);
    ``check(value)``: raises ValueError when the value is wrong (the parameter's name is put in front
    of the message unless it starts with it).
    ``step``: a plugin parameter that only prediction (``predict``) or only postprocessing
    (``postprocess``) reads, in a plugin whose other hooks act on training; the trained weights of
    a variant that changes only such parameters are reused (:mod:`replicator.core.stages.steps`).
    """
    meta: dict[str, Any] = {"doc": doc}
    if step is not None:
        meta["step"] = step
    bounds = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None}
    if bounds:
        meta["bounds"] = bounds
    if check is not None:
        meta["check"] = check
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata=meta, **kw)
    if default is _MISSING:
        return dataclasses.field(metadata=meta, **kw)
    return dataclasses.field(default=default, metadata=meta, **kw)


def range_text(bounds: dict[str, float]) -> str:
    """``{"gt": 0, "lt": 1}`` -> ``"in (0, 1)"``, ``{"ge": 1}`` -> ``">= 1"``."""
    low = [(k, v) for k, v in bounds.items() if k in ("ge", "gt")]
    high = [(k, v) for k, v in bounds.items() if k in ("le", "lt")]
    if low and high:
        (lk, lv), (hk, hv) = low[0], high[0]
        return f"in {'[' if lk == 'ge' else '('}{lv:g}, {hv:g}{']' if hk == 'le' else ')'}"
    sign = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    return " and ".join(f"{sign[k]} {v:g}" for k, v in bounds.items())


def _in_bounds(value: float, bounds: dict[str, float]) -> bool:
    """Whether ``value`` is finite and within ``bounds`` (NaN and infinities are never in bounds)."""
    ok = {"ge": lambda b: value >= b, "gt": lambda b: value > b,
          "le": lambda b: value <= b, "lt": lambda b: value < b}
    return math.isfinite(value) and all(ok[k](b) for k, b in bounds.items())


def check_value(f: dataclasses.Field, value: Any) -> None:
    """Raise :class:`ParamError` when ``value`` breaks the bounds or the check declared on field ``f``."""
    if value is None:
        return
    bounds = f.metadata.get("bounds")
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    if bounds and numeric and not _in_bounds(value, bounds):
        raise ParamError(f.name, f"{f.name} must be {range_text(bounds)}, got {value!r}")
    check = f.metadata.get("check")
    if check is not None:
        try:
            check(value)
        except ParamError:
            raise
        except ValueError as e:
            msg = str(e)
            raise ParamError(f.name, msg if msg.startswith(f.name) else f"{f.name}: {msg}") from None


def check_params(obj) -> None:
    """Apply the declared bounds and checks of dataclass instance ``obj`` (ParamError on the first
    problem)."""
    for f in dataclasses.fields(obj):
        if not f.name.startswith("_"):
            check_value(f, getattr(obj, f.name))


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
    if data is not None and not isinstance(data, dict):
        raise RecipeError(file, key or cls.__name__,
                          f"expected a mapping, got {type(data).__name__} {data!r}")
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
            _check_declared(f, kwargs[name], file, path)
        elif f.default is _MISSING and f.default_factory is _MISSING:  # type: ignore[misc]
            raise RecipeError(file, path, "required parameter is missing")
    try:
        obj = cls(**kwargs)
    except ParamError as e:  # __post_init__ checks that name their field
        raise RecipeError(file, f"{key}.{e.field}" if key else e.field, str(e)) from None
    except (ValueError, TypeError) as e:  # other __post_init__ checks
        raise RecipeError(file, key or cls.__name__, str(e)) from None
    return obj


def _check_declared(f: dataclasses.Field, value: Any, file: str, path: str) -> None:
    try:
        check_value(f, value)
    except ParamError as e:
        raise RecipeError(file, path, str(e)) from None


def to_dict(obj) -> dict:
    return dataclasses.asdict(obj)
