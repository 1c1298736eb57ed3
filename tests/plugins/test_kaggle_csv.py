"""The kaggle_csv source (plugins/kaggle_csv.py): splits, folds, the test file, the hub fallback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from replicator.core.data import hub
from replicator.core.errors import ReplicatorError
from replicator.core.rows import DataContext
from replicator.plugins.kaggle_csv import KaggleCSV

from ..source_files import TEST_COLS, TRAIN_COLS, good_rows, many_rows, write_csv


def arena_dir(tmp_path) -> Path:
    rows = []
    for r in many_rows(60):
        rows.append({"id": r["id"], "model_a": "gpt-4-0314", "model_b": "koala-13b",
                     "prompt": json.dumps(r["prompt"]), "response_a": json.dumps(r["response_a"]),
                     "response_b": json.dumps(r["response_b"]),
                     **{c: str(int(v)) for c, v in zip(TRAIN_COLS[6:], r["label"], strict=True)}})
    (tmp_path / "lmsys-chatbot-arena").mkdir()
    write_csv(tmp_path / "lmsys-chatbot-arena" / "train.csv", rows)
    return tmp_path


def test_kaggle_csv_source(tmp_path):
    ctx = DataContext(data_dir=arena_dir(tmp_path), seed=1)
    src = KaggleCSV(valid_fraction=0.25)
    train, valid = src.data_sources("train", ctx), src.data_sources("valid", ctx)
    assert len(train) + len(valid) == 60 and valid
    assert not {r["group"] for r in train} & {r["group"] for r in valid}
    assert src.data_sources("test", ctx) is None  # no test_file
    train[0]["prompt"].append("corrupted")
    train[0]["label"][0] = 99.0
    fresh = src.data_sources("train", ctx)[0]
    assert fresh["prompt"] != train[0]["prompt"] and fresh["label"][0] != 99.0
    assert src.data_files(tmp_path) == [tmp_path / "lmsys-chatbot-arena" / "train.csv"]
    assert src.data_check(tmp_path) == []


def test_kaggle_csv_folds_splits_and_max_rows(tmp_path):
    ctx = DataContext(data_dir=arena_dir(tmp_path), seed=1)
    only_valid = KaggleCSV(folds=4, fold=1, splits=["valid"])
    assert only_valid.data_sources("train", ctx) is None
    assert only_valid.data_sources("valid", ctx)
    small = KaggleCSV(max_rows=20)
    n = len(small.data_sources("train", ctx)) + len(small.data_sources("valid", ctx))
    assert n == 20


def test_kaggle_csv_test_file(tmp_path):
    write_csv(tmp_path / "test.csv", good_rows(), columns=TEST_COLS)
    ctx = DataContext(data_dir=tmp_path, seed=0)
    rows = KaggleCSV(test_file="test.csv", splits=["test"]).data_sources("test", ctx)
    assert [r["id"] for r in rows] == ["4410732", "90321577", "118290"]


def test_kaggle_csv_hub_fallback(tmp_path, monkeypatch):
    import datasets

    recs = [{**r, "id": int(r["id"])} for r in good_rows()]
    calls = []

    def fake_load(hub_id, split):
        calls.append((hub_id, split))
        return datasets.Dataset.from_list(recs)

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=3: True)
    src = KaggleCSV(valid_fraction=0.3)
    assert src.data_check(tmp_path) == []
    ctx = DataContext(data_dir=tmp_path, seed=0)
    rows = src.data_sources("train", ctx) + src.data_sources("valid", ctx)
    assert sorted(r["id"] for r in rows) == ["118290", "4410732", "90321577"]
    assert calls == [("lmsys/lmsys-arena-human-preference-55k", "train")]  # loaded once, cached


def test_kaggle_csv_from_recipe_block():
    from replicator.core.params import build

    src = build(KaggleCSV, {"splits": ["valid"], "folds": 5, "fold": 4}, "r.yaml", "plugins.data")
    assert src.splits == ["valid"] and src.fold == 4
    from replicator.core.errors import RecipeError

    with pytest.raises(RecipeError, match="fold < folds"):
        build(KaggleCSV, {"folds": 5, "fold": 5}, "r.yaml", "plugins.data")


@pytest.mark.parametrize("kw, msg", [({"folds": 5, "fold": 5}, "fold < folds"), ({"folds": 1}, "folds"),
                                     ({"splits": ["train", "dev"]}, "dev"),
                                     ({"valid_fraction": 1.0}, "valid_fraction"),
                                     ({"max_rows": -1}, "max_rows")])
def test_kaggle_csv_params(kw, msg):
    with pytest.raises(ValueError, match=msg):
        KaggleCSV(**kw)


def test_kaggle_csv_check_missing_file(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    problems = KaggleCSV().data_check(tmp_path)
    assert len(problems) == 1
    msg = problems[0]
    assert str(tmp_path / "lmsys-chatbot-arena" / "train.csv") in msg
    assert ("REPLICATOR_DATA_DIR" in msg and "absolute" in msg
            and "lmsys/lmsys-arena-human-preference-55k" in msg)
    with pytest.raises(ReplicatorError, match="REPLICATOR_DATA_DIR"):
        KaggleCSV().data_sources("train", DataContext(data_dir=tmp_path, seed=0))
    assert KaggleCSV(hub_id=None).data_check(tmp_path)
    assert KaggleCSV().data_files(tmp_path) == []
