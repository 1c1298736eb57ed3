"""Tokenised rows kept on disk: Arrow shards (through ``datasets``), memory-mapped, token ids as int32.

Every stage, recipe and variant that tokenises the same way shares one folder,
``<artifacts root>/cache/tokens/<folder key>/`` (artifacts root: ``REPLICATOR_ARTIFACTS``, default
``artifacts``, as :func:`replicator.core.util.layout.artifacts_root`). The **folder key** hashes what
decides a row's tokens besides the row itself:

* the ``prompt_format`` plugin block as built: its catalogue name and every field, defaults included
  (:func:`replicator.core.run.fingerprint.plain`); a changed ``truncate`` or ``show_lengths`` is a new
  folder, the rest of the recipe (data split, head, loss, calibration, TTA) is not part of it;
* the format's code: the source file of the plugin class and of the shared helpers in
  ``replicator.core.lib``, and the plugin's distribution and version (an edited format never reads
  tokens of the old code);
* the tokenizer: a hash of its serialised state (fast tokenizers: ``backend_tokenizer.to_str()``;
  others: the sentencepiece model or the vocabulary), its class, special tokens and their ids, added
  tokens, chat template, sides and BOS/EOS switches; computed once per tokenizer object;
* the token budget ``max_length``, and :data:`VERSION` of this layout.

``meta.json`` in the folder shows those parts. Inside the folder, a **row key** is a 128-bit hash
(sha256, truncated) of the row's input fields: every field except :data:`NOT_INPUT` (``id``,
``label``, ``teacher``, ``pair``, weight-like fields, ``group``: a hash of the prompt, ``source``:
provenance), plus the ``swapped`` flag and the TTA ``view`` name (the identity view counts as no
view: it is the row unchanged). So the cache is keyed by content: the same texts under another id
are a hit, any text change is a new key, a field the list does not name (model names, a new field)
is part of the key.
A format that read one of :data:`NOT_INPUT` would get stale tokens: none of the built-in ones does.

Each shard is one Arrow file ``<uuid>-<crc32>.arrow`` with columns ``key`` (16 bytes),
``input_ids`` (list of int32), ``length`` (int32) and ``truncated`` (bool). A shard is written under
a temp name and renamed (:func:`replicator.core.util.atomic.atomic_write_bytes`), the uuid keeps writers of
the same folder (threads, processes, machines on a shared disk) apart, and the CRC-32 of the file
bytes in its name is checked when it is opened: a partial or damaged shard is skipped with a warning naming the file
and its rows are tokenised again (never a crash, never wrong tokens). Rows found in two shards
(two writers raced) are the same tokens; either copy serves.

Environment:

``REPLICATOR_TOKEN_CACHE``    ``off`` (or 0/false/no) keeps tokens in memory only, as int32 arrays,
                              and writes nothing; ``on`` (default) uses the folder above.
``REPLICATOR_TOKEN_WORKERS``  processes that tokenise a large batch of misses (default: the usable
                              cores, at most 4; 1 = in this process). Workers are forked (Linux) and
                              used only above :data:`PARALLEL_MIN` misses.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import re
import sys
import threading
import uuid
import weakref
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from replicator.core.errors import ReplicatorError
from replicator.core.util.layout import artifacts_root

log = logging.getLogger(__name__)

ENV = "REPLICATOR_TOKEN_CACHE"
WORKERS_ENV = "REPLICATOR_TOKEN_WORKERS"
#: the layout of the folders and shards; part of the folder key
VERSION = 1
#: row fields no prompt format reads: left out of the row key (``swapped`` and ``view`` go in on their own)
NOT_INPUT = frozenset({"id", "label", "teacher", "pair", "weight", "weights", "sample_weight", "loss_weight",
                       "group", "source", "swapped", "view"})
#: views that leave the row as it is (:class:`replicator.core.predict.views.Identity`): keyed as no view
IDENTITY_VIEWS = frozenset({"", "identity"})
#: misses above which tokenisation goes to worker processes
PARALLEL_MIN = 4000
#: rows per task of a worker (and per pre-tokenised batch in this process)
CHUNK_ROWS = 256
#: rows per shard: a long cold run keeps what it finished when interrupted
SHARD_ROWS = 16384
#: rows tokenised one at a time (``Encoder.__call__`` misses) wait in memory until this many, then one shard
PENDING_ROWS = 1024
#: misses above which a progress bar shows on stderr
PROGRESS_MIN = 2000
SHARD_NAME = re.compile(r"^[0-9a-f]{32}-([0-9a-f]{8})\.arrow$")


# ---------------------------------------------------------------- switches and places


def enabled() -> bool:
    """Whether ``REPLICATOR_TOKEN_CACHE`` lets the cache write to disk (default on)."""
    value = os.environ.get(ENV, "").strip().lower()
    if value in ("", "on", "1", "true", "yes"):
        return True
    if value in ("off", "0", "false", "no"):
        return False
    raise ReplicatorError(f"{ENV}={os.environ[ENV]!r}: expected on or off")


def n_workers() -> int:
    """Processes for many misses: ``REPLICATOR_TOKEN_WORKERS``, else the usable cores (at most 4)."""
    raw = os.environ.get(WORKERS_ENV, "").strip()
    if raw:
        if not raw.isdigit() or int(raw) < 1:
            raise ReplicatorError(f"{WORKERS_ENV}={raw!r}: expected a whole number >= 1")
        return int(raw)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, 4))


def tokens_root() -> Path:
    """``<artifacts root>/cache/tokens``."""

    return artifacts_root() / "cache" / "tokens"


# ---------------------------------------------------------------- keys


_TOKENIZER_HASHES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_TOKENIZER_HASHES_BY_ID: dict[int, tuple[Any, str]] = {}  # tokenizers that refuse weak references
_CODE_HASHES: dict[type, str] = {}


def _tokenizer_state(tok) -> str:
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is not None:
        return backend.to_str()
    sp = getattr(tok, "sp_model", None)
    if sp is not None and hasattr(sp, "serialized_model_proto"):
        return hashlib.sha256(sp.serialized_model_proto()).hexdigest()
    if hasattr(tok, "get_vocab"):
        return json.dumps(sorted(tok.get_vocab().items()), ensure_ascii=True)
    raise ReplicatorError(f"token cache: cannot identify the tokenizer {type(tok).__name__} (no "
                          f"backend_tokenizer, sentencepiece model or vocabulary); set {ENV}=off")


def tokenizer_hash(tok) -> str:
    """sha256 of the tokenizer's serialised state and settings; once per tokenizer object."""
    try:
        return _TOKENIZER_HASHES[tok]
    except KeyError:
        pass
    except TypeError:  # not weak-referenceable
        held = _TOKENIZER_HASHES_BY_ID.get(id(tok))
        if held is not None and held[0] is tok:
            return held[1]
    extra = {
        "class": f"{type(tok).__module__}.{type(tok).__qualname__}",
        "special_tokens": {k: str(v) for k, v in (getattr(tok, "special_tokens_map", None) or {}).items()},
        "special_ids": {k: getattr(tok, f"{k}_token_id", None)
                        for k in ("bos", "eos", "pad", "unk", "sep", "cls")},
        "added": sorted((str(k), v) for k, v in
                        (tok.get_added_vocab() if hasattr(tok, "get_added_vocab") else {}).items()),
        "chat_template": getattr(tok, "chat_template", None),
        **{k: getattr(tok, k, None)
           for k in ("padding_side", "truncation_side", "add_bos_token", "add_eos_token")},
    }
    h = hashlib.sha256(_tokenizer_state(tok).encode("utf-8", "surrogatepass"))
    h.update(json.dumps(extra, sort_keys=True, default=str).encode("utf-8", "surrogatepass"))
    digest = h.hexdigest()
    try:
        _TOKENIZER_HASHES[tok] = digest
    except TypeError:
        _TOKENIZER_HASHES_BY_ID[id(tok)] = (tok, digest)
    return digest


def _code_hash(cls: type) -> str:
    """sha256 over the source file of ``cls`` and the files of ``replicator.core.lib`` (format helpers)."""
    if cls not in _CODE_HASHES:
        h = hashlib.sha256()
        lib = sorted(str(p) for p in (Path(__file__).parent.parent / "lib").glob("*.py"))
        files = [inspect.getsourcefile(cls), *lib]
        for f in files:
            if f is None:
                h.update(f"<no source for {cls.__qualname__}>".encode())
                continue
            h.update(Path(f).name.encode() + b"\0")
            h.update(Path(f).read_bytes())
        _CODE_HASHES[cls] = h.hexdigest()
    return _CODE_HASHES[cls]


def format_block(plugins) -> tuple[str, Any, dict]:
    """(alias, instance, block) of the run's single ``prompt_format`` plugin; block = catalogue name +
    every field as built."""
    from replicator.core.run.fingerprint import plain

    provs = plugins.providers("prompt_format")
    if len(provs) != 1:
        names = ", ".join(f"{a} ({getattr(p, '_use', type(p).__name__)})" for a, p in provs) or "none"
        raise ReplicatorError(f"token cache: the hook 'prompt_format' needs exactly one plugin, found "
                              f"{len(provs)}: {names}")
    alias, inst = provs[0]
    return alias, inst, {"use": getattr(inst, "_use", type(inst).__name__), **plain(inst)}


def folder_description(plugins, tok, max_length: int) -> dict:
    """What the folder key hashes (also written to ``meta.json``)."""
    alias, inst, block = format_block(plugins)
    dist = (getattr(plugins, "origins", None) or {}).get(alias, (None, None))
    return {"version": VERSION, "prompt_format": block, "format_code": _code_hash(type(inst)),
            "format_distribution": list(dist), "tokenizer": tokenizer_hash(tok),
            "max_length": int(max_length)}


def folder_key(description: dict) -> str:
    return hashlib.sha256(json.dumps(description, sort_keys=True, default=str).encode()).hexdigest()[:24]


def view_name(row: dict) -> str:
    view = row.get("view") or ""
    return "" if view in IDENTITY_VIEWS else str(view)


def row_key(row: dict) -> bytes:
    """16-byte key of a row's content: its input fields (all but :data:`NOT_INPUT`), ``swapped`` and the
    view (sha256 over length-prefixed parts, truncated: one hash call per row)."""
    parts = [b"swapped=%d\0view=" % bool(row.get("swapped", False)),
             view_name(row).encode("utf-8", "surrogatepass")]
    for name in sorted(row):
        if name in NOT_INPUT:
            continue
        value = row[name]
        parts.append(b"\0F" + name.encode("utf-8", "surrogatepass") + b"=")
        if isinstance(value, list) and all(v is None or isinstance(v, str) for v in value):
            parts.append(b"L%d" % len(value))  # turns: each length-prefixed, None apart from ""
            for v in value:
                if v is None:
                    parts.append(b"N")
                else:
                    b = v.encode("utf-8", "surrogatepass")
                    parts.append(b"S%d:" % len(b))
                    parts.append(b)
        elif isinstance(value, str):
            b = value.encode("utf-8", "surrogatepass")
            parts.append(b"S%d:" % len(b))
            parts.append(b)
        else:
            b = json.dumps(value, sort_keys=True, ensure_ascii=False, default=repr).encode(
                "utf-8", "surrogatepass")
            parts.append(b"J%d:" % len(b))
            parts.append(b)
    return hashlib.sha256(b"".join(parts)).digest()[:16]


# ---------------------------------------------------------------- the stores


class MemoryStore:
    """The store when the cache is off: int32 arrays in memory, nothing written."""

    folder = None

    def __init__(self):
        self._rows: dict[bytes, tuple[np.ndarray, bool]] = {}
        self._lock = threading.Lock()

    def refresh(self) -> bool:
        return True

    def get(self, key: bytes):
        return self._rows.get(key)

    def __contains__(self, key: bytes) -> bool:
        return key in self._rows

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, keys: Sequence[bytes], seqs: Sequence[np.ndarray], truncated: Sequence[bool]) -> None:
        with self._lock:
            for k, s, t in zip(keys, seqs, truncated, strict=True):
                self._rows[k] = (np.asarray(s, dtype=np.int32), bool(t))

    def add_pending(self, key: bytes, seq: np.ndarray, truncated: bool) -> None:
        self.add([key], [seq], [truncated])

    def flush(self) -> None:
        pass


def _features():
    import datasets

    seq = datasets.List(datasets.Value("int32")) if hasattr(datasets, "List") else datasets.Sequence(
        datasets.Value("int32"))
    return datasets.Features({"key": datasets.Value("binary"), "input_ids": seq,
                              "length": datasets.Value("int32"), "truncated": datasets.Value("bool")})


def _file_crc(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            crc = zlib.crc32(block, crc)
    return crc


class _Chunk:
    """One record batch of a shard: zero-copy numpy views of the memory-mapped columns."""

    __slots__ = ("offsets", "values", "truncated")

    def __init__(self, offsets: np.ndarray, values: np.ndarray, truncated: np.ndarray):
        self.offsets, self.values, self.truncated = offsets, values, truncated


class TokenCache:
    """One folder of shards: an index key -> (chunk, row) over memory-mapped Arrow files.

    :meth:`get` returns a read-only int32 view into the mapped file (no copy); :meth:`add` writes a
    shard (or several, :data:`SHARD_ROWS` rows each) and maps it; :meth:`refresh` maps shards other
    writers added since. Thread-safe.
    """

    def __init__(self, folder: Path, description: dict | None = None, max_length: int | None = None):
        self.folder = Path(folder)
        self.description = description
        self.max_length = max_length if max_length is not None else (description or {}).get("max_length")
        self._index: dict[bytes, int] = {}
        self._chunks: list[_Chunk] = []
        self._tables: list[Any] = []  # the datasets keep their memory maps open
        self._seen: set[str] = set()
        self._pending: tuple[list, list, list] = ([], [], [])
        self._lock = threading.RLock()
        self.skipped: list[Path] = []
        self.refresh()

    # -- reading

    def refresh(self) -> bool:
        """Map every shard of the folder not mapped yet (written by another writer since); False when
        shards this object mapped are gone (the folder was cleared: open it afresh)."""
        with self._lock:
            names = sorted(p.name for p in self.folder.iterdir()) if self.folder.is_dir() else []
            for name in names:
                if name in self._seen or name.startswith(".") or not name.endswith(".arrow"):
                    continue
                self._seen.add(name)
                self._open_shard(self.folder / name)
            return self._seen <= set(names)

    def _open_shard(self, path: Path) -> None:
        m = SHARD_NAME.match(path.name)
        try:
            if m is None:
                raise ValueError("not a shard name (<uuid>-<crc32>.arrow)")
            crc = _file_crc(path)
            if crc != int(m.group(1), 16):
                raise ValueError(f"CRC-32 {crc:08x} does not match the {m.group(1)} of its name "
                                 "(partial or damaged)")
            chunks, keys = self._read_shard(path)
        except Exception as e:  # any unreadable shard: skip it, its rows are tokenised again
            self.skipped.append(path)
            log.warning("token cache: skipping %s (%s: %s); its rows are tokenised again", path,
                        type(e).__name__, e)
            return
        base = len(self._chunks)
        self._chunks.extend(chunks)
        for c, chunk_keys in enumerate(keys):
            code = (base + c) << 32
            self._index.update((k, code | r) for r, k in enumerate(chunk_keys))

    def _read_shard(self, path: Path):
        import datasets
        import pyarrow as pa

        ds = datasets.Dataset.from_file(str(path))  # memory-mapped, not read
        table = ds.data.table
        want = _features().arrow_schema
        for name in want.names:
            found = table.schema.field(name).type if name in table.schema.names else None
            if found is None or not found.equals(want.field(name).type):
                raise ValueError(f"column {name!r}: expected {want.field(name).type}, "
                                 f"found {found or 'none'}")
        chunks, keys = [], []
        cols = [table.column(n).chunks for n in ("key", "input_ids", "length", "truncated")]
        if len({len(c) for c in cols}) != 1 or any(len({len(a) for a in parts}) != 1
                                                   for parts in zip(*cols, strict=True)):
            raise ValueError("columns are not aligned")
        for key_arr, ids_arr, len_arr, trunc_arr in zip(*cols, strict=True):
            if ids_arr.null_count or key_arr.null_count or len_arr.null_count or trunc_arr.null_count:
                raise ValueError("null values")
            if not isinstance(ids_arr, pa.ListArray):
                raise ValueError(f"input_ids is a {type(ids_arr).__name__}")
            offsets = ids_arr.offsets.to_numpy(zero_copy_only=True)
            values = ids_arr.values.to_numpy(zero_copy_only=True)
            lengths = len_arr.to_numpy(zero_copy_only=True)
            if offsets.size != len(ids_arr) + 1 or (offsets.size and offsets[-1] > values.size) or np.any(
                    np.diff(offsets) < 0):
                raise ValueError("input_ids offsets are inconsistent")
            if not np.array_equal(np.diff(offsets), lengths):
                raise ValueError("length column differs from the token lists")
            if self.max_length is not None and lengths.size and int(lengths.max()) > self.max_length:
                raise ValueError(f"a row of {int(lengths.max())} tokens, over the budget {self.max_length}")
            k = key_arr.to_pylist()
            if any(len(x) != 16 for x in k):
                raise ValueError("keys are not 16 bytes")
            chunks.append(_Chunk(offsets, values, trunc_arr.to_numpy(zero_copy_only=False)))
            keys.append(k)
        self._tables.append(ds)
        return chunks, keys

    def get(self, key: bytes):
        """(int32 token ids, truncated) of ``key``, or None."""
        code = self._index.get(key)
        if code is None:
            pend = self._pending_get(key)
            return pend
        c = self._chunks[code >> 32]
        r = code & 0xFFFFFFFF
        return c.values[c.offsets[r]:c.offsets[r + 1]], bool(c.truncated[r])

    def _pending_get(self, key: bytes):
        keys = self._pending[0]
        if not keys:
            return None
        with self._lock:
            try:
                i = keys.index(key)
            except ValueError:
                return None
            return self._pending[1][i], self._pending[2][i]

    def __contains__(self, key: bytes) -> bool:
        return key in self._index or self._pending_get(key) is not None

    def __len__(self) -> int:
        return len(self._index)

    # -- writing

    def add(self, keys: Sequence[bytes], seqs: Sequence[np.ndarray], truncated: Sequence[bool]) -> None:
        """Write the rows as new shard(s) and map them."""
        for start in range(0, len(keys), SHARD_ROWS):
            part = slice(start, start + SHARD_ROWS)
            path = self._write_shard(keys[part], seqs[part], truncated[part])
            with self._lock:
                self._seen.add(path.name)
                self._open_shard(path)

    def add_pending(self, key: bytes, seq: np.ndarray, truncated: bool) -> None:
        """Keep one row in memory; at :data:`PENDING_ROWS` rows they go to disk as one shard."""
        with self._lock:
            self._pending[0].append(key)
            self._pending[1].append(np.asarray(seq, dtype=np.int32))
            self._pending[2].append(bool(truncated))
            full = len(self._pending[0]) >= PENDING_ROWS
        if full:
            self.flush()

    def flush(self) -> None:
        """Write the rows kept by :meth:`add_pending`."""
        with self._lock:
            keys, seqs, truncs = self._pending
            if not keys:
                return
            self.add(keys, seqs, truncs)
            self._pending = ([], [], [])

    def _write_shard(self, keys, seqs, truncated) -> Path:
        import pyarrow as pa
        from datasets.arrow_writer import ArrowWriter

        from replicator.core.util.atomic import atomic_write_bytes, atomic_write_text

        self.folder.mkdir(parents=True, exist_ok=True)
        meta = self.folder / "meta.json"
        if self.description is not None and not meta.exists():
            atomic_write_text(meta, json.dumps(self.description, indent=1, sort_keys=True, default=str)
                              + "\n")
        lengths = np.fromiter((len(s) for s in seqs), dtype=np.int32, count=len(seqs))
        offsets = np.zeros(len(seqs) + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets[1:])
        values = (np.concatenate([np.asarray(s, dtype=np.int32) for s in seqs]) if seqs
                  else np.zeros(0, np.int32))
        table = pa.Table.from_arrays(
            [pa.array(list(keys), pa.binary()), pa.ListArray.from_arrays(pa.array(offsets), pa.array(values)),
             pa.array(lengths), pa.array(np.asarray(truncated, dtype=bool))],
            names=["key", "input_ids", "length", "truncated"])
        stream = pa.BufferOutputStream()  # the shard's bytes first: its name carries their CRC-32
        writer = ArrowWriter(features=_features(), stream=stream, writer_batch_size=max(len(keys), 1))
        writer.write_table(table)
        writer.finalize(close_stream=False)
        data = memoryview(stream.getvalue())
        final = self.folder / f"{uuid.uuid4().hex}-{zlib.crc32(data):08x}.arrow"
        atomic_write_bytes(final, data)  # a unique temp name in the folder, then renamed
        return final

    def nbytes_on_disk(self) -> int:
        return sum(p.stat().st_size for p in self.folder.glob("*.arrow")) if self.folder.is_dir() else 0


_OPEN: dict[Path, TokenCache] = {}
_OPEN_LOCK = threading.Lock()


def open_store(plugins, tok, max_length: int) -> TokenCache | MemoryStore:
    """The store for this format, tokenizer and budget: the process's open :class:`TokenCache` of its
    folder (refreshed), or a :class:`MemoryStore` when ``REPLICATOR_TOKEN_CACHE=off``."""
    if not enabled():
        return MemoryStore()
    desc = folder_description(plugins, tok, max_length)
    folder = (tokens_root() / folder_key(desc)).resolve()
    with _OPEN_LOCK:
        store = _OPEN.get(folder)
        if store is None or not store.refresh():
            store = _OPEN[folder] = TokenCache(folder, desc)
    return store


def forget_open() -> None:
    """Drop the process's open caches (tests, benchmarks: the next open reads the folder afresh)."""
    with _OPEN_LOCK:
        _OPEN.clear()


# ---------------------------------------------------------------- tokenising the misses


_MEMO_CLASSES: dict[type, type] = {}


def _memo_tokenizer(tok, memo: dict):
    """A shallow copy of ``tok`` (same class family: ``isinstance`` holds) whose
    ``tok(text, add_special_tokens=False)`` answers from ``memo`` (filled in batches, and with every
    such call it sees); any other call goes to the tokenizer itself."""
    base = type(tok)
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
    new.__dict__.update(tok.__dict__)
    new.__dict__["_tokcache_memo"] = memo
    return new


def _prewarm(tok, memo: dict, rows: Sequence[dict]) -> None:
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
    out = tok(todo, add_special_tokens=False)
    cols = {k: out[k] for k in out.keys()}
    for i, t in enumerate(todo):
        memo[t] = {k: v[i] for k, v in cols.items()}


def _encode_rows(plugins, tok, max_length: int, rows: Sequence[dict]):
    """[(int32 ids, truncated)] of ``rows`` through the prompt_format hook; the budget is checked."""
    memo: dict = {}
    mtok = _memo_tokenizer(tok, memo)
    _prewarm(tok, memo, rows)
    out = []
    for row in rows:
        out.append(encode_one(plugins, mtok, row, max_length))
    return out


def encode_one(plugins, tok, row: dict, max_length: int) -> tuple[np.ndarray, bool]:
    enc = plugins.one("prompt_format", row=row, tokenizer=tok, max_length=max_length)
    if len(enc.input_ids) > max_length:
        raise ReplicatorError(f"prompt_format returned {len(enc.input_ids)} tokens for row "
                              f"{row.get('id')}, over the budget {max_length}")
    return np.asarray(enc.input_ids, dtype=np.int32), bool(enc.truncated)


_JOB: tuple | None = None  # (plugins, tokenizer, max_length, rows) inherited by forked workers


def _work(bounds: tuple[int, int]):
    plugins, tok, max_length, rows = _JOB
    start, stop = bounds
    try:
        done = _encode_rows(plugins, tok, max_length, rows[start:stop])
    except Exception as e:  # the parent runs the chunk again itself, to raise the real error
        return start, None, f"{type(e).__name__}: {e}"
    return start, [(ids.tobytes(), t) for ids, t in done], None


def encode_many(plugins, tok, max_length: int, rows: Sequence[dict], progress: bool = True,
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
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor, as_completed

            _JOB = (plugins, tok, max_length, rows)
            fork = multiprocessing.get_context("fork")
            # workers tokenise on one thread each (and the fast tokenizer does not warn about the fork)
            parallelism = os.environ.get("TOKENIZERS_PARALLELISM")
            os.environ["TOKENIZERS_PARALLELISM"] = "false"
            with _restore_env("TOKENIZERS_PARALLELISM", parallelism), \
                    ProcessPoolExecutor(min(workers, len(ranges)), mp_context=fork) as ex:
                for fut in as_completed([ex.submit(_work, r) for r in ranges]):
                    start, done, err = fut.result()
                    if done is None:
                        ex.shutdown(wait=False, cancel_futures=True)  # the error now, not after the rest
                        stop = min(start + CHUNK_ROWS, n)
                        _encode_rows(plugins, tok, max_length, rows[start:stop])  # raises the real error
                        raise ReplicatorError(f"prompt_format failed in a worker on rows {start}..{stop - 1} "
                                              f"({err}) but not when run again here")
                    out[start:start + len(done)] = [(np.frombuffer(b, dtype=np.int32), t) for b, t in done]
                    bar.update(len(done))
        else:
            for start, stop in ranges:
                out[start:stop] = _encode_rows(plugins, tok, max_length, rows[start:stop])
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
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"tokenise ({max_length} tokens)", unit="row", file=sys.stderr,
                dynamic_ncols=True, disable=not progress or total < PROGRESS_MIN)


def tokenise_into(store, plugins, tok, max_length: int, rows: Sequence[dict], keys: Sequence[bytes],
                  progress: bool = True) -> None:
    """Tokenise ``rows`` (misses, with their ``keys``) and add them to ``store``, a shard per
    :data:`SHARD_ROWS` rows as they finish (an interrupted run keeps the shards it wrote)."""
    bar = progress_bar(len(rows), max_length, progress)
    try:
        for start in range(0, len(rows), SHARD_ROWS):
            part = slice(start, start + SHARD_ROWS)
            done = encode_many(plugins, tok, max_length, rows[part], progress, bar=bar)
            store.add(keys[part], [d[0] for d in done], [d[1] for d in done])
    finally:
        bar.close()


def group_order(rows: Sequence[dict], idx: Iterable[int]) -> list[int]:
    """``idx`` ordered so that rows with the same prompt (a row and its swap) are neighbours: they
    then share one chunk's tokenised texts."""
    return sorted(idx, key=lambda i: repr(rows[i].get("prompt")))
