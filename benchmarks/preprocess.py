"""Tokenisation cost, cold and cached, of a 57k-row competition-sized set (the token cache, issue 11).

    REPLICATOR_DATA_DIR=../shared/data python -m benchmarks.preprocess            # 57,477 rows, 256 and 1024
    python -m benchmarks.preprocess --rows 5000 --budgets 256                       # a quick check

The rows: the real ``lmsys-chatbot-arena/train.csv`` (1,478 rows here, read by
``replicator.core.data.competition.read_competition_csv`` as the ``kaggle_csv`` plugin does) resampled with a
fixed seed to ``--rows`` (57,477 = the full Kaggle train set). The cache keys on content, so an
identical copy WOULD be a cache hit, and within one batch identical texts share their tokenisation:
every copy gets a new id and its copy number appended to **every** turn of its prompt and both
responses (`` [#123]``, a few tokens), so no copy shares a key or a text with another. Each row is
tokenised in both views, identity and swapped (``swap_ab``), as training with swap augmentation and
swap TTA needs: ``2 x rows`` cache entries. Format: ``recipes/smoke.yaml``'s (``plain_turns``,
``longest_first``, ``show_lengths``); tokenizer: the real Gemma-3-270M (``embedded:gemma-3-270m``,
converted once under ``REPLICATOR_CACHE``, offline).

Per budget: **cold** = an empty cache folder, ``Encoder.prepare`` of every row and view (hashing,
tokenising the misses in ``REPLICATOR_TOKEN_WORKERS`` processes, writing the shards); ``cold cpu s`` =
the CPU seconds of this process and its workers meanwhile (divided by the cores: about the wall time on
cores of its own); **cached** =
new ``Encoder``/``TokenCache`` objects over the same folder (the process's open caches forgotten, as a
fresh process) and the same ``prepare`` (all hits), then ``encoder(row)`` for every row and view;
**resident bytes/token** = the growth of ``VmRSS`` (/proc/self/status) of a fresh Python process
(libraries imported and the keys read first) around opening a ``TokenCache`` of the folder and
reading every row's ids from it (each array summed, so every page is touched), divided by the tokens
(RssAnon: mostly the index, RssFile: the mapped shards); **old path** = the growth of ``VmRSS``
around holding the same ids as Python lists in a dict keyed as the old ``Encoder`` did, for the
first ``--old-rows`` entries.
Figures taken while other jobs share the cores are contended: say so when quoting them.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

FULL_ROWS = 57477


def status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def rss() -> dict:
    return {k: status_kb(k) * 1024 for k in ("VmRSS", "RssAnon", "RssFile")}


def make_rows(n: int, seed: int = 0) -> list[dict]:
    from replicator.core.data.competition import read_competition_csv
    from replicator.core.data.files import data_dir
    from replicator.core.data.splits import copy_row

    path = data_dir() / "lmsys-chatbot-arena" / "train.csv"
    base = read_competition_csv(path, require_labels=True)
    rng = random.Random(seed)
    out = []
    for i in range(n):
        r = copy_row(base[rng.randrange(len(base))])
        tag = f" [#{i}]"
        r["id"] = f"{r['id']}-copy{i}"
        for f in ("prompt", "response_a", "response_b"):
            r[f] = [(t or "") + tag for t in r[f]]
        out.append(r)
    return out, path, len(base)


def resident_in_fresh_process(folder: Path, keys: list[bytes]) -> dict:
    """RSS growth of a fresh Python process around opening a TokenCache of ``folder`` and reading
    every key's ids (summed: every page touched); libraries and the key list are loaded before the
    first reading, so only the cache's own memory (its index, the mapped pages) counts."""
    import subprocess

    with tempfile.NamedTemporaryFile(suffix=".keys", delete=False) as f:
        f.write(b"".join(keys))
    try:
        cmd = [sys.executable, "-m", "benchmarks.preprocess", "--resident", str(folder), f.name]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True,
                             cwd=Path(__file__).resolve().parents[1])
    finally:
        os.unlink(f.name)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _resident(folder: str, keys_file: str) -> int:
    import datasets  # noqa: F401 - loaded before the first reading
    import numpy as np
    import pyarrow  # noqa: F401

    from replicator.core.tokens import store as token_store

    raw = Path(keys_file).read_bytes()
    keys = [raw[i:i + 16] for i in range(0, len(raw), 16)]
    token_store.TokenCache(Path(tempfile.mkdtemp()))  # warm the code paths on an empty folder
    gc.collect()
    before = rss()
    store = token_store.TokenCache(Path(folder))
    tokens = checksum = 0
    for k in keys:
        ids, _ = store.get(k)
        checksum += int(ids.sum(dtype=np.int64))  # reads every token: every page of the shards is touched
        tokens += len(ids)
    after = rss()
    print(json.dumps({"tokens": tokens, **{k: after[k] - before[k] for k in after}}))
    return 0


def cpu_seconds() -> float:
    """CPU seconds of this process (all threads) and of its finished children (the tokenising workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def run_budget(plugins, tokenizer, rows: list[dict], max_length: int, old_rows: int) -> dict:

    from replicator.core.predict.views import Identity
    from replicator.core.tokens import encoding as token_encoding
    from replicator.core.tokens import keys as token_keys
    from replicator.core.tokens import store as token_store
    from replicator.core.tokens.batches import Encoder
    from replicator.plugins.swap_ab import SwapView

    views = [Identity(), SwapView()]
    token_store.forget_open()
    enc = Encoder(plugins, tokenizer)
    folder = enc.store(max_length).folder
    assert len(enc.store(max_length)) == 0, f"{folder} is not empty: not a cold run"
    t0, c0 = time.perf_counter(), cpu_seconds()
    enc.prepare(rows, max_length, views=views)
    cold, cold_cpu = time.perf_counter() - t0, cpu_seconds() - c0
    count, truncated = enc.count, enc.truncated
    del enc
    token_store.forget_open()
    gc.collect()

    t0 = time.perf_counter()
    enc = Encoder(plugins, tokenizer)
    enc.prepare(rows, max_length, views=views, progress=False)
    cached_prepare = time.perf_counter() - t0
    t1 = time.perf_counter()
    tokens = 0
    for v in views:
        for r in rows:
            tokens += len(enc(dict(v.apply(r), view=v.name), max_length))
    cached_lookups = time.perf_counter() - t1
    assert enc.count == count and enc.truncated == truncated, (enc.count, count, enc.truncated, truncated)
    del enc
    token_store.forget_open()

    keys = [token_keys.row_key(dict(v.apply(r), view=v.name)) for v in views for r in rows]
    grow = resident_in_fresh_process(folder, keys)
    assert grow["tokens"] == tokens, (grow["tokens"], tokens)
    store = token_store.TokenCache(folder)
    disk = store.nbytes_on_disk()

    m = min(old_rows, len(keys))
    old_tokens = 0
    gc.collect()
    before_old = rss()["VmRSS"]
    old: dict = {}
    for i, k in enumerate(keys[:m]):
        lst = store.get(k)[0].tolist()  # what the hook returns: a list of Python ints
        old[(f"id{i}", i % 2 == 1, "", max_length)] = lst
        old_tokens += len(lst)
    old_grow = rss()["VmRSS"] - before_old
    del old, store
    gc.collect()
    return {"max_length": max_length, "rows": len(rows), "entries": len(keys), "tokens": tokens,
            "truncated_share": round(truncated / max(count, 1), 4), "cold_s": round(cold, 2),
            "cold_cpu_s": round(cold_cpu, 1),
            "cached_prepare_s": round(cached_prepare, 2), "cached_lookups_s": round(cached_lookups, 2),
            "cached_s": round(cached_prepare + cached_lookups, 2),
            "resident_bytes_per_token": round(grow["VmRSS"] / tokens, 3),  # a fresh process, see the doc
            "resident_anon_bytes_per_token": round(grow["RssAnon"] / tokens, 3),
            "resident_file_bytes_per_token": round(grow["RssFile"] / tokens, 3),
            "disk_bytes": disk, "disk_bytes_per_token": round(disk / tokens, 3),
            "old_path_bytes_per_token": round(old_grow / max(old_tokens, 1), 2), "old_path_entries": m,
            "workers": token_encoding.n_workers(), "folder": str(folder)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.preprocess", description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=FULL_ROWS,
                    help=f"rows after resampling (default {FULL_ROWS})")
    ap.add_argument("--budgets", default="256,1024", help="token budgets, comma-separated (default 256,1024)")
    ap.add_argument("--old-rows", type=int, default=20000,
                    help="entries held as Python lists for the old path's bytes/token (default 20000)")
    ap.add_argument("--workers", type=int, default=None,
                    help="tokenising processes (REPLICATOR_TOKEN_WORKERS)")
    ap.add_argument("--keep", type=Path, default=None,
                    help="artifacts root to use and keep (default: a temp folder, removed at the end)")
    ap.add_argument("--resident", nargs=2, metavar=("FOLDER", "KEYS"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.resident:
        return _resident(*args.resident)
    if args.workers is not None:
        os.environ["REPLICATOR_TOKEN_WORKERS"] = str(args.workers)
    os.environ.pop("REPLICATOR_TOKEN_CACHE", None)
    root = args.keep or Path(tempfile.mkdtemp(prefix="preprocess-bench-"))
    os.environ["REPLICATOR_ARTIFACTS"] = str(root)

    from replicator.core.config.catalogue import build_plugins
    from replicator.core.config.recipe import resolve
    from replicator.core.model.embedded import resolve_embedded
    from replicator.core.model.loading import load_tokenizer

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "smoke.yaml"
    stage = resolve(recipe, [], [], check_plugins=False).final
    plugins = build_plugins(stage.plugins, str(recipe))
    tokenizer = load_tokenizer(str(resolve_embedded(stage.model.base)))
    t0 = time.perf_counter()
    rows, path, n_base = make_rows(args.rows)
    print(f"{len(rows)} rows resampled from {n_base} rows of {path} in {time.perf_counter() - t0:.1f} s; "
          f"format {stage.plugins['prompt']}; tokenizer {stage.model.base}; artifacts root {root}",
          file=sys.stderr)
    results = []
    try:
        for b in (int(x) for x in args.budgets.split(",")):
            res = run_budget(plugins, tokenizer, rows, b, args.old_rows)
            print(json.dumps(res), flush=True)
            results.append(res)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    cols = [("budget", "max_length", "{}"), ("rows", "rows", "{:,}"), ("entries", "entries", "{:,}"),
            ("tokens", "tokens", "{:,}"), ("cold s", "cold_s", "{:.1f}"),
            ("cold cpu s", "cold_cpu_s", "{:.1f}"),
            ("cached s", "cached_s", "{:.2f}"),
            ("(prepare", "cached_prepare_s", "{:.2f}"), ("+ lookups)", "cached_lookups_s", "{:.2f}"),
            ("res B/tok", "resident_bytes_per_token", "{:.2f}"), ("disk MB", "disk_bytes", "{}"),
            ("disk B/tok", "disk_bytes_per_token", "{:.2f}"),
            ("old B/tok", "old_path_bytes_per_token", "{:.1f}")]
    table = [[h for h, _, _ in cols]] + [
        [f.format(r[k] / 1e6 if k == "disk_bytes" else r[k]) if k != "disk_bytes" else f"{r[k] / 1e6:.1f}"
         for _, k, f in cols] for r in results]
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    for row in table:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
    print(f"targets: cold <= 60 s, cached <= 5 s, resident <= 8 B/token ({results[0]['workers']} tokenising "
          "processes; figures contended when other jobs share the cores)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
