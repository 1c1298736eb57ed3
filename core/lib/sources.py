"""Shared helpers of the data-source plugins (kaggle_csv, arena_33k, ultrafeedback_pairs, hh_rlhf, ...).

Plain functions, not a base class: every source stays a plain frozen dataclass and calls these.

* :func:`max_rows_field` and :func:`check_source_params` -- the ``max_rows`` parameter, the common
  ``__post_init__`` checks (the declared bounds, the file parameter) and the per-instance load cache.
* :func:`find_data_files` -- a file, or every record file under a folder, in name order.
* :func:`file_stamp` and :func:`cached` -- a load cache keyed by the files' identity (path,
  mtime, size) and the seed, holding one entry per slot, so a changed file or seed reloads.
* :func:`hub_way`, :func:`missing_data_message` and :func:`missing_file` -- the "not found; to
  provide it, ..." message a source's ``data_check`` hook returns; :func:`missing_data_error` --
  the error its loader raises with those messages when the data is still missing at load time.
* :func:`suffix_repeated_ids` -- ``-f2``, ``-f3``, ... for ids repeated across several files.
* :func:`hard_label` -- the one-hot argmax of a soft label (``hard_labels`` / ``hard`` options).
* :func:`train_rows` -- the ``data_sources`` hook of a train-only extra-data source.
* :func:`files_or_hub_rows` and :func:`files_or_hub_check` -- the loader and the ``data_check`` of a
  source that reads ``file`` (a file or a folder) or, when it is missing, the hub dataset ``hub_id``.

Row sampling is :func:`replicator.core.data.splits.sample_rows` (seeded, keeps row order).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from replicator.core.data import hub
from replicator.core.data.files import read_records, record_format, resolve_data_path
from replicator.core.data.splits import drop_valid_groups, sample_rows
from replicator.core.errors import DataError, ReplicatorError
from replicator.core.params import ParamError, check_params, param

log = logging.getLogger(__name__)

RECORD_EXTS = ("json", "jsonl", "parquet", "csv")


MAX_ROWS_DOC = "use at most this many rows, sampled with the seed; 0 = all"


def max_rows_field(doc: str = MAX_ROWS_DOC):
    """The ``max_rows`` parameter of a source (0 = all rows, never negative)."""
    return param(0, doc, ge=0)


def check_source_params(source: Any, file_field: str | None = "file") -> None:
    """Check the declared bounds of ``source``'s parameters (``max_rows >= 0``, ...) and that
    ``file_field`` is not empty (:class:`~replicator.core.params.ParamError`, a ValueError); give
    ``source`` its load cache."""
    check_params(source)
    if file_field is not None and not getattr(source, file_field):
        raise ParamError(file_field, f"{file_field} must not be empty")
    object.__setattr__(source, "_cache", {})


def find_data_files(data_dir, file: str, exts: Sequence[str] = RECORD_EXTS) -> list[Path]:
    """``[file]`` when it is a file; every file under the folder ``file`` whose record format is one of
    ``exts``, in name order; ``[]`` when it does not exist (``file`` is relative to the data dir or
    absolute)."""
    p = resolve_data_path(data_dir, file)
    if p.is_file():
        return [p]
    if p.is_dir():
        return sorted(f for f in p.rglob("*") if f.is_file() and record_format(f) in exts)
    return []


def file_stamp(paths: Iterable[Path]) -> tuple:
    """The identity of some files for a cache key: (resolved path, mtime in ns, size) of each."""
    out = []
    for p in paths:
        st = p.stat()
        out.append((str(p.resolve()), st.st_mtime_ns, st.st_size))
    return tuple(out)


def cached(source: Any, key: tuple, load: Callable[[], Any], slot: str = "rows") -> Any:
    """``load()``, remembered in ``source``'s cache under ``slot`` until ``key`` changes.

    One entry per slot: a new key (another seed, a changed file) replaces the slot's value. The
    cache is the ``_cache`` dict that :func:`check_source_params` puts on the instance.
    """
    cache = source._cache
    hit = cache.get(slot)
    if hit is not None and hit[0] == key:
        return hit[1]
    value = load()
    cache[slot] = (key, value)
    return value


def hub_way(hub_id: str, gated: bool = False) -> str:
    """The "make the hub reachable" way to provide data that the hub dataset ``hub_id`` can replace."""
    why = ("it is gated: accept its terms and set HF_TOKEN; the hub is not reachable now" if gated
           else "it is not reachable now")
    return (f"make the Hugging Face hub reachable so {hub_id} can be downloaded ({why}, or HF_HUB_OFFLINE "
            "is set)")


def missing_data_message(what: str, path, ways: Sequence[str], *, field: str = "file",
                         hub_id: str | None = None, gated: bool = False, also: Sequence[str] = (),
                         provide: str = "it") -> str:
    """``"<what>: <path>; to provide it, <way>; or <way>..."``.

    The ways are ``ways``, then giving ``field`` as an absolute path, then (with ``hub_id``) making
    the hub reachable (:func:`hub_way`), then ``also``.
    """
    ways = [*ways, f"give {field} as an absolute path"]
    if hub_id is not None:
        ways.append(hub_way(hub_id, gated))
    ways += also
    return f"{what}: {path}; to provide {provide}, " + "; or ".join(ways)


def missing_file(path: Path | None, what: str, ways: Sequence[str], **kw) -> list[str]:
    """``[]`` when ``path`` is a file (or None: nothing to read), else ``[missing_data_message(...)]``
    (``kw``: that function's keyword arguments)."""
    if path is None or path.is_file():
        return []
    return [missing_data_message(what, path, ways, **kw)]


def missing_data_error(problems: Sequence[str]):
    """The :class:`~replicator.core.errors.ReplicatorError` a loader raises when its data is missing;
    ``problems`` is the source's ``data_check`` answer (the messages of :func:`missing_data_message`)."""
    return ReplicatorError("; ".join(problems) or "data files changed while loading (they were there at "
                           "resolve time); run again")


def hard_label(label: Sequence[float]) -> list[float]:
    """The one-hot vector of ``label``'s largest entry (the first one on ties)."""
    k = max(range(len(label)), key=lambda j: label[j])
    return [float(j == k) for j in range(len(label))]


def suffix_repeated_ids(rows: list[dict]) -> list[dict]:
    """Give the 2nd, 3rd, ... row with an id seen before (e.g. in several files) the suffix ``-f2``,
    ``-f3``, ..."""
    seen: dict[str, int] = {}
    for r in rows:
        n = seen[r["id"]] = seen.get(r["id"], 0) + 1
        if n > 1:
            r["id"] = f"{r['id']}-f{n}"
    return rows


def train_rows(split: str, ctx, load: Callable[[Any, int], list[dict]], source: str) -> list[dict] | None:
    """The ``data_sources`` answer of a train-only source: ``None`` for other splits, else copies of
    ``load(ctx.data_dir, ctx.seed)`` without the rows whose prompt is in the validation split."""
    if split != "train":
        return None
    return drop_valid_groups(load(ctx.data_dir, ctx.seed), ctx.held_out_groups, source)


def files_or_hub_rows(source: Any, data_dir, seed: int, name: str, read_file: Callable[[Path], list[dict]],
                      read_hub: Callable[[], list[dict]], hub_key: str,
                      finish: Callable[[list[dict]], list[dict]] = lambda rows: rows) -> list[dict]:
    """The rows of a source that reads ``source.file`` (a file, or the record files of a folder, each by
    ``read_file``) or, when there is none and the hub is reachable, the hub dataset ``source.hub_id``
    (``read_hub()``; ``hub_key`` names it and its split). Ids repeated across files get suffixes, then
    ``finish(rows)`` (e.g. dedup), then at most ``source.max_rows`` rows sampled with the seed; cached
    by the files' identity (or ``hub_key``) and the seed. ``name`` is the source's name in log lines."""
    files = find_data_files(data_dir, source.file)

    def load() -> list[dict]:
        if files:
            rows = [r for f in files for r in read_file(f)]
        elif source.hub_id is not None and hub.hub_reachable():
            log.info("%s: %s not found; loading hub dataset %s", name,
                     resolve_data_path(data_dir, source.file), hub_key)
            rows = read_hub()
        else:
            raise missing_data_error(source.data_check(data_dir))
        rows = finish(suffix_repeated_ids(rows))  # several files may repeat an id
        return sample_rows(rows, source.max_rows, seed)

    stamp = file_stamp(files) if files else f"hub:{hub_key}"
    return cached(source, (stamp, seed), load)


def files_or_hub_check(source: Any, data_dir, what: str, ways: Sequence[str], **kw) -> list[str]:
    """The ``data_check`` answer of a source read by :func:`files_or_hub_rows`: ``[]`` when ``source.file``
    has record files or the hub can serve ``source.hub_id``, else ``"<what> not found"`` (``"<what> has no
    .json/... file"`` for a folder) as a :func:`missing_data_message` (``kw``: its keyword arguments)."""
    if find_data_files(data_dir, source.file) or (source.hub_id is not None and hub.hub_reachable()):
        return []
    p = resolve_data_path(data_dir, source.file)
    state = f"has no {'/'.join('.' + e for e in RECORD_EXTS)} file" if p.is_dir() else "not found"
    return [missing_data_message(f"{what} {state}", p, ways, hub_id=source.hub_id, **kw)]


def jsonl_rows(source: Any, path: Path, seed: int, convert: Callable[[list, str], list[dict]],
               missing: Callable[[], list[str]]) -> list[dict]:
    """The rows of one JSONL(.gz) file: ``convert(records, file)`` on its records, then ``max_rows``
    of them sampled with ``seed`` (row order kept); cached on ``source`` by the file's identity and
    the seed. A missing file raises the ``missing()`` problems (the plugin's ``data_check``)."""
    if not path.is_file():
        raise missing_data_error(missing())

    def load() -> list[dict]:
        if record_format(path) != "jsonl":
            raise DataError(str(path), [("(file)", "", "expected a .jsonl or .jsonl.gz file")])
        return sample_rows(convert(read_records(path), str(path)), source.max_rows, seed)

    return cached(source, (file_stamp([path]), seed), load)
