"""Hold-out and fold splits, grouped by prompt (core/data/splits.py); the seeded coin; extra rows dropped
when their prompt is a validation or test prompt."""

from __future__ import annotations

import pytest

from replicator.core.data import splits
from replicator.core.rows import DataContext
from replicator.plugins.hh_rlhf import HHRLHF

from ..source_files import hh_records, many_rows, write_jsonl_gz

pytestmark = pytest.mark.usefixtures("info_logs")


def test_split_valid_grouped_and_deterministic():
    rows = many_rows()
    train, valid = splits.split_valid(rows, 0.2, seed=7)
    assert len(train) + len(valid) == len(rows)
    assert not {r["group"] for r in train} & {r["group"] for r in valid}
    assert abs(len(valid) - 48) <= 30
    again = splits.split_valid(list(reversed(rows)), 0.2, seed=7)[1]
    assert {r["id"] for r in again} == {r["id"] for r in valid}  # independent of input order
    other = splits.split_valid(rows, 0.2, seed=8)[1]
    assert {r["id"] for r in other} != {r["id"] for r in valid}


def test_split_fold_partitions():
    rows = many_rows()
    seen = []
    for k in range(5):
        train, valid = splits.split_fold(rows, 5, k, seed=3)
        assert len(train) + len(valid) == len(rows)
        assert not {r["group"] for r in train} & {r["group"] for r in valid}
        seen += [r["id"] for r in valid]
    assert sorted(seen) == sorted(r["id"] for r in rows)
    assert [r["id"] for r in splits.split_fold(rows, 5, 2, seed=3)[1]] == \
           [r["id"] for r in splits.split_fold(rows, 5, 2, seed=3)[1]]


def test_seeded_coin_balanced_and_stable():
    flips = [splits.seeded_coin(0, f"row-{i}") for i in range(1000)]
    assert 450 < sum(flips) < 550
    assert flips == [splits.seeded_coin(0, f"row-{i}") for i in range(1000)]
    assert flips != [splits.seeded_coin(1, f"row-{i}") for i in range(1000)]


def test_extra_data_is_deduplicated_against_test_prompts_too(tmp_path, caplog):
    path = write_jsonl_gz(tmp_path / "hh-rlhf" / "harmless-base-test.jsonl.gz", hh_records())
    src = HHRLHF(file=str(path))
    everything = src.data_sources(split="train", ctx=DataContext(data_dir=tmp_path, seed=0))
    test_group = everything[0]["group"]
    ctx = DataContext(data_dir=tmp_path, seed=0, test_groups={test_group})
    kept = src.data_sources(split="train", ctx=ctx)
    assert len(kept) == len(everything) - sum(r["group"] == test_group for r in everything)
    assert test_group not in {r["group"] for r in kept}
    assert "validation or test split" in caplog.text
