"""The persistent token cache (core/tokens/store.py) behind the Encoder: keyed by format, tokenizer, budget
and row content; memory-mapped int32 shards; corrupt shards skipped; off switch; concurrent writers."""

from __future__ import annotations

import logging
import threading

import numpy as np
import pytest

from replicator.core.config.catalogue import build_plugins
from replicator.core.config.recipe import resolve
from replicator.core.errors import ReplicatorError
from replicator.core.predict.views import Identity
from replicator.core.tokens import encoding as token_encoding
from replicator.core.tokens import keys as token_keys
from replicator.core.tokens import store as token_store
from replicator.core.tokens.batches import Encoder, collate
from replicator.plugins.swap_ab import SwapView

from .char_tokenizer import char_tokenizer
from .conftest import RECIPES, TINY

VIEWS = [Identity(), SwapView()]
BUDGET = 128


@pytest.fixture()
def cache_env(isolated, monkeypatch):
    monkeypatch.setenv("REPLICATOR_TOKEN_WORKERS", "1")
    monkeypatch.delenv("REPLICATOR_TOKEN_CACHE", raising=False)
    token_store.forget_open()
    yield isolated
    token_store.forget_open()


def _plugins(toggles=(), overrides=()):
    r = resolve(RECIPES / "smoke.yaml", list(toggles), TINY + list(overrides), check_plugins=False)
    return build_plugins(r.final.plugins, "smoke.yaml"), r


def _rows():
    from replicator.core.data.competition import read_competition_csv
    from replicator.core.data.files import data_dir

    return read_competition_csv(data_dir() / "lmsys-chatbot-arena" / "train.csv", require_labels=True)


def _count_format_calls(plugins) -> list:
    calls: list = []

    def before(hook_name, impls, kwargs):
        if hook_name == "prompt_format":
            calls.append(kwargs["row"].get("id"))

    plugins.pm.add_hookcall_monitoring(before, lambda *a: None)
    return calls


def _fresh(plugins, tok, row, max_length=BUDGET) -> list[int]:
    return list(plugins.one("prompt_format", row=row, tokenizer=tok, max_length=max_length).input_ids)


def _view_rows(rows):
    return [dict(v.apply(r), view=v.name) for v in VIEWS for r in rows]


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


def test_the_row_key_covers_every_text_and_nothing_else(cache_env):
    row = _rows()[5]
    row = dict(row, prompt=["first question", "second"], response_a=["answer a", None],
               response_b=["answer b", "more b"])
    key = token_keys.row_key(row)
    for field in ("prompt", "response_a", "response_b"):
        for turn in range(2):
            changed = dict(row, **{field: list(row[field])})
            changed[field][turn] = (changed[field][turn] or "") + "!"
            assert token_keys.row_key(changed) != key, (field, turn)
    assert token_keys.row_key(dict(row, response_a=["answer a", ""])) != key  # None is not ""
    assert token_keys.row_key(dict(row, prompt=["first question second"])) != key  # turn boundaries count
    assert token_keys.row_key(dict(row, swapped=True)) != key
    assert token_keys.row_key(dict(row, view="swap_ab")) != key
    assert token_keys.row_key(dict(row, model_a="someone-else")) != key  # unknown to the list: in the key
    assert token_keys.row_key(dict(row, layout="papb")) != key  # judge formats read a per-row layout tag
    assert token_keys.row_key(dict(row, view="identity")) == key  # the identity view is the row itself
    same = dict(row, id="other", label=[0.0, 1.0, 0.0], teacher={"s1": [0.2, 0.3, 0.5]}, pair="p", group="g",
                source="elsewhere", weight=0.5)
    assert token_keys.row_key(same) == key  # fields no format reads
    # end to end: a text change is a miss for that row only
    plugins, _ = _plugins()
    tok = char_tokenizer()
    rows = _rows()[:10]
    Encoder(plugins, tok).prepare(rows, BUDGET)
    edited = [dict(r) for r in rows]
    edited[3]["response_b"] = [t + " (edited)" if t else t for t in edited[3]["response_b"]]
    calls = _count_format_calls(plugins)
    enc = Encoder(plugins, tok)
    enc.prepare(edited, BUDGET)
    assert calls == [rows[3]["id"]]
    assert enc(edited[3], BUDGET).tolist() == _fresh(plugins, tok, edited[3])


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
