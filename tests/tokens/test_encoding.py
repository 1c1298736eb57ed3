"""Encoding many rows (core/tokens/encoding.py): worker processes, budgets, errors raised as themselves."""

from __future__ import annotations

import pytest

from replicator.core.errors import ReplicatorError
from replicator.core.tokens import encoding as token_encoding

from ..char_tokenizer import char_tokenizer
from ..helpers import BUDGET, _fresh, _plugins, _rows, _view_rows


def test_worker_processes_give_the_same_tokens(cache_env, monkeypatch):
    plugins, _ = _plugins()
    tok = char_tokenizer()
    rows = _view_rows(_rows()[:60])
    monkeypatch.setattr(token_encoding, "PARALLEL_MIN", 10)
    monkeypatch.setattr(token_encoding, "CHUNK_ROWS", 16)
    parallel = token_encoding.encode_many(plugins, tok, BUDGET, rows, progress=False, workers=2)
    serial = token_encoding.encode_many(plugins, tok, BUDGET, rows, progress=False, workers=1)
    assert [(a.tolist(), t) for a, t in parallel] == [(a.tolist(), t) for a, t in serial]
    assert [a.tolist() for a, _ in serial] == [_fresh(plugins, tok, r) for r in rows]


def test_over_budget_formats_are_refused(cache_env):
    plugins, _ = _plugins()

    class Liar:
        def one(self, hook, row, tokenizer, max_length):
            return plugins.one(hook, row=row, tokenizer=tokenizer, max_length=max_length * 2)

    rows = _rows()[:3]
    with pytest.raises(ReplicatorError, match=f"row {rows[0]['id']}, over the budget 16"):
        token_encoding.encode_many(Liar(), char_tokenizer(), 16, rows, progress=False, workers=1)


def test_a_format_error_in_a_worker_is_raised_as_itself(cache_env, monkeypatch):
    plugins, _ = _plugins()
    rows = _rows()[:40]
    bad = rows[25]["id"]

    class Picky:
        def one(self, hook, row, tokenizer, max_length):
            if row["id"] == bad:
                raise ValueError(f"row {bad}: cannot format this one")
            return plugins.one(hook, row=row, tokenizer=tokenizer, max_length=max_length)

    monkeypatch.setattr(token_encoding, "PARALLEL_MIN", 10)
    monkeypatch.setattr(token_encoding, "CHUNK_ROWS", 8)
    with pytest.raises(ValueError, match=f"row {bad}: cannot format"):
        token_encoding.encode_many(Picky(), char_tokenizer(), BUDGET, rows, progress=False, workers=2)
