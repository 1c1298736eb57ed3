"""The persistent token cache (core/tokens/store.py) behind the Encoder: keyed by format, tokenizer and
budget; memory-mapped int32 shards; corrupt shards skipped; off switch; concurrent writers."""

from __future__ import annotations

import logging
import threading

import numpy as np
import pytest

from replicator.core.errors import ReplicatorError
from replicator.core.tokens import encoding as token_encoding
from replicator.core.tokens import keys as token_keys
from replicator.core.tokens import store as token_store
from replicator.core.tokens.batches import Encoder, collate

from ..char_tokenizer import char_tokenizer
from ..helpers import BUDGET, VIEWS, _count_format_calls, _fresh, _plugins, _rows, _view_rows


def _reopen():
    token_store.forget_open()


def test_hits_return_exactly_the_hooks_tokens(cache_env):
    plugins, _ = _plugins()
    tok = char_tokenizer()
    rows = _rows()[:60]
    calls = _count_format_calls(plugins)
    first = Encoder(plugins, tok)
    first.prepare(rows, BUDGET, views=VIEWS)
    assert len(calls) == 2 * len(rows)  # every row in both views, once
    assert first.truncated > 0 and first.count == 2 * len(rows)
    _reopen()
    calls.clear()
    enc = Encoder(plugins, tok)
    enc.prepare(rows, BUDGET, views=VIEWS)
    assert calls == []  # all hits, from the shards on disk
    assert (enc.count, enc.truncated) == (first.count, first.truncated)
    for r in _view_rows(rows):
        got = enc(r, BUDGET)
        assert isinstance(got, np.ndarray) and got.dtype == np.int32
        assert got.tolist() == _fresh(plugins, tok, r)
    assert calls == [r["id"] for r in _view_rows(rows)]  # only the fresh calls above
    assert enc.count == first.count  # looking up again counts nothing twice
    ids, mask = collate([enc(r, BUDGET) for r in rows[:4]], tok.pad_token_id, "cpu")
    assert ids.shape[0] == 4 and ids[0, : int(mask[0].sum())].tolist() == _fresh(plugins, tok, rows[0])


def test_rows_met_one_at_a_time_are_cached_too(cache_env, monkeypatch):
    monkeypatch.setattr(token_store, "PENDING_ROWS", 8)
    plugins, _ = _plugins()
    tok = char_tokenizer()
    rows = _rows()[:20]
    enc = Encoder(plugins, tok)
    assert [enc(r, BUDGET).tolist() for r in rows] == [_fresh(plugins, tok, r) for r in rows]
    enc.store(BUDGET).flush()
    _reopen()
    calls = _count_format_calls(plugins)
    again = Encoder(plugins, tok)
    assert [again(r, BUDGET).tolist() for r in rows] == [_fresh(plugins, tok, r) for r in rows]
    assert calls == [r["id"] for r in rows]  # the fresh calls only: every encoder call was a hit


def test_a_format_change_retokenises_a_calibration_change_does_not(cache_env):
    tok = char_tokenizer()
    rows = _rows()[:40]
    with_temp, r1 = _plugins()
    without_temp, r2 = _plugins(["temperature"])
    assert "temp" in r1.final.plugins and "temp" not in r2.final.plugins
    calls = _count_format_calls(with_temp)
    Encoder(with_temp, tok).prepare(rows, BUDGET, views=VIEWS)
    assert len(calls) == 2 * len(rows)
    _reopen()
    calls = _count_format_calls(without_temp)
    enc = Encoder(without_temp, tok)
    enc.prepare(rows, BUDGET, views=VIEWS)
    assert calls == []  # same folder, every row a hit
    folder = enc.store(BUDGET).folder
    for override in ("plugins.prompt.show_lengths=false", "plugins.prompt.truncate=keep_start",
                     "plugins.prompt.question=Which one?"):
        changed, _ = _plugins(overrides=[override])
        calls = _count_format_calls(changed)
        other = Encoder(changed, tok)
        other.prepare(rows, BUDGET, views=VIEWS)
        assert other.store(BUDGET).folder != folder, override
        assert len(calls) == 2 * len(rows), override


def test_a_new_tokenizer_or_budget_is_a_new_folder(cache_env):
    from replicator.core.model.tiny import _tokenizer

    plugins, _ = _plugins()
    char_a, char_b, words = char_tokenizer(), char_tokenizer(), _tokenizer()
    folder = Encoder(plugins, char_a).store(BUDGET).folder
    assert Encoder(plugins, char_b).store(BUDGET).folder == folder  # same tokenizer, another object
    assert Encoder(plugins, words).store(BUDGET).folder != folder
    assert Encoder(plugins, char_a).store(BUDGET - 1).folder != folder
    no_template = char_tokenizer(chat_template=False)
    assert Encoder(plugins, no_template).store(BUDGET).folder != folder  # the chat template is part of it
    assert folder.parent == token_store.tokens_root().resolve()
    assert token_store.tokens_root() == cache_env / "artifacts" / "cache" / "tokens"


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_a_corrupt_shard_is_skipped_with_a_warning(cache_env, caplog, damage):
    plugins, _ = _plugins()
    tok = char_tokenizer()
    rows = _rows()[:30]
    enc = Encoder(plugins, tok)
    enc.prepare(rows, BUDGET, views=VIEWS)
    (shard,) = enc.store(BUDGET).folder.glob("*.arrow")
    data = bytearray(shard.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":
        data[len(data) // 2] ^= 0x01  # one bit in the token ids
    else:
        data = bytearray(b"not arrow at all" * 10)
    shard.write_bytes(bytes(data))
    _reopen()
    calls = _count_format_calls(plugins)
    with caplog.at_level(logging.WARNING, logger="replicator.core.tokens.store"):
        again = Encoder(plugins, tok)
        again.prepare(rows, BUDGET, views=VIEWS)
    assert any(shard.name in m and "skipping" in m for m in caplog.messages), caplog.messages
    assert len(calls) == 2 * len(rows)  # tokenised again
    for r in _view_rows(rows):
        assert again(r, BUDGET).tolist() == _fresh(plugins, tok, r)
    assert again.count == 2 * len(rows)
    _reopen()  # the new shard serves; the damaged one is skipped again, never read as tokens
    calls.clear()
    Encoder(plugins, tok).prepare(rows, BUDGET, views=VIEWS)
    assert calls == []


def test_off_writes_nothing(cache_env, monkeypatch):
    monkeypatch.setenv("REPLICATOR_TOKEN_CACHE", "off")
    plugins, _ = _plugins()
    tok = char_tokenizer()
    rows = _rows()[:20]
    enc = Encoder(plugins, tok)
    enc.prepare(rows, BUDGET, views=VIEWS)
    for r in _view_rows(rows):
        assert enc(r, BUDGET).tolist() == _fresh(plugins, tok, r)
    assert enc.count == 2 * len(rows)
    assert not (cache_env / "artifacts").exists() or not any((cache_env / "artifacts").rglob("*"))
    monkeypatch.setenv("REPLICATOR_TOKEN_CACHE", "sometimes")
    with pytest.raises(ReplicatorError, match="REPLICATOR_TOKEN_CACHE"):
        Encoder(plugins, tok).store(BUDGET)


def test_concurrent_writers_keep_every_entry(cache_env):
    plugins, _ = _plugins()
    tok = char_tokenizer()
    rows = _rows()[:80]
    halves = [rows[:50], rows[30:]]  # overlapping: both write rows 30..49
    errors: list = []

    def work(part):
        try:
            Encoder(plugins, tok).prepare(part, BUDGET, views=VIEWS)
        except Exception as e:  # pragma: no cover - shown by the assert below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(h,)) for h in halves]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    # two separate cache objects on one folder (as two processes), their shards interleaved
    folder = Encoder(plugins, tok).store(BUDGET).folder
    more = _rows()[80:120]
    a, b = token_store.TokenCache(folder), token_store.TokenCache(folder)
    for i, r in enumerate(more):
        ids, trunc = token_encoding.encode_one(plugins, tok, r, BUDGET)
        (a if i % 2 else b).add([token_keys.row_key(r)], [ids], [trunc])
    _reopen()
    fresh = token_store.TokenCache(folder)
    keys = {token_keys.row_key(r) for r in _view_rows(rows)} | {token_keys.row_key(r) for r in more}
    assert all(k in fresh for k in keys) and len(fresh.skipped) == 0
    calls = _count_format_calls(plugins)
    enc = Encoder(plugins, tok)
    enc.prepare(rows, BUDGET, views=VIEWS)
    enc.prepare(more, BUDGET)
    assert calls == []
    for r in _view_rows(rows) + more:
        assert enc(r, BUDGET).tolist() == _fresh(plugins, tok, r)


def _prepare_in_child(rows, start_evt):
    plugins, _ = _plugins()
    start_evt.wait(30)
    Encoder(plugins, char_tokenizer()).prepare(rows, BUDGET, views=VIEWS, progress=False)


def test_two_processes_filling_one_folder_keep_every_entry(cache_env):
    import multiprocessing

    rows = _rows()[:60]
    ctx = multiprocessing.get_context("fork")
    start = ctx.Event()
    procs = [ctx.Process(target=_prepare_in_child, args=(part, start)) for part in (rows[:40], rows[20:])]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    plugins, _ = _plugins()
    tok = char_tokenizer()
    folder = Encoder(plugins, tok).store(BUDGET).folder
    assert len(list(folder.glob("*.arrow"))) == 2  # one shard each
    assert not list(folder.glob(".*"))  # no temp files left
    calls = _count_format_calls(plugins)
    enc = Encoder(plugins, tok)
    enc.prepare(rows, BUDGET, views=VIEWS)
    assert calls == []
    for r in _view_rows(rows):
        assert enc(r, BUDGET).tolist() == _fresh(plugins, tok, r)


def test_a_cleared_folder_is_noticed_by_the_open_cache(cache_env):
    import shutil

    plugins, _ = _plugins()
    tok = char_tokenizer()
    rows = _rows()[:10]
    first = Encoder(plugins, tok)
    first.prepare(rows, BUDGET)
    shutil.rmtree(first.store(BUDGET).folder)  # the user clears the cache while the process lives
    calls = _count_format_calls(plugins)
    enc = Encoder(plugins, tok)
    enc.prepare(rows, BUDGET)
    assert sorted(calls) == sorted(r["id"] for r in rows) and enc.store(BUDGET) is not first.store(BUDGET)
    assert len(list(enc.store(BUDGET).folder.glob("*.arrow"))) == 1
