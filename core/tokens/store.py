"""Tokenised rows kept on disk: Arrow shards (through ``datasets``), memory-mapped, token ids as int32,
one folder per folder key (:mod:`replicator.core.tokens.keys`), rows found by row key.

Each shard is one Arrow file ``<uuid>-<crc32>.arrow`` with columns ``key`` (16 bytes),
``input_ids`` (list of int32), ``length`` (int32) and ``truncated`` (bool). A shard is written under
a temp name and renamed (:func:`replicator.core.util.atomic.atomic_write_bytes`), the uuid keeps writers
of the same folder (threads, processes, machines on a shared disk) apart, and the CRC-32 of the file
bytes in its name is checked when it is opened: a partial or damaged shard is skipped with a warning
naming the file and its rows are tokenised again (never a crash, never wrong tokens). Rows found in
two shards (two writers raced) are the same tokens; either copy serves.

Environment:

``REPLICATOR_TOKEN_CACHE``    ``off`` (or 0/false/no) keeps tokens in memory only, as int32 arrays,
                              and writes nothing; ``on`` (default) uses the folder above.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import uuid
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from replicator.core.errors import ReplicatorError
from replicator.core.tokens.keys import folder_description, folder_key
from replicator.core.util.atomic import atomic_write_bytes, atomic_write_text
from replicator.core.util.layout import artifacts_root

log = logging.getLogger(__name__)

ENV = "REPLICATOR_TOKEN_CACHE"
#: rows per shard: a long cold run keeps what it finished when interrupted
SHARD_ROWS = 16384
#: rows tokenised one at a time (``Encoder.__call__`` misses) wait in memory until this many, then one shard
PENDING_ROWS = 1024
SHARD_NAME = re.compile(r"^[0-9a-f]{32}-([0-9a-f]{8})\.arrow$")


def enabled() -> bool:
    """Whether ``REPLICATOR_TOKEN_CACHE`` lets the cache write to disk (default on)."""
    value = os.environ.get(ENV, "").strip().lower()
    if value in ("", "on", "1", "true", "yes"):
        return True
    if value in ("off", "0", "false", "no"):
        return False
    raise ReplicatorError(f"{ENV}={os.environ[ENV]!r}: expected on or off")


def tokens_root() -> Path:
    """``<artifacts root>/cache/tokens``."""
    return artifacts_root() / "cache" / "tokens"


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
            return self._pending_get(key)
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


def open_store(plugins, tokenizer, max_length: int) -> TokenCache | MemoryStore:
    """The store for this format, tokenizer and budget: the process's open :class:`TokenCache` of its
    folder (refreshed), or a :class:`MemoryStore` when ``REPLICATOR_TOKEN_CACHE=off``."""
    if not enabled():
        return MemoryStore()
    description = folder_description(plugins, tokenizer, max_length)
    folder = (tokens_root() / folder_key(description)).resolve()
    with _OPEN_LOCK:
        store = _OPEN.get(folder)
        if store is None or not store.refresh():
            store = _OPEN[folder] = TokenCache(folder, description)
    return store


def forget_open() -> None:
    """Drop the process's open caches (tests, benchmarks: the next open reads the folder afresh)."""
    with _OPEN_LOCK:
        _OPEN.clear()
