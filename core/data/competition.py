"""Reading, validating and splitting the competition data (no torch here).

Competition CSV format (Kaggle ``train.csv`` / ``test.csv``)
-----------------------------------------------------------
train: ``id, model_a, model_b, prompt, response_a, response_b, winner_model_a, winner_model_b,
winner_tie``; test: ``id, prompt, response_a, response_b`` (``model_a``/``model_b`` optional).
:func:`read_competition_csv` returns rows of the common schema (:mod:`replicator.core.rows`)
or raises :class:`~replicator.core.errors.DataError` listing *every* bad row as
``(row id, field, message)``. No row is ever dropped silently and no NaN is ever produced.

Every case is either handled by one of these rules or rejected:

* **Header.** Missing required columns -> rejected, row ``(header)``, naming the columns.
  Required: ``id, prompt, response_a, response_b``; with ``require_labels`` also
  ``model_a, model_b`` and the three label columns. Extra columns (e.g. a pandas index column)
  are ignored. Duplicate column names -> rejected. A leading UTF-8 BOM is ignored.
  Without ``require_labels`` the label columns are optional but all-or-nothing: when all three
  are present they are validated and used, when only some are present the header is rejected.
* **Encoding.** Bytes that are not UTF-8 -> rejected, naming the row id and the field (or
  ``line N`` when the id itself is unreadable).
* **Ragged lines.** A record with a different number of fields than the header -> rejected
  (``line N``).
* **Ids.** Kept as their original text (never converted to numbers). Empty (or blank) id ->
  rejected (``line N``). Duplicate ids -> rejected, naming the id and the lines/rows of all
  its occurrences.
* **Turns.** ``prompt``, ``response_a``, ``response_b`` must be JSON lists whose entries are
  strings or ``null``; invalid JSON, a non-list value, or a non-string entry (number, object,
  ``NaN``) -> rejected. Raw control characters (e.g. a literal newline) inside JSON strings are
  accepted as they are. Rules that repair instead of rejecting:

  - ``null`` entries (``[null]``, ``["hi", null]``) become ``""`` (an empty turn); counted and
    reported in one summary line in the log.
  - Lists of different lengths are padded at the end with ``""`` so the rounds align (the
    shorter side said nothing in that round); counted, one summary line in the log.
  - Lone UTF-16 surrogates from JSON escapes (the real data has unpaired ``"\\ud83d"``) are
    replaced by U+FFFD so tokenizers never crash (paired escapes decode to the real character);
    counted, one summary line in the log.
  - NUL characters (``\\x00``, raw or as a ``\\u0000`` escape) inside a turn are removed (tokenizers
    and C string APIs stop at them); counted, one summary line in the log naming the row ids and
    fields. Rows of the other data sources get the same repair and notice in :func:`collect_rows`.
  - All three lists empty -> rejected (nothing to compare).
* **Labels.** Each of ``winner_model_a, winner_model_b, winner_tie`` must be a finite number
  equal to 0 or 1 (``1``, ``0``, ``1.0`` accepted) and exactly one of them must be 1.
  Anything else (``1,1,0``; ``0,0,0``; ``2``; ``yes``; empty; ``NaN``) -> rejected naming the row
  and the label fields.
* **Models.** Empty ``model_a``/``model_b`` -> ``None`` (unknown model).
* A file with a header but no rows -> rejected.

The same record validation is used for the hub copy (:func:`load_hub_55k`).

Splits
------
:func:`split_valid` is a random hold-out grouped by ``row["group"]`` (the normalised prompt hash),
so duplicate prompts never straddle train/valid; :func:`split_fold` is a
``StratifiedGroupKFold`` on the argmax label. Both are deterministic for a seed.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import random
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

from replicator.core.errors import DataError, ReplicatorError
from replicator.core.rows import LABELS, make_row

TURN_FIELDS = ("prompt", "response_a", "response_b")
MODEL_FIELDS = ("model_a", "model_b")
LABEL_FIELDS = LABELS
LABEL_FIELD_NAME = "/".join(LABELS)

log = logging.getLogger(__name__)

_SURROGATE = re.compile("[\ud800-\udfff]")
# what ``errors="surrogateescape"`` makes of undecodable bytes
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")


def data_dir() -> Path:
    """The data folder: ``$REPLICATOR_DATA_DIR``, default ``./data``."""
    return Path(os.environ.get("REPLICATOR_DATA_DIR") or "data")


# ---------------------------------------------------------------------------------------------
# record validation (shared by the CSV and the hub paths)


class _Stats:
    """Counts of the repairs done by the documented rules, reported once per file."""

    def __init__(self):
        self.nulls: list[str] = []
        self.padded: list[str] = []
        self.surrogates: list[str] = []
        #: "<row id> <field>" of every turn field that had NUL characters (removed)
        self.nuls: list[str] = []

    def report(self, file: str) -> None:
        for ids, what in ((self.nuls, "NUL character(s) (\\x00) removed from the text of the named field(s)"),
                          (self.nulls, "null turn(s) replaced by \"\""),
                          (self.padded, "turn counts differed between prompt/response_a/response_b; "
                                        "shorter lists padded with \"\""),
                          (self.surrogates, "lone UTF-16 surrogate(s) replaced by U+FFFD")):
            if ids:
                eg = ", ".join(ids[:3]) + (", ..." if len(ids) > 3 else "")
                log.info("%s: %d %s: %s (e.g. id %s)", file, len(ids), "field(s)" if ids is self.nuls else "row(s)",
                         what, eg)


def _bad_bytes(text: str) -> bool:
    return bool(_ESCAPED_BYTE.search(text))


def _show_bytes(text: str) -> str:
    m = _ESCAPED_BYTE.search(text)
    assert m is not None
    start = max(0, m.start() - 20)
    snippet = text[start:m.start() + 20].encode("utf-8", "surrogateescape")
    return f"bytes are not valid UTF-8 near {snippet!r}"


def _parse_turns(raw: Any, field: str) -> tuple[list[str] | None, str | None, bool, bool]:
    """(turns, error, had_null, had_surrogate) of one JSON-encoded list of turns."""
    if isinstance(raw, list):
        value = raw
    else:
        if not isinstance(raw, str):
            return None, f"expected a JSON list of strings, got {type(raw).__name__}", False, False
        try:
            value = json.loads(raw, strict=False)
        except (json.JSONDecodeError, RecursionError) as e:
            shown = raw if len(raw) <= 40 else raw[:40] + "..."
            return None, f"invalid JSON ({e.msg} at char {getattr(e, 'pos', '?')}): {shown!r}", False, False
    if not isinstance(value, list):
        return None, f"expected a JSON list of strings, got a JSON {type(value).__name__}: {raw!r:.60}", False, False
    out, had_null, had_sur = [], False, False
    for i, t in enumerate(value):
        if t is None:
            had_null = True
            out.append("")
        elif isinstance(t, str):
            if _SURROGATE.search(t):
                had_sur = True
                t = _SURROGATE.sub("\ufffd", t)
            out.append(t)
        else:
            return None, f"turn {i} is a {type(t).__name__} ({t!r:.40}), expected a string or null", False, False
    return out, None, had_null, had_sur


def _parse_label(values: list[Any]) -> tuple[list[float] | None, str | None]:
    nums = []
    for v in values:
        if isinstance(v, bool):
            v = int(v)
        if isinstance(v, (int, float)):
            x = float(v)
        else:
            s = str(v).strip() if v is not None else ""
            try:
                x = float(s)
            except ValueError:
                return None, f"labels must be 0 or 1, got {values!r}"
        if not math.isfinite(x) or x not in (0.0, 1.0):
            return None, f"labels must be 0 or 1, got {values!r}"
        nums.append(x)
    if sum(nums) != 1.0:
        return None, f"labels must be one-hot (exactly one of them 1), got {values!r}"
    return nums, None


def _validate_record(rec: dict[str, Any], where: str, require_labels: bool, has_labels: bool,
                     stats: _Stats, source: str) -> tuple[dict | None, list[tuple[str, str, str]]]:
    """Build one row from a record of raw field values, or return its problems."""
    problems: list[tuple[str, str, str]] = []
    rid_raw = rec.get("id")
    rid = "" if rid_raw is None else str(rid_raw)
    if _bad_bytes(rid):
        return None, [(where, "id", _show_bytes(rid))]
    if not rid.strip():
        return None, [(where, "id", "empty id")]
    for field, v in rec.items():
        if field != "id" and isinstance(v, str) and _bad_bytes(v):
            problems.append((rid, field, _show_bytes(v)))
    if problems:
        return None, problems

    turns: dict[str, list[str]] = {}
    had_null = had_sur = False
    for field in TURN_FIELDS:
        parsed, err, n, s = _parse_turns(rec.get(field), field)
        if err:
            problems.append((rid, field, err))
        else:
            turns[field] = parsed  # type: ignore[assignment]
            had_null |= n
            had_sur |= s

    label = None
    if has_labels:
        label, err = _parse_label([rec.get(f) for f in LABEL_FIELDS])
        if err:
            problems.append((rid, LABEL_FIELD_NAME, err))
    if problems:
        return None, problems

    stats.nuls.extend(f"{rid} {f}" for f in strip_nul(turns))
    lens = [len(turns[f]) for f in TURN_FIELDS]
    if max(lens) == 0:
        return None, [(rid, "prompt", "prompt, response_a and response_b are all empty lists")]
    if len(set(lens)) > 1:
        n = max(lens)
        for f in TURN_FIELDS:
            turns[f] = turns[f] + [""] * (n - len(turns[f]))
        stats.padded.append(rid)
    if had_null:
        stats.nulls.append(rid)
    if had_sur:
        stats.surrogates.append(rid)

    models = []
    for f in MODEL_FIELDS:
        m = rec.get(f)
        models.append(None if m is None or (isinstance(m, float) and math.isnan(m)) or str(m) == "" else str(m))
    row = make_row(rid, turns["prompt"], turns["response_a"], turns["response_b"], label=label,
                   model_a=models[0], model_b=models[1], source=source)
    return row, []


def strip_nul(row: dict) -> list[str]:
    """Remove NUL characters from the turn fields of ``row`` (in place); the fields that had any."""
    fields = [f for f in TURN_FIELDS if any("\x00" in t for t in row.get(f) or [])]
    for f in fields:
        row[f] = [t.replace("\x00", "") for t in row[f]]
    return fields


def _duplicate_problems(seen: dict[str, list[str]]) -> list[tuple[str, str, str]]:
    return [(rid, "id", f"duplicate id: appears {len(w)} times ({', '.join(w)})")
            for rid, w in seen.items() if len(w) > 1]


def _required_columns(require_labels: bool) -> list[str]:
    cols = ["id", *TURN_FIELDS]
    if require_labels:
        cols[1:1] = list(MODEL_FIELDS)
        cols += list(LABEL_FIELDS)
    return cols


def _check_header(columns: list[str], require_labels: bool) -> tuple[bool, list[tuple[str, str, str]]]:
    """(has_labels, problems) of a header."""
    problems = []
    missing = [c for c in _required_columns(require_labels) if c not in columns]
    if missing:
        problems.append(("(header)", ", ".join(missing),
                         f"missing required column(s) {', '.join(missing)}; found: {', '.join(columns) or '(none)'}"))
    dups = sorted({c for c in columns if columns.count(c) > 1})
    if dups:
        problems.append(("(header)", ", ".join(dups), "duplicate column name(s)"))
    present = [c for c in LABEL_FIELDS if c in columns]
    if not require_labels and 0 < len(present) < len(LABEL_FIELDS):
        absent = [c for c in LABEL_FIELDS if c not in columns]
        problems.append(("(header)", ", ".join(absent),
                         f"label columns are all-or-nothing: found {', '.join(present)} but not {', '.join(absent)}"))
    return len(present) == len(LABEL_FIELDS), problems


def _checked_rows(file: str, rows: list[dict], problems: list[tuple[str, str, str]], seen: dict[str, list[str]],
                  stats: _Stats, empty: str) -> list[dict]:
    """``rows`` once the file is read: DataError listing every problem (duplicate ids included, and
    ``empty`` when there are no rows at all), else the repair summary on stderr and the rows."""
    problems.extend(_duplicate_problems(seen))
    if not problems and not rows:
        problems.append(("(file)", "", empty))
    if problems:
        raise DataError(file, problems)
    stats.report(file)
    return rows


# ---------------------------------------------------------------------------------------------
# the competition CSV


def _csv_header(reader, file: str) -> list[str]:
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


def _csv_records(reader, header: list[str], problems: list) -> Iterator[tuple[int, str, str, dict]]:
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
            problems.append((f"line {start}", "", f"expected {len(header)} fields (as the header), got {len(fields)}"))
            continue
        yield record, f"line {start}", span, dict(zip(header, fields, strict=True))


def read_competition_csv(path: str | Path, require_labels: bool, source: str = "kaggle_csv") -> list[dict]:
    """Read a Kaggle ``train.csv``/``test.csv`` (``.gz`` too) into validated rows (rules: module docstring)."""
    path = Path(path)
    file = str(path)
    with _open_text(path, errors="surrogateescape") as fh:
        reader = csv.reader(fh)
        header = _csv_header(reader, file)
        bad_header = [c for c in header if _bad_bytes(c)]
        if bad_header:
            raise DataError(file, [("(header)", "", _show_bytes(bad_header[0]))])
        has_labels, problems = _check_header(header, require_labels)
        if problems:
            raise DataError(file, problems)
        rows: list[dict] = []
        seen: dict[str, list[str]] = {}
        stats = _Stats()
        for record, where, span, rec in _csv_records(reader, header, problems):
            row, probs = _validate_record(rec, where, require_labels, has_labels, stats, source)
            rid = rec["id"]
            if rid.strip() and not _bad_bytes(rid):
                seen.setdefault(rid, []).append(f"{span}, row {record}")
            if probs:
                problems.extend(probs)
            else:
                rows.append(row)  # type: ignore[arg-type]
    return _checked_rows(file, rows, problems, seen, stats, "no data rows after the header")


# ---------------------------------------------------------------------------------------------
# the hub copy


def hub_reachable(timeout: float = 3) -> bool:
    """Whether huggingface.co answers (False at once when ``HF_HUB_OFFLINE`` is set)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return False
    import urllib.request

    try:
        req = urllib.request.Request("https://huggingface.co", method="HEAD")
        with urllib.request.urlopen(req, timeout=timeout):
            return True
    except Exception:
        return False


def load_hub_55k(hub_id: str, source: str = "kaggle_csv") -> list[dict]:
    """The hub copy of the competition train set, validated like :func:`read_competition_csv`."""
    ds = load_hub_dataset(hub_id)
    return rows_from_records(ds, f"hf://datasets/{hub_id}", require_labels=True, source=source)


def load_hub_dataset(hub_id: str, split: str = "train", what: str = "the dataset", hint: str = ""):
    """Split ``split`` of the Hugging Face dataset ``hub_id`` (``datasets.load_dataset``).

    Any failure -> :class:`ReplicatorError` ``"hf://datasets/<hub_id>: could not load <what> from the
    Hugging Face hub<hint>: <error>"`` (``hint``: e.g. how to get access to a gated dataset).
    """
    try:
        from datasets import load_dataset

        return load_dataset(hub_id, split=split)
    except Exception as e:
        raise ReplicatorError(f"hf://datasets/{hub_id}: could not load {what} from the Hugging Face hub{hint}: "
                              f"{type(e).__name__}: {e}") from None


def rows_from_records(records, file: str, require_labels: bool, source: str = "kaggle_csv") -> list[dict]:
    """Validated rows from an iterable of dicts with the competition columns (hub, DataFrame)."""
    columns = list(getattr(records, "column_names", None) or [])
    it = iter(records)
    if not columns:
        records = list(it)
        columns = list(records[0]) if records else []
        it = iter(records)
    has_labels, problems = _check_header(columns, require_labels)
    if problems:
        raise DataError(file, problems)
    rows, seen, stats = [], {}, _Stats()
    for i, rec in enumerate(it):
        rec = {k: _as_text(v) if k not in TURN_FIELDS else v for k, v in rec.items()}
        row, probs = _validate_record(rec, f"record {i}", require_labels, has_labels, stats, source)
        rid = rec.get("id") or ""
        if rid.strip():
            seen.setdefault(rid, []).append(f"record {i}")
        if probs:
            problems.extend(probs)
        else:
            rows.append(row)
    return _checked_rows(file, rows, problems, seen, stats, "no data rows")


def _as_text(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


# ---------------------------------------------------------------------------------------------
# splits


def split_valid(rows: list[dict], valid_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Random hold-out of about ``valid_fraction`` of the rows, whole prompt groups at a time.

    Groups are shuffled with ``seed`` (independently of the input order) and moved to valid until
    it holds at least ``round(valid_fraction * len(rows))`` rows. Both parts keep input order.
    """
    if not 0 <= valid_fraction < 1:
        raise ValueError(f"valid_fraction must be in [0, 1), got {valid_fraction}")
    target = round(valid_fraction * len(rows))
    sizes: dict[str, int] = {}
    for r in rows:
        sizes[r["group"]] = sizes.get(r["group"], 0) + 1
    groups = sorted(sizes)
    random.Random(seed).shuffle(groups)
    valid_groups, n = set(), 0
    for g in groups:
        if n >= target:
            break
        valid_groups.add(g)
        n += sizes[g]
    train = [r for r in rows if r["group"] not in valid_groups]
    valid = [r for r in rows if r["group"] in valid_groups]
    return train, valid


def split_fold(rows: list[dict], folds: int, fold: int, seed: int) -> tuple[list[dict], list[dict]]:
    """Fold ``fold`` of a ``StratifiedGroupKFold`` (stratified on the argmax label, grouped by prompt)."""
    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    if not 0 <= fold < folds:
        raise ValueError(f"fold must be in [0, {folds}), got {fold}")
    unlabeled = [r["id"] for r in rows if r.get("label") is None]
    if unlabeled:
        raise ValueError(f"split_fold needs labelled rows; {len(unlabeled)} have none (e.g. id {unlabeled[0]})")
    n_groups = len({r["group"] for r in rows})
    if n_groups < folds:
        raise ValueError(f"cannot make {folds} folds from {n_groups} distinct prompt group(s)")
    import numpy as np
    from sklearn.model_selection import StratifiedGroupKFold

    y = np.array([int(np.argmax(r["label"])) for r in rows])
    groups = np.array([r["group"] for r in rows])
    skf = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for k, (tr, va) in enumerate(skf.split(np.zeros(len(rows)), y, groups)):
        if k == fold:
            return [rows[i] for i in sorted(tr)], [rows[i] for i in sorted(va)]
    raise AssertionError("unreachable")


def copy_row(row: dict) -> dict:
    """A copy deep enough that editing it cannot reach the original (strings are immutable)."""
    out = dict(row)
    for k in ("prompt", "response_a", "response_b", "label"):
        if out.get(k) is not None:
            out[k] = list(out[k])
    if out.get("teacher"):
        out["teacher"] = {k: list(v) for k, v in out["teacher"].items()}
    return out


# ---------------------------------------------------------------------------------------------
# helpers for the extra-data sources (arena 33k, UltraFeedback pairs, HH-RLHF, pseudo-label pools)


def resolve_data_path(data_dir, file: str) -> Path:
    """``file`` relative to the data dir, unless it is absolute (``~`` expanded)."""
    p = Path(file).expanduser()
    return p if p.is_absolute() else Path(data_dir) / p


def clean_text(v: Any) -> str:
    """A turn's text: ``None``/NaN -> ``""``, other values as ``str``, lone surrogates -> U+FFFD."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return _SURROGATE.sub("\ufffd", str(v))


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


def _open_text(path: Path, errors: str = "strict"):
    """A text file, gzip-compressed or not (by its magic bytes), UTF-8 with an optional BOM."""
    import gzip

    with open(path, "rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    if gz:
        return gzip.open(path, "rt", encoding="utf-8-sig", errors=errors, newline="")
    return open(path, encoding="utf-8-sig", errors=errors, newline="")


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
    with _open_text(path) as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                problems.append((f"line {n}", "(line)", f"invalid JSON ({e.msg} at char {e.pos})"))
                continue
            if not isinstance(rec, dict):
                problems.append((f"line {n}", "(line)", f"expected a JSON object, got a JSON {type(rec).__name__}"))
                continue
            out.append((f"line {n}", rec))
    if problems:
        raise DataError(file, problems)
    return out


def _read_json(path: Path, file: str) -> list[tuple[str, dict]]:
    with _open_text(path) as fh:
        try:
            data = json.load(fh)
        except json.JSONDecodeError as e:
            raise DataError(file, [(f"line {e.lineno}", "(file)", f"invalid JSON: {e.msg}")]) from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise DataError(file, [("(file)", "", f"expected a JSON array of records, got a JSON {type(data).__name__}")])
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
    with _open_text(path) as fh:
        reader = csv.reader(fh)
        header = _csv_header(reader, file)
        problems: list = []
        out = [(where, rec) for _, where, _, rec in _csv_records(reader, header, problems)]
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
        raise DataError(file, [("(file)", "", "unknown file type; expected .json, .jsonl(.gz), .parquet or .csv")])
    try:
        return _READERS[fmt](path, file)
    except UnicodeDecodeError as e:
        raise DataError(file, [("(file)", "", f"bytes are not valid UTF-8 ({e.reason} at byte {e.start})")]) from None
    except (OSError, EOFError, csv.Error) as e:
        raise DataError(file, [("(file)", "", f"cannot read: {type(e).__name__}: {e}")]) from None


def seeded_coin(seed: int, key: str) -> bool:
    """A fair coin flip that depends only on ``seed`` and ``key`` (e.g. a row id), not on row order."""
    import hashlib

    return hashlib.sha256(f"{seed}\x1f{key}".encode("utf-8", "surrogatepass")).digest()[0] & 1 == 1


def drop_valid_groups(rows: list[dict], valid_groups, source: str) -> list[dict]:
    """Copies of the rows whose prompt group is not held out (``ctx.held_out_groups``: validation and
    test prompts); the count dropped is logged."""
    valid = valid_groups or set()
    out = [copy_row(r) for r in rows if r["group"] not in valid]
    if len(out) < len(rows):
        log.info("%s: dropped %d of %d row(s) whose prompt is in the validation or test split",
                 source, len(rows) - len(out), len(rows))
    return out


def sample_rows(rows: list[dict], max_rows: int, seed: int) -> list[dict]:
    """At most ``max_rows`` rows sampled with ``seed`` in their original order (0 = all)."""
    if not max_rows or len(rows) <= max_rows:
        return rows
    keep = sorted(random.Random(seed).sample(range(len(rows)), max_rows))
    return [rows[i] for i in keep]


# ---------------------------------------------------------------------------------------------
# the rows of one stage (through the data_sources hook)


def stage_rows_error(stage: str, split: str, why: str) -> NoReturn:
    """The one error for a stage's rows (a split missing or empty, rows without labels, a leak):
    a :class:`DataError` naming the stage, the split and why."""
    raise DataError(f"stage {stage or 'main'}", [(f"({split} split)", "", why)])


def _repair_nul(rows: list[dict]) -> None:
    """NUL characters removed from the turns of any source's rows (the competition CSV's are gone
    already), the prompt group recomputed; one notice per source naming rows and fields."""
    from replicator.core.rows import prompt_group

    found: dict[str, list[str]] = {}
    for r in rows:
        fields = strip_nul(r)
        if fields:
            r["group"] = prompt_group(r["prompt"])
            found.setdefault(r.get("source") or "(unknown source)", []).extend(f"{r['id']} {f}" for f in fields)
    for source, where in found.items():
        eg = ", ".join(where[:3]) + (", ..." if len(where) > 3 else "")
        log.info("%s: %d field(s): NUL character(s) (\\x00) removed from the text of the named field(s) "
                 "(e.g. id %s)", source, len(where), eg)


def collect_rows(plugins, ctx) -> tuple[list[dict], list[dict]]:
    """Validation rows first (so train sources can de-duplicate against them), then training rows.

    Raises :func:`stage_rows_error` when a split is empty, a training row shares a prompt with a
    validation row, or a row has no label.
    """
    def split(name: str) -> list[dict]:
        return [r for rows in plugins.all("data_sources", split=name, ctx=ctx) if rows for r in rows]

    valid = split("valid")
    ctx.valid_groups = {r["group"] for r in valid}
    ctx.test_groups = {r["group"] for r in split("test")}
    train = split("train")
    if not train:
        stage_rows_error(ctx.stage, "train", "no training rows (no data source fed the 'train' split)")
    if not valid:
        stage_rows_error(ctx.stage, "valid", "no validation rows (a data source must feed the 'valid' split)")
    leaked = [r["id"] for r in train if r["group"] in ctx.valid_groups]
    if leaked:
        stage_rows_error(ctx.stage, "train", f"{len(leaked)} training rows share a prompt with validation rows "
                     f"(first: {leaked[0]}); a data source did not de-duplicate against ctx.valid_groups")
    _repair_nul(train + valid)
    for name, rows in (("train", train), ("valid", valid)):
        bad = [r["id"] for r in rows if r.get("label") is None]
        if bad:
            stage_rows_error(ctx.stage, name, f"{len(bad)} rows have no label (first: {bad[0]})")
    return train, valid
