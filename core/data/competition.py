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
* **Ids.** Kept as their original text (never converted to numbers, never altered). Empty (or
  blank) id -> rejected (``line N``). An id with leading or trailing whitespace (``"2618015469 "``)
  or a control character (NUL, tab, newline, DEL, ...) anywhere -> rejected (``line N``, the id
  shown with its escapes): such an id is refused rather than normalised, so that the data is never
  silently altered and ``2618015469`` and ``2618015469 `` can never both pass as different rows nor a
  NUL reach a submission. Duplicate ids -> rejected, naming the id and the lines/rows of all
  its occurrences. The same rules hold for every file read here: training, test and
  pseudo-label CSVs and the hub copy.
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

The same record validation is used for the hub copy (:func:`~replicator.core.data.hub.load_hub_55k`,
through :func:`rows_from_records`).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
from pathlib import Path
from typing import Any

from replicator.core.data.files import SURROGATE, csv_header, csv_records, open_text
from replicator.core.errors import DataError
from replicator.core.rows import COMPETITION_SOURCE, LABELS, make_row

TURN_FIELDS = ("prompt", "response_a", "response_b")
MODEL_FIELDS = ("model_a", "model_b")
LABEL_FIELDS = LABELS
LABEL_FIELD_NAME = "/".join(LABELS)

log = logging.getLogger(__name__)

# what ``errors="surrogateescape"`` makes of undecodable bytes
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")
#: control characters (Unicode category Cc: C0, DEL, C1), refused in ids
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


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
                examples = ", ".join(ids[:3]) + (", ..." if len(ids) > 3 else "")
                unit = "field(s)" if ids is self.nuls else "row(s)"
                log.info("%s: %d %s: %s (e.g. id %s)", file, len(ids), unit, what, examples)


def _bad_bytes(text: str) -> bool:
    return bool(_ESCAPED_BYTE.search(text))


def _show_bytes(text: str) -> str:
    m = _ESCAPED_BYTE.search(text)
    assert m is not None
    start = max(0, m.start() - 20)
    snippet = text[start:m.start() + 20].encode("utf-8", "surrogateescape")
    return f"bytes are not valid UTF-8 near {snippet!r}"


def id_problem(rid: str) -> str | None:
    """Why ``rid`` cannot be used as the id the data gives (None when it can): an id is kept exactly as
    written, so one that a reader, a CSV tool or a C string would change or cut (surrounding whitespace, a
    control character such as NUL) is refused, never normalised (module docstring, "Ids")."""
    m = _CONTROL.search(rid)
    if m:
        return (f"id {rid!r} holds a control character ({m.group()!r} at position {m.start()}); ids are used "
                "as the data gives them, so the row is refused: fix the id in the file")
    if rid != rid.strip():
        return (f"id {rid!r} has leading or trailing whitespace; ids are used as the data gives them (never "
                "stripped, so that two spellings of one id cannot pass as two rows): fix the id in the file")
    return None


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
        got = f"got a JSON {type(value).__name__}: {raw!r:.60}"
        return None, f"expected a JSON list of strings, {got}", False, False
    out, had_null, had_surrogate = [], False, False
    for i, t in enumerate(value):
        if t is None:
            had_null = True
            out.append("")
        elif isinstance(t, str):
            if SURROGATE.search(t):
                had_surrogate = True
                t = SURROGATE.sub("\ufffd", t)
            out.append(t)
        else:
            err = f"turn {i} is a {type(t).__name__} ({t!r:.40}), expected a string or null"
            return None, err, False, False
    return out, None, had_null, had_surrogate


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
    bad_id = id_problem(rid)
    if bad_id:
        return None, [(where, "id", bad_id)]
    for field, v in rec.items():
        if field != "id" and isinstance(v, str) and _bad_bytes(v):
            problems.append((rid, field, _show_bytes(v)))
    if problems:
        return None, problems

    turns: dict[str, list[str]] = {}
    had_null = had_surrogate = False
    for field in TURN_FIELDS:
        parsed, err, n, s = _parse_turns(rec.get(field), field)
        if err:
            problems.append((rid, field, err))
        else:
            turns[field] = parsed  # type: ignore[assignment]
            had_null |= n
            had_surrogate |= s

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
    if had_surrogate:
        stats.surrogates.append(rid)

    models = []
    for f in MODEL_FIELDS:
        m = rec.get(f)
        unknown = m is None or (isinstance(m, float) and math.isnan(m)) or str(m) == ""
        models.append(None if unknown else str(m))
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
                         f"missing required column(s) {', '.join(missing)}; "
                         f"found: {', '.join(columns) or '(none)'}"))
    duplicates = sorted({c for c in columns if columns.count(c) > 1})
    if duplicates:
        problems.append(("(header)", ", ".join(duplicates), "duplicate column name(s)"))
    present = [c for c in LABEL_FIELDS if c in columns]
    if not require_labels and 0 < len(present) < len(LABEL_FIELDS):
        absent = [c for c in LABEL_FIELDS if c not in columns]
        problems.append(("(header)", ", ".join(absent),
                         f"label columns are all-or-nothing: found {', '.join(present)} "
                         f"but not {', '.join(absent)}"))
    return len(present) == len(LABEL_FIELDS), problems


def _checked_rows(file: str, rows: list[dict], problems: list[tuple[str, str, str]],
                  seen: dict[str, list[str]], stats: _Stats, empty: str) -> list[dict]:
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
# the competition CSV, and the same records from elsewhere (the hub copy, a DataFrame)


def read_competition_csv(path: str | Path, require_labels: bool,
                         source: str = COMPETITION_SOURCE) -> list[dict]:
    """Read a Kaggle ``train.csv``/``test.csv`` (``.gz`` too) into validated rows (rules: module
    docstring)."""
    path = Path(path)
    file = str(path)
    with open_text(path, errors="surrogateescape") as fh:
        reader = csv.reader(fh)
        header = csv_header(reader, file)
        bad_header = [c for c in header if _bad_bytes(c)]
        if bad_header:
            raise DataError(file, [("(header)", "", _show_bytes(bad_header[0]))])
        has_labels, problems = _check_header(header, require_labels)
        if problems:
            raise DataError(file, problems)
        rows: list[dict] = []
        seen: dict[str, list[str]] = {}
        stats = _Stats()
        for record, where, span, rec in csv_records(reader, header, problems):
            row, record_problems = _validate_record(rec, where, require_labels, has_labels, stats, source)
            rid = rec["id"]
            if rid.strip() and not _bad_bytes(rid):
                seen.setdefault(rid, []).append(f"{span}, row {record}")
            if record_problems:
                problems.extend(record_problems)
            else:
                rows.append(row)  # type: ignore[arg-type]
    return _checked_rows(file, rows, problems, seen, stats, "no data rows after the header")


def rows_from_records(records, file: str, require_labels: bool,
                      source: str = COMPETITION_SOURCE) -> list[dict]:
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
        row, record_problems = _validate_record(rec, f"record {i}", require_labels, has_labels, stats, source)
        rid = rec.get("id") or ""
        if rid.strip():
            seen.setdefault(rid, []).append(f"record {i}")
        if record_problems:
            problems.extend(record_problems)
        else:
            rows.append(row)
    return _checked_rows(file, rows, problems, seen, stats, "no data rows")


def _as_text(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)
