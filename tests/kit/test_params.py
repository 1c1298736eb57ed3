"""Typed parameter blocks (core/params.py): every declared bound is checked by ``build``."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from replicator.core.errors import RecipeError
from replicator.core.params import ParamError, build, check_params, param, range_text


def test_every_declared_bound_is_checked_by_build():
    """Each bounded parameter of each registered plugin and core section rejects a value just outside its
    bounds, naming <block>.<parameter>: a new bound cannot go unchecked."""
    from replicator.core.config.catalogue import catalogue
    from replicator.core.config.recipe import LoraConfig, ModelConfig, PredictConfig, TrainConfig

    cat = catalogue()
    classes = {**{c.__name__: c for c in (LoraConfig, ModelConfig, PredictConfig, TrainConfig)},
               **{n: cat[n] for n in cat}}
    required = {"distill_kl_cos": {"teachers": ["t"]}}
    seen = 0
    for name, cls in classes.items():
        hints = typing.get_type_hints(cls)
        fields = dataclasses.fields(cls)
        if name not in required and any(f.default is f.default_factory is dataclasses.MISSING
                                        for f in fields):
            continue  # a required parameter this test cannot fill in
        for f in fields:
            is_float = float in (typing.get_args(hints[f.name]) or (hints[f.name],))
            for kind, edge in f.metadata.get("bounds", {}).items():
                bad = edge if kind in ("gt", "lt") else edge - 1 if kind == "ge" else edge + 1
                with pytest.raises(RecipeError) as e:
                    build(cls, {**required.get(name, {}), f.name: float(bad) if is_float else int(bad)},
                          "r.yaml", f"blk.{name}")
                assert e.value.key == f"blk.{name}.{f.name}", (name, f.name, str(e.value))
                seen += 1
    assert seen >= 40, seen


def test_param_bounds_helpers():
    assert range_text({"gt": 0, "lt": 1}) == "in (0, 1)"
    assert range_text({"ge": 0, "le": 1}) == "in [0, 1]"
    assert range_text({"ge": 8}) == ">= 8"

    @dataclasses.dataclass(frozen=True)
    class Block:
        x: float = param(0.5, "a fraction", gt=0, lt=1)
        y: int | None = param(None, "optional count", ge=1)

        def __post_init__(self):
            check_params(self)

    with pytest.raises(ParamError, match=r"x must be in \(0, 1\), got 1.0") as e:
        Block(x=1.0)
    assert e.value.field == "x"
    assert Block(y=None).y is None
    with pytest.raises(ParamError, match="y must be >= 1"):
        Block(y=0)
    with pytest.raises(ParamError, match="x must be"):
        Block(x=float("inf"))
