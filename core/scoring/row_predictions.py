"""Per-row validation predictions of a run: ``valid_predictions.csv.gz`` in the run folder.

One line per validation row, so that two runs can be compared row by row (a paired bootstrap in
:mod:`replicator.core.scoring.stats`, the plots of :mod:`replicator.core.report.figures`). Columns, in this
order:

``id, group, chars``
    the row id, its prompt group (the normalised prompt hash: the unit the bootstrap resamples)
    and the characters of prompt + both responses (for length buckets);
``label_a, label_b, label_tie``
    the label (one-hot for human labels, soft otherwise);
``<view>_a, <view>_b, <view>_tie``
    for each prediction view in the order given (``identity``, ``swap_ab``, ``tta``, ``final``...).

The file is byte-for-byte reproducible: fixed column order, floats as ``%.6f`` (below 1e-4: ``%.3e``, so a
tiny probability is not written as 0), ``\\n`` line ends, gzip with ``mtime=0`` and no file name in the
header. 222 rows with four views take about 10 KB.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import io
import math
from pathlib import Path

import numpy as np

from replicator.core.errors import ReplicatorError
from replicator.core.util.atomic import atomic_write_bytes

CLASSES = ("a", "b", "tie")
BASE_COLUMNS = ("id", "group", "chars", "label_a", "label_b", "label_tie")


@dataclasses.dataclass(frozen=True)
class RowPreds:
    """What :func:`read_row_predictions` returns; arrays are aligned with ``ids``."""

    ids: list[str]
    groups: list[str]
    chars: np.ndarray  # (N,) int
    labels: np.ndarray  # (N, 3) float
    views: dict[str, np.ndarray]  # name -> (N, 3) float, in file order

    def __len__(self) -> int:
        return len(self.ids)


def row_chars(row: dict) -> int:
    """Characters of the prompt and both responses, all turns (``None`` turns count 0)."""
    return sum(len(t or "") for key in ("prompt", "response_a", "response_b") for t in row[key])


def _fmt(x: float) -> str:
    # a tiny probability keeps 4 significant digits: as 0 its log loss would be -log(eps)
    if 0 < abs(x) < 1e-4:
        return f"{x:.3e}"
    s = f"{x:.6f}"
    return "0.000000" if s == "-0.000000" else s


def _check_matrix(name: str, m, n: int, path: Path) -> np.ndarray:
    a = np.asarray(m, dtype=np.float64)
    if a.shape != (n, 3):
        raise ReplicatorError(f"{path}: {name}: expected shape ({n}, 3), got {a.shape}")
    bad = np.flatnonzero(~np.isfinite(a).all(axis=1))
    if bad.size:
        raise ReplicatorError(f"{path}: {name}: non-finite values in {bad.size} row(s), "
                              f"first at row {bad[0]}")
    return a


def encode_row_predictions(rows: list[dict], preds: dict[str, np.ndarray], labels, where: Path) -> bytes:
    """The gzip-compressed CSV bytes :func:`write_row_predictions` writes (no file touched)."""
    n = len(rows)
    if not preds:
        raise ReplicatorError(f"{where}: no prediction views given")
    y = _check_matrix("labels", labels, n, where)
    views = {name: _check_matrix(f"view {name!r}", m, n, where) for name, m in preds.items()}
    chars = np.array([row_chars(r) for r in rows], dtype=np.int64)
    return encode(RowPreds(ids=[str(r["id"]) for r in rows], groups=[str(r["group"]) for r in rows],
                           chars=chars, labels=y, views=views), where)


def encode(preds: RowPreds, where: Path) -> bytes:
    """The gzip-compressed CSV bytes of per-row predictions already in a :class:`RowPreds` (fold and
    ensemble combinations write what they computed from other runs' files this way)."""
    n = len(preds)
    y = _check_matrix("labels", preds.labels, n, where)
    views = {}
    for name, m in preds.views.items():
        if not name or not all(c.isalnum() or c == "_" for c in name):
            raise ReplicatorError(f"{where}: view name {name!r}: use letters, digits and underscores only")
        views[name] = _check_matrix(f"view {name!r}", m, n, where)
    if not views:
        raise ReplicatorError(f"{where}: no prediction views given")
    header = list(BASE_COLUMNS) + [f"{v}_{c}" for v in views for c in CLASSES]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    seen: set[str] = set()
    for i, rid in enumerate(preds.ids):
        if rid in seen:
            raise ReplicatorError(f"{where}: row id {rid!r} appears twice")
        seen.add(rid)
        line = [rid, preds.groups[i], str(int(preds.chars[i]))] + [_fmt(x) for x in y[i]]
        for m in views.values():
            line += [_fmt(x) for x in m[i]]
        w.writerow(line)
    return gzip.compress(buf.getvalue().encode("utf-8"), compresslevel=9, mtime=0)


def write_row_predictions(path, rows: list[dict], preds: dict[str, np.ndarray], labels) -> Path:
    """Write ``valid_predictions.csv.gz`` (atomically) for ``rows`` (dicts with ``id``, ``group``,
    ``prompt``, ``response_a``, ``response_b``), ``preds`` (view name -> (N, 3) probabilities, in the
    column order wanted) and ``labels`` ((N, 3)). Returns the path written."""
    path = Path(path)
    atomic_write_bytes(path, encode_row_predictions(rows, preds, labels, path))
    return path


def write_preds(path, preds: RowPreds) -> Path:
    """Write a :class:`RowPreds` as ``valid_predictions.csv.gz`` (atomically); returns the path."""
    path = Path(path)
    atomic_write_bytes(path, encode(preds, path))
    return path


def read_row_predictions(path) -> RowPreds:
    """Read a file written by :func:`write_row_predictions`; errors name the file and the line."""
    path = Path(path)
    try:
        text = gzip.decompress(path.read_bytes()).decode("utf-8")
    except FileNotFoundError:
        raise ReplicatorError(f"{path}: no such file") from None
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise ReplicatorError(f"{path}: not a gzip-compressed UTF-8 CSV ({e})") from None
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None or tuple(header[:len(BASE_COLUMNS)]) != BASE_COLUMNS:
        raise ReplicatorError(f"{path}: header must start with {', '.join(BASE_COLUMNS)}; got {header}")
    rest = header[len(BASE_COLUMNS):]
    if not rest or len(rest) % 3:
        raise ReplicatorError(f"{path}: expected 3 columns per view after the labels, got {rest}")
    names = []
    for k in range(0, len(rest), 3):
        name = rest[k][:-2] if rest[k].endswith("_a") else None
        if not name or rest[k:k + 3] != [f"{name}_{c}" for c in CLASSES]:
            raise ReplicatorError(f"{path}: columns {rest[k:k + 3]} are not <view>_a, <view>_b, <view>_tie")
        names.append(name)
    ids, groups, chars, values = [], [], [], []
    for lineno, rec in enumerate(reader, start=2):
        if len(rec) != len(header):
            raise ReplicatorError(f"{path}: line {lineno}: {len(rec)} fields, expected {len(header)}")
        try:
            nums = [float(x) for x in rec[3:]]
            nchars = int(rec[2])
        except ValueError as e:
            raise ReplicatorError(f"{path}: line {lineno}: {e}") from None
        if not all(math.isfinite(x) for x in nums):
            raise ReplicatorError(f"{path}: line {lineno}: non-finite value")
        ids.append(rec[0])
        groups.append(rec[1])
        chars.append(nchars)
        values.append(nums)
    v = np.array(values, dtype=np.float64).reshape(len(ids), len(header) - 3)
    views = {name: v[:, 3 + 3 * k: 6 + 3 * k].copy() for k, name in enumerate(names)}
    return RowPreds(ids=ids, groups=groups, chars=np.array(chars, dtype=np.int64), labels=v[:, :3].copy(),
                    views=views)
