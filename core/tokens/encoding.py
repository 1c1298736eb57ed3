"""Tokenising the rows the token cache misses: through the ``prompt_format`` hook, the rows' turn texts
first tokenised in one batch call, in forked worker processes when there are many, with a progress bar.

Environment:

``REPLICATOR_TOKEN_WORKERS``  processes that tokenise a large batch of misses (default: the usable
                              cores, at most 4; 1 = in this process). Workers are forked (Linux) and
                              used only above :data:`PARALLEL_MIN` misses.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed

import numpy as np
from tqdm.auto import tqdm

from replicator.core.errors import ReplicatorError
from replicator.core.tokens.store import SHARD_ROWS

WORKERS_ENV = "REPLICATOR_TOKEN_WORKERS"
#: misses above which tokenisation goes to worker processes
PARALLEL_MIN = 4000
#: rows per task of a worker (and per pre-tokenised batch in this process)
CHUNK_ROWS = 256
#: misses above which a progress bar shows on stderr
PROGRESS_MIN = 2000


def n_workers() -> int:
    """Processes for many misses: ``REPLICATOR_TOKEN_WORKERS``, else the usable cores (at most 4)."""
    raw = os.environ.get(WORKERS_ENV, "").strip()
    if raw:
        if not raw.isdigit() or int(raw) < 1:
            raise ReplicatorError(f"{WORKERS_ENV}={raw!r}: expected a whole number >= 1")
        return int(raw)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, 4))


_MEMO_CLASSES: dict[type, type] = {}


def _memo_tokenizer(tokenizer, memo: dict):
    """A shallow copy of ``tokenizer`` (same class family: ``isinstance`` holds) whose
    ``tokenizer(text, add_special_tokens=False)`` answers from ``memo`` (filled in batches, and with every
    such call it sees); any other call goes to the tokenizer itself."""
    base = type(tokenizer)
    cls = _MEMO_CLASSES.get(base)
    if cls is None:
        from transformers import BatchEncoding

        def __call__(self, text=None, *args, **kwargs):
            memo = self.__dict__["_tokcache_memo"]
            if args or not isinstance(text, str) or kwargs != {"add_special_tokens": False}:
                return base.__call__(self, text, *args, **kwargs)
            hit = memo.get(text)
            if hit is None:
                out = base.__call__(self, text, **kwargs)
                memo[text] = hit = {k: list(v) for k, v in out.items()}
            return BatchEncoding({k: list(v) for k, v in hit.items()})

        cls = _MEMO_CLASSES[base] = type(f"Memo{base.__name__}", (base,), {"__call__": __call__})
    new = object.__new__(cls)
    new.__dict__.update(tokenizer.__dict__)
    new.__dict__["_tokcache_memo"] = memo
    return new


def _prewarm(tokenizer, memo: dict, rows: Sequence[dict]) -> None:
    """Tokenise the rows' turn texts in one batch call (fast tokenizers run it in Rust threads)."""
    texts: dict[str, None] = {}
    for r in rows:
        for f in ("prompt", "response_a", "response_b"):
            for t in r.get(f) or ():
                if isinstance(t, str) and t and t not in memo:
                    texts[t] = None
    if not texts:
        return
    todo = list(texts)
    out = tokenizer(todo, add_special_tokens=False)
    cols = {k: out[k] for k in out.keys()}
    for i, t in enumerate(todo):
        memo[t] = {k: v[i] for k, v in cols.items()}


def _encode_rows(plugins, tokenizer, max_length: int, rows: Sequence[dict]):
    """[(int32 ids, truncated)] of ``rows`` through the prompt_format hook; the budget is checked."""
    memo: dict = {}
    memo_tok = _memo_tokenizer(tokenizer, memo)
    _prewarm(tokenizer, memo, rows)
    out = []
    for row in rows:
        out.append(encode_one(plugins, memo_tok, row, max_length))
    return out


def encode_one(plugins, tokenizer, row: dict, max_length: int) -> tuple[np.ndarray, bool]:
    enc = plugins.one("prompt_format", row=row, tokenizer=tokenizer, max_length=max_length)
    if len(enc.input_ids) > max_length:
        raise ReplicatorError(f"prompt_format returned {len(enc.input_ids)} tokens for row "
                              f"{row.get('id')}, over the budget {max_length}")
    return np.asarray(enc.input_ids, dtype=np.int32), bool(enc.truncated)


_JOB: tuple | None = None  # (plugins, tokenizer, max_length, rows) inherited by forked workers


def _work(bounds: tuple[int, int]):
    plugins, tokenizer, max_length, rows = _JOB
    start, stop = bounds
    try:
        done = _encode_rows(plugins, tokenizer, max_length, rows[start:stop])
    except Exception as e:  # the parent runs the chunk again itself, to raise the real error
        return start, None, f"{type(e).__name__}: {e}"
    return start, [(ids.tobytes(), t) for ids, t in done], None


def encode_many(plugins, tokenizer, max_length: int, rows: Sequence[dict], progress: bool = True,
                workers: int | None = None, bar=None) -> list[tuple[np.ndarray, bool]]:
    """(int32 ids, truncated) of every row, in order: in worker processes above :data:`PARALLEL_MIN` rows
    (forked, so they inherit the plugins and the tokenizer; a worker that dies is an error, not a hang)."""
    global _JOB
    n = len(rows)
    workers = n_workers() if workers is None else workers
    own_bar = bar is None
    bar = progress_bar(n, max_length, progress) if own_bar else bar
    ranges = [(s, min(s + CHUNK_ROWS, n)) for s in range(0, n, CHUNK_ROWS)]
    out: list = [None] * n
    try:
        if workers > 1 and n >= PARALLEL_MIN and sys.platform.startswith("linux"):
            _JOB = (plugins, tokenizer, max_length, rows)
            fork = multiprocessing.get_context("fork")
            # workers tokenise on one thread each (and the fast tokenizer does not warn about the fork)
            parallelism = os.environ.get("TOKENIZERS_PARALLELISM")
            os.environ["TOKENIZERS_PARALLELISM"] = "false"
            with _restore_env("TOKENIZERS_PARALLELISM", parallelism), \
                    ProcessPoolExecutor(min(workers, len(ranges)), mp_context=fork) as pool:
                for future in as_completed([pool.submit(_work, r) for r in ranges]):
                    start, done, err = future.result()
                    if done is None:
                        pool.shutdown(wait=False, cancel_futures=True)  # the error now, not after the rest
                        stop = min(start + CHUNK_ROWS, n)
                        # raises the real error
                        _encode_rows(plugins, tokenizer, max_length, rows[start:stop])
                        raise ReplicatorError(f"prompt_format failed in a worker on rows {start}..{stop - 1} "
                                              f"({err}) but not when run again here")
                    out[start:start + len(done)] = [(np.frombuffer(b, dtype=np.int32), t) for b, t in done]
                    bar.update(len(done))
        else:
            for start, stop in ranges:
                out[start:stop] = _encode_rows(plugins, tokenizer, max_length, rows[start:stop])
                bar.update(stop - start)
    finally:
        _JOB = None
        if own_bar:
            bar.close()
    return out


class _restore_env:
    """Put an environment variable back as it was (unset when ``value`` is None) on leaving."""

    def __init__(self, name: str, value: str | None):
        self.name, self.value = name, value

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.value is None:
            os.environ.pop(self.name, None)
        else:
            os.environ[self.name] = self.value


def progress_bar(total: int, max_length: int, progress: bool = True):
    """The tokenising progress bar on stderr (shown from :data:`PROGRESS_MIN` rows)."""
    return tqdm(total=total, desc=f"tokenise ({max_length} tokens)", unit="row", file=sys.stderr,
                dynamic_ncols=True, disable=not progress or total < PROGRESS_MIN)


def tokenise_into(store, plugins, tokenizer, max_length: int, rows: Sequence[dict], keys: Sequence[bytes],
                  progress: bool = True) -> None:
    """Tokenise ``rows`` (misses, with their ``keys``) and add them to ``store``, a shard per
    :data:`replicator.core.tokens.store.SHARD_ROWS` rows as they finish (an interrupted run keeps the
    shards it wrote)."""
    bar = progress_bar(len(rows), max_length, progress)
    try:
        for start in range(0, len(rows), SHARD_ROWS):
            part = slice(start, start + SHARD_ROWS)
            done = encode_many(plugins, tokenizer, max_length, rows[part], progress, bar=bar)
            store.add(keys[part], [d[0] for d in done], [d[1] for d in done])
    finally:
        bar.close()


def group_order(rows: Sequence[dict], idx: Iterable[int]) -> list[int]:
    """``idx`` ordered so that rows with the same prompt (a row and its swap) are neighbours: they
    then share one chunk's tokenised texts."""
    return sorted(idx, key=lambda i: repr(rows[i].get("prompt")))
