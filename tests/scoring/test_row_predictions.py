"""The per-row prediction file (core/scoring/row_predictions.py) round-trips byte for byte."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from replicator.core.errors import ReplicatorError
from replicator.core.scoring.row_predictions import read_row_predictions, write_row_predictions


def _rows(n: int) -> list[dict]:
    return [{"id": str(1000 + i), "group": f"{i // 2:016x}", "prompt": ["Hi, how are you?"],
             "response_a": ["Fine, thanks." * (i % 4 + 1)], "response_b": [None if i == 3 else "Good."]}
            for i in range(n)]


def test_row_predictions_round_trip_and_are_reproducible(tmp_path):
    rng = np.random.default_rng(7)
    n = 222
    rows = _rows(n)
    labels = np.eye(3)[rng.integers(0, 3, n)]
    preds = {name: rng.dirichlet([2, 2, 1], size=n) for name in ("identity", "swap_ab", "tta", "final")}
    p1 = write_row_predictions(tmp_path / "a" / "valid_predictions.csv.gz", rows, preds, labels)
    p2 = write_row_predictions(tmp_path / "b" / "valid_predictions.csv.gz", rows, preds, labels)
    assert p1.read_bytes() == p2.read_bytes()
    assert p1.stat().st_size < 20_000  # a few KB
    assert list(p1.parent.iterdir()) == [p1]  # no temp file left behind
    header = gzip.decompress(p1.read_bytes()).decode().splitlines()[0]
    assert header == ("id,group,chars,label_a,label_b,label_tie,identity_a,identity_b,identity_tie,"
                      "swap_ab_a,swap_ab_b,swap_ab_tie,tta_a,tta_b,tta_tie,final_a,final_b,final_tie")
    back = read_row_predictions(p1)
    assert back.ids == [r["id"] for r in rows] and back.groups == [r["group"] for r in rows]
    assert back.chars[0] == len("Hi, how are you?") + len("Fine, thanks.") + len("Good.")
    assert back.chars[3] == len("Hi, how are you?") + 4 * len("Fine, thanks.")
    assert list(back.views) == ["identity", "swap_ab", "tta", "final"]
    np.testing.assert_allclose(back.views["tta"], preds["tta"], atol=5e-7)
    np.testing.assert_array_equal(back.labels, labels)


def test_row_predictions_errors_name_the_file(tmp_path):
    rows = _rows(4)
    y = np.eye(3)[[0, 1, 2, 0]]
    with pytest.raises(ReplicatorError, match=r"x\.csv\.gz: view 'final': expected shape \(4, 3\)"):
        write_row_predictions(tmp_path / "x.csv.gz", rows, {"final": np.ones((3, 3)) / 3}, y)
    bad = np.ones((4, 3)) / 3
    bad[2, 1] = np.nan
    with pytest.raises(ReplicatorError, match="non-finite values in 1 row"):
        write_row_predictions(tmp_path / "x.csv.gz", rows, {"final": bad}, y)
    with pytest.raises(ReplicatorError, match="appears twice"):
        write_row_predictions(tmp_path / "x.csv.gz", rows[:2] + rows[:2], {"final": np.ones((4, 3)) / 3}, y)
    assert not (tmp_path / "x.csv.gz").exists()
    broken = tmp_path / "broken.csv.gz"
    broken.write_bytes(gzip.compress(b"id,group,chars,label_a,label_b,label_tie,final_a,final_b,final_tie\n"
                                     b"1,g,3,1,0,0,0.5,0.5\n"))
    with pytest.raises(ReplicatorError, match=r"broken\.csv\.gz: line 2: 8 fields, expected 9"):
        read_row_predictions(broken)
    (tmp_path / "plain.csv.gz").write_text("id\n")
    with pytest.raises(ReplicatorError, match="not a gzip"):
        read_row_predictions(tmp_path / "plain.csv.gz")
