"""The seven seams (core/hookspecs.py): each hook documented with its kind, annotated, and named in a test."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from replicator.core import hookspecs

from ..conftest import ROOT

TESTS = ROOT / "tests"


def test_every_hook_is_documented_with_its_kind():
    for hook, kind in hookspecs.HOOK_KINDS.items():
        doc = inspect.getdoc(getattr(hookspecs, hook))
        assert doc and doc.startswith(f"{kind}: return"), hook


def test_every_hook_is_named_in_a_test():
    text = "\n".join(p.read_text() for p in TESTS.rglob("test_*.py") if p.name != Path(__file__).name)
    for hook in hookspecs.HOOK_KINDS:
        assert re.search(rf"\b{hook}\b", text), f"hook {hook} is not named in any test"


def test_hookspecs_are_annotated_and_match_hook_kinds():
    import inspect

    specs = [n for n, f in vars(hookspecs).items() if hasattr(f, "replicator_spec")]
    assert specs == list(hookspecs.HOOK_KINDS)
    for name in specs:
        sig = inspect.signature(getattr(hookspecs, name))
        assert sig.return_annotation is not inspect.Signature.empty, name
        assert all(p.annotation is not inspect.Parameter.empty for p in sig.parameters.values()), name
