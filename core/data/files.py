"""Files of records: the data folder and paths under it, the record formats (JSON array, JSONL,
parquet, CSV; gzip-compressed or not) and their generic readers, and the text of one turn.

No torch here; pandas only inside the parquet reader.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from replicator.core.errors import DataError

#: a lone UTF-16 surrogate (from an unpaired JSON escape such as ``"\\ud83d"``); replaced by U+FFFD
SURROGATE = re.compile("[\ud800-\udfff]")


def data_dir() -> Path:
    """The data folder: ``$REPLICATOR_DATA_DIR``, default ``./data``."""
    return Path(os.environ.get("REPLICATOR_DATA_DIR") or "data")


def resolve_data_path(data_dir, file: str) -> Path:
    """``file`` relative to the data dir, unless it is absolute (``~`` expanded)."""
    p = Path(file).expanduser()
    return p if p.is_absolute() else Path(data_dir) / p


def clean_text(v: Any) -> str:
    """A turn's text: ``None``/NaN -> ``""``, other values as ``str``, lone surrogates -> U+FFFD."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return SURROGATE.sub("\ufffd", str(v))


def plain(v: Any) -> Any:
    """Nested numpy arrays / pyarrow scalars (from parquet) as plain lists, dicts and scalars."""
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    tolist = getattr(v, "tolist", None)
    if tolist is not None and not isinstance(v, (str, bytes)):
        return plain(tolist())
    return v


def open_text(path: Path, errors: str = "strict"):
    """A text file, gzip-compressed or not (by its magic bytes), UTF-8 with an optional BOM."""
    with open(path, "rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    if gz:
        return gzip.open(path, "rt", encoding="utf-8-sig", errors=errors, newline="")
    return open(path, encoding="utf-8-sig", errors=errors, newline="")


def csv_header(reader, file: str) -> list[str]:
    """The header of a CSV file (a leading BOM dropped), or DataError for an empty/unreadable one."""
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # responses can be long
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(file, [("(header)", "", "the file is empty")]) from None
    except csv.Error as e:
        raise DataError(file, [("(header)", "", f"unreadable CSV header: {e}")]) from None
    if header:
        header[0] = header[0].removeprefix("\ufeff")
    return header


def csv_records(reader, header: list[str], problems: list) -> Iterator[tuple[int, str, str, dict]]:
    """``(record number, "line N", "line N" or "lines N-M", record)`` of each CSV record after the header.

    Blank lines are skipped (still counted); a record with another number of fields than the
    header, or an unreadable one (which ends the file), goes to ``problems``.
    """
    line, record = reader.line_num + 1, 0
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            problems.append((f"line {line}", "", f"unreadable CSV record: {e}"))
            return
        record += 1
        span = f"line {line}" if reader.line_num == line else f"lines {line}-{reader.line_num}"
        start, line = line, reader.line_num + 1
        if not fields:  # a blank line
            continue
        if len(fields) != len(header):
            problems.append((f"line {start}", "",
                             f"expected {len(header)} fields (as the header), got {len(fields)}"))
            continue
        yield record, f"line {start}", span, dict(zip(header, fields, strict=True))


def record_format(path: Path) -> str:
    """``json``, ``jsonl``, ``parquet`` or ``csv`` from the file name (``.gz`` ignored)."""
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    for ext, fmt in ((".jsonl", "jsonl"), (".ndjson", "jsonl"), (".json", "json"), (".parquet", "parquet"),
                     (".csv", "csv")):
        if name.endswith(ext):
            return fmt
    return ""


def _read_jsonl(path: Path, file: str) -> list[tuple[str, dict]]:
    out, problems = [], []
    with open_text(path) as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                problems.append((f"line {n}", "(line)", f"invalid JSON ({e.msg} at char {e.pos})"))
                continue
            if not isinstance(rec, dict):
                problems.append((f"line {n}", "(line)",
                                 f"expected a JSON object, got a JSON {type(rec).__name__}"))
                continue
            out.append((f"line {n}", rec))
    if problems:
        raise DataError(file, problems)
    return out


def _read_json(path: Path, file: str) -> list[tuple[str, dict]]:
    with open_text(path) as fh:
        try:
            data = json.load(fh)
        except json.JSONDecodeError as e:
            raise DataError(file, [(f"line {e.lineno}", "(file)", f"invalid JSON: {e.msg}")]) from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise DataError(file, [("(file)", "",
                                f"expected a JSON array of records, got a JSON {type(data).__name__}")])
    problems = [(f"record {i}", "(record)", f"expected a JSON object, got a JSON {type(r).__name__}")
                for i, r in enumerate(data) if not isinstance(r, dict)]
    if problems:
        raise DataError(file, problems)
    return [(f"record {i}", r) for i, r in enumerate(data)]


def _read_parquet(path: Path, file: str) -> list[tuple[str, dict]]:
    import pandas as pd

    try:
        df = pd.read_parquet(path)
    except Exception as e:
        raise DataError(file, [("(file)", "", f"cannot read parquet: {type(e).__name__}: {e}")]) from None
    cols = {c: df[c].tolist() for c in df.columns}
    return [(f"record {i}", {str(c): plain(v[i]) for c, v in cols.items()}) for i in range(len(df))]


def _read_csv(path: Path, file: str) -> list[tuple[str, dict]]:
    with open_text(path) as fh:
        reader = csv.reader(fh)
        header = csv_header(reader, file)
        problems: list = []
        out = [(where, rec) for _, where, _, rec in csv_records(reader, header, problems)]
    if problems:
        raise DataError(file, problems)
    return out


_READERS = {"jsonl": _read_jsonl, "json": _read_json, "parquet": _read_parquet, "csv": _read_csv}


def read_records(path: Path) -> list[tuple[str, dict]]:
    """``(where, record)`` pairs of a JSON array, JSONL(.gz), parquet or CSV(.gz) file of records.

    ``where`` is ``line N`` (JSONL: the physical line; CSV: the record's first line) or
    ``record N`` (JSON array, parquet; 0-based). Unreadable files, invalid JSON lines and records
    that are not objects raise :class:`DataError` naming the file and the line; blank JSONL lines
    are skipped. Parquet values are converted to plain lists/dicts (:func:`plain`). CSV goes
    through the same reader as the competition CSV.
    """
    file, fmt = str(path), record_format(path)
    if fmt not in _READERS:
        raise DataError(file, [("(file)", "",
                                "unknown file type; expected .json, .jsonl(.gz), .parquet or .csv")])
    try:
        return _READERS[fmt](path, file)
    except UnicodeDecodeError as e:
        why = f"bytes are not valid UTF-8 ({e.reason} at byte {e.start})"
        raise DataError(file, [("(file)", "", why)]) from None
    except (OSError, EOFError, csv.Error) as e:
        raise DataError(file, [("(file)", "", f"cannot read: {type(e).__name__}: {e}")]) from None
