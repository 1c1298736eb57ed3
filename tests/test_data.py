"""Reading, validating and splitting competition data; the kaggle_csv and alpacaeval_pairs sources."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import pytest

from replicator.core.data import competition, files, hub, splits
from replicator.core.errors import DataError, ReplicatorError
from replicator.core.rows import DataContext, make_row, prompt_group
from replicator.plugins.alpacaeval import AlpacaEvalPairs
from replicator.plugins.kaggle_csv import KaggleCSV

TRAIN_COLS = ["id", "model_a", "model_b", "prompt", "response_a", "response_b",
              "winner_model_a", "winner_model_b", "winner_tie"]
TEST_COLS = ["id", "prompt", "response_a", "response_b"]


def j(*turns) -> str:
    return json.dumps(list(turns))


def good_rows() -> list[dict]:
    """Three hand-written rows in the competition's shape (written for these tests)."""
    return [
        {"id": "4410732", "model_a": "gpt-4-0613", "model_b": "llama-2-13b-chat",
         "prompt": j("How do I boil an egg so the yolk stays runny?"),
         "response_a": j("Bring water to a boil, lower the egg in gently and cook it for 6 minutes, "
                         "then move it to ice water."),
         "response_b": j("Boil it for about 12 minutes."),
         "winner_model_a": "1", "winner_model_b": "0", "winner_tie": "0"},
        {"id": "90321577", "model_a": "vicuna-13b", "model_b": "claude-instant-1",
         "prompt": j("Write a haiku about autumn rain.", "Now make it rhyme."),
         "response_a": j("Cold rain on red leaves\nthe gutter hums a low song\nsummer washes out",
                         "Rain falls on the lane,\nleaves drift down again and again,\n"
                         "autumn's soft refrain."),
         "response_b": j("Grey drops on the pane\nmaples bow their heavy heads\nthe year exhales slow",
                         "Soft rain on the plain,\nleaves like embers in the lane,\nsummer's gone again."),
         "winner_model_a": "0", "winner_model_b": "0", "winner_tie": "1"},
        {"id": "118290", "model_a": "mistral-medium", "model_b": "gpt-3.5-turbo-0613",
         "prompt": j("What is the capital of Australia?"),
         "response_a": j("The capital of Australia is Sydney."),
         "response_b": j("Canberra is the capital of Australia."),
         "winner_model_a": "0", "winner_model_b": "1", "winner_tie": "0"},
    ]


def write_csv(path: Path, rows: list[dict], columns=TRAIN_COLS) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return path


def bad(tmp_path, edit: dict, row: int = 1, require_labels: bool = True) -> DataError:
    rows = good_rows()
    rows[row].update(edit)
    path = write_csv(tmp_path / "train.csv", rows)
    with pytest.raises(DataError) as ei:
        competition.read_competition_csv(path, require_labels=require_labels)
    return ei.value


def names(err: DataError, rid: str, field: str) -> str:
    """Assert the error names the file, the row and the field; return its text."""
    text = str(err)
    assert err.file in text and err.file.endswith(".csv")
    assert any(p[0] == rid and field in p[1] for p in err.problems), err.problems
    assert f"row {rid}" in text and field in text
    return text


# --- good input and the repair rules ---------------------------------------------------------


def test_reads_good_rows(tmp_path):
    path = write_csv(tmp_path / "train.csv", good_rows())
    rows = competition.read_competition_csv(path, require_labels=True)
    assert [r["id"] for r in rows] == ["4410732", "90321577", "118290"]
    assert rows[0]["label"] == [1.0, 0.0, 0.0] and rows[1]["label"] == [0.0, 0.0, 1.0]
    assert rows[1]["prompt"] == ["Write a haiku about autumn rain.", "Now make it rhyme."]
    assert rows[0]["model_a"] == "gpt-4-0613" and rows[0]["source"] == "kaggle_csv"
    assert rows[0]["group"] == prompt_group(rows[0]["prompt"])


def test_ids_keep_their_text(tmp_path):
    rows = good_rows()
    rows[0]["id"], rows[1]["id"] = "000123", "1e5"
    out = competition.read_competition_csv(write_csv(tmp_path / "train.csv", rows), require_labels=True)
    assert [r["id"] for r in out[:2]] == ["000123", "1e5"]


def test_test_file_without_labels_or_models(tmp_path):
    path = write_csv(tmp_path / "test.csv", good_rows(), columns=TEST_COLS)
    rows = competition.read_competition_csv(path, require_labels=False)
    assert len(rows) == 3 and all(r["label"] is None and r["model_a"] is None for r in rows)


def test_null_turns_become_empty(tmp_path, caplog):
    caplog.set_level("INFO", logger="replicator")
    rows = good_rows()
    rows[0]["response_a"] = j(None)
    rows[1]["response_b"] = j("Grey drops on the pane", None)
    out = competition.read_competition_csv(write_csv(tmp_path / "train.csv", rows), require_labels=True)
    assert out[0]["response_a"] == [""]
    assert out[1]["response_b"] == ["Grey drops on the pane", ""]
    logged = [r.getMessage() for r in caplog.records if r.name == "replicator.core.data.competition"]
    assert len(logged) == 1 and "2 row(s): null turn(s)" in logged[0]


def test_mismatched_turns_are_padded_and_counted(tmp_path, caplog):
    caplog.set_level("INFO", logger="replicator")
    rows = good_rows()
    rows[1]["response_b"] = j("Grey drops on the pane")  # the second round is missing
    rows[2]["prompt"] = j("What is the capital of Australia?", "And of Canada?")
    out = competition.read_competition_csv(write_csv(tmp_path / "train.csv", rows), require_labels=True)
    assert out[1]["response_b"] == ["Grey drops on the pane", ""]
    assert len(out[1]["prompt"]) == len(out[1]["response_a"]) == 2
    assert out[2]["response_a"] == ["The capital of Australia is Sydney.", ""]
    assert out[2]["response_b"][1] == ""
    lines = [r.getMessage() for r in caplog.records if "padded" in r.getMessage()]
    assert len(lines) == 1 and "2 row(s)" in lines[0] and "90321577" in lines[0]


def test_lone_surrogates_become_replacement_char(tmp_path):
    rows = good_rows()
    # raw JSON text as in the real data: an unpaired high surrogate, then a valid pair
    rows[0]["response_a"] = '["Here you go \\ud83d and a smile \\ud83d\\ude00"]'
    out = competition.read_competition_csv(write_csv(tmp_path / "train.csv", rows), require_labels=True)
    text = out[0]["response_a"][0]
    assert text == "Here you go \ufffd and a smile \U0001F600"
    text.encode("utf-8")  # strict: no surrogates left


def test_bom_is_ignored(tmp_path):
    path = write_csv(tmp_path / "train.csv", good_rows())
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert len(competition.read_competition_csv(path, require_labels=True)) == 3


# --- rejected input --------------------------------------------------------------------------


def test_invalid_json(tmp_path):
    err = bad(tmp_path, {"response_a": '["Rain falls on the lane", '})
    assert "invalid JSON" in names(err, "90321577", "response_a")


def test_non_list_json(tmp_path):
    err = bad(tmp_path, {"prompt": '"Write a haiku about autumn rain."'})
    assert "expected a JSON list" in names(err, "90321577", "prompt")
    err = bad(tmp_path, {"response_b": '{"text": "Grey drops"}'})
    assert "JSON dict" in names(err, "90321577", "response_b")


def test_non_string_turn(tmp_path):
    err = bad(tmp_path, {"response_a": '["Cold rain", 42]'})
    assert "turn 1" in names(err, "90321577", "response_a")
    err = bad(tmp_path, {"response_a": '[NaN]'})
    names(err, "90321577", "response_a")


@pytest.mark.parametrize("labels", [("1", "1", "0"), ("0", "0", "0"), ("2", "0", "0"),
                                    ("yes", "0", "0"), ("", "1", "0"), ("nan", "1", "0"),
                                    ("0.5", "0.5", "0"), ("inf", "0", "0")])
def test_labels_not_one_hot(tmp_path, labels):
    err = bad(tmp_path, dict(zip(["winner_model_a", "winner_model_b", "winner_tie"], labels, strict=True)))
    text = names(err, "90321577", "winner_model_a")
    assert "winner_model_b" in text and "winner_tie" in text


def test_float_labels_accepted(tmp_path):
    rows = good_rows()
    rows[0].update(winner_model_a="1.0", winner_model_b="0.0", winner_tie="0.0")
    out = competition.read_competition_csv(write_csv(tmp_path / "train.csv", rows), require_labels=True)
    assert out[0]["label"] == [1.0, 0.0, 0.0]


def test_all_bad_rows_are_collected(tmp_path):
    rows = good_rows()
    rows[0]["winner_tie"] = "1"
    rows[2]["prompt"] = "What is the capital of Australia?"
    with pytest.raises(DataError) as ei:
        competition.read_competition_csv(write_csv(tmp_path / "train.csv", rows), require_labels=True)
    assert {p[0] for p in ei.value.problems} == {"4410732", "118290"}
    assert "2 bad row(s)" in str(ei.value)


def test_missing_columns(tmp_path):
    cols = [c for c in TRAIN_COLS if c not in ("winner_tie", "response_b")]
    path = write_csv(tmp_path / "train.csv", good_rows(), columns=cols)
    with pytest.raises(DataError) as ei:
        competition.read_competition_csv(path, require_labels=True)
    text = str(ei.value)
    assert str(path) in text and "(header)" in text
    assert "winner_tie" in text and "response_b" in text
    # the test format needs no labels, but still its turns
    path = write_csv(tmp_path / "test.csv", good_rows(), columns=["id", "prompt", "response_a"])
    with pytest.raises(DataError, match="response_b"):
        competition.read_competition_csv(path, require_labels=False)


def test_partial_label_columns_rejected_for_test(tmp_path):
    path = write_csv(tmp_path / "test.csv", good_rows(), columns=TEST_COLS + ["winner_model_a"])
    with pytest.raises(DataError, match="all-or-nothing"):
        competition.read_competition_csv(path, require_labels=False)


def test_duplicate_ids(tmp_path):
    rows = good_rows()
    rows[2]["id"] = rows[0]["id"]
    with pytest.raises(DataError) as ei:
        competition.read_competition_csv(write_csv(tmp_path / "train.csv", rows), require_labels=True)
    text = names(ei.value, "4410732", "id")
    assert "duplicate" in text and "row 1" in text and "row 3" in text and "line 2" in text


def test_empty_id(tmp_path):
    err = bad(tmp_path, {"id": ""})
    assert any(p[0] == "line 3" and p[1] == "id" for p in err.problems)
    assert "empty id" in str(err)


def test_non_utf8_bytes(tmp_path):
    path = write_csv(tmp_path / "train.csv", good_rows())
    raw = path.read_bytes().replace(b"Grey drops", b"Gr\xe9y drops")  # latin-1 é
    path.write_bytes(raw)
    with pytest.raises(DataError) as ei:
        competition.read_competition_csv(path, require_labels=True)
    assert "not valid UTF-8" in names(ei.value, "90321577", "response_b")


def test_non_utf8_bytes_in_id(tmp_path):
    path = write_csv(tmp_path / "train.csv", good_rows())
    path.write_bytes(path.read_bytes().replace(b"118290", b"1182\xff90"))
    with pytest.raises(DataError) as ei:
        competition.read_competition_csv(path, require_labels=True)
    assert [p[:2] for p in ei.value.problems] == [("line 4", "id")]


def test_line_numbers_count_multiline_records(tmp_path):
    rows = good_rows()
    rows[0]["response_a"] = '["Bring water to a boil.\nLower the egg in gently.\nCook 6 minutes."]'
    rows[2]["id"] = ""
    path = write_csv(tmp_path / "train.csv", rows)
    assert path.read_text().count("\n") == 6  # header + 3 records, the first spanning 3 lines
    with pytest.raises(DataError) as ei:
        competition.read_competition_csv(path, require_labels=True)
    assert [p[:2] for p in ei.value.problems] == [("line 6", "id")]


def test_ragged_record(tmp_path):
    path = write_csv(tmp_path / "train.csv", good_rows())
    with open(path, "a", encoding="utf-8", newline="") as fh:
        csv.writer(fh).writerow(["555", "gpt-4", "palm-2", j("hi"), j("hello")])
    with pytest.raises(DataError, match="expected 9 fields"):
        competition.read_competition_csv(path, require_labels=True)


def test_header_only(tmp_path):
    with pytest.raises(DataError, match="no data rows"):
        competition.read_competition_csv(write_csv(tmp_path / "train.csv", []), require_labels=True)


def test_rows_from_records_uses_same_rules():
    recs = [dict(r) for r in good_rows()]
    recs[0]["winner_model_a"] = 1  # typed values as a hub dataset gives them
    recs[1]["winner_model_a"], recs[1]["winner_tie"] = 1, 1
    with pytest.raises(DataError) as ei:
        competition.rows_from_records(recs, "hf://datasets/x", require_labels=True)
    assert [p[0] for p in ei.value.problems] == ["90321577"]


def test_load_hub_55k_validates(monkeypatch):
    import datasets

    recs = good_rows()
    for r in recs:
        r["id"] = int(r["id"])
        for k in ("winner_model_a", "winner_model_b", "winner_tie"):
            r[k] = int(r[k])
    ds = datasets.Dataset.from_list(recs)
    monkeypatch.setattr(datasets, "load_dataset", lambda hub_id, split: ds)
    rows = hub.load_hub_55k("someone/arena-55k")
    assert [r["id"] for r in rows] == ["4410732", "90321577", "118290"]
    assert rows[1]["label"] == [0.0, 0.0, 1.0]


def test_hub_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.hub_reachable() is False


def test_data_dir(monkeypatch):
    monkeypatch.delenv("REPLICATOR_DATA_DIR", raising=False)
    assert files.data_dir() == Path("data")
    monkeypatch.setenv("REPLICATOR_DATA_DIR", "/somewhere/data")
    assert files.data_dir() == Path("/somewhere/data")


# --- splits ----------------------------------------------------------------------------------


def many_rows(n=240, seed=0) -> list[dict]:
    import random

    rnd = random.Random(seed)
    topics = ["sourdough starters", "the French revolution", "binary search", "tax brackets", "black holes",
              "knitting a scarf", "Rust lifetimes", "the offside rule", "photosynthesis", "jazz chords"]
    rows = []
    for i in range(n):
        # about a third of the prompts are repeated, as in the arena data
        t = topics[rnd.randrange(len(topics))]
        prompt = f"Explain {t} to a beginner." if rnd.random() < 0.35 else f"Question {i}: what about {t}?"
        k = rnd.randrange(3)
        rows.append(make_row(str(1000 + i), [prompt], [f"answer A {i}"], [f"answer B {i}"],
                               label=[float(k == c) for c in range(3)], source="kaggle_csv"))
    return rows


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


# --- the kaggle_csv source -------------------------------------------------------------------


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


# --- the alpacaeval_pairs source -------------------------------------------------------------


def alpaca_dir(tmp_path) -> Path:
    import pandas as pd

    df = pd.DataFrame({
        "instruction": ["Give three tips for staying healthy.", "What is the capital of Australia?",
                        "Translate 'good morning' into Spanish.", "Write a limerick about a cat."],
        "output_1": ["Eat vegetables, sleep well, walk daily.", "Sydney.", "Buenos días.",
                     "There once was a cat..."],
        "generator_1": ["gpt4_1106_preview"] * 4,
        "output_2": ["Drink water.", "Canberra.", "Buenos días.", "A cat from Peru..."],
        "generator_2": ["alpaca-7b", "vicuna-13b", "alpaca-7b", "falcon-40b-instruct"],
        "preference": [1.0, 1.9995, 1.5, 1.2734],
        "annotator": ["alpaca_eval_gpt4", "weighted_alpaca_eval_gpt4_turbo", "alpaca_eval_gpt4",
                      "weighted_alpaca_eval_gpt4_turbo"],
        "dataset": ["selfinstruct", "helpful_base", "koala", "oasst"],
    })
    (tmp_path / "alpacaeval").mkdir()
    df.to_parquet(tmp_path / "alpacaeval" / "gpt4_pairwise_30k.parquet")
    return tmp_path


def test_alpacaeval_soft_labels(tmp_path):
    ctx = DataContext(data_dir=alpaca_dir(tmp_path), seed=0)
    src = AlpacaEvalPairs()
    rows = src.data_sources("train", ctx)
    assert src.data_sources("valid", ctx) is None and src.data_sources("test", ctx) is None
    assert [r["id"] for r in rows] == [f"alpacaeval-{i}" for i in range(4)]
    for r in rows:
        assert math.isclose(sum(r["label"]), 1.0) and min(r["label"]) >= 0
        assert r["source"] == "alpacaeval_pairs" and len(r["prompt"]) == 1
    assert rows[0]["label"] == [1.0, 0.0, 0.0]
    assert rows[1]["label"][1] == pytest.approx(0.9995) and rows[1]["label"][2] == 0.0
    assert rows[2]["label"] == [0.0, 0.0, 1.0]  # 1.5 is AlpacaEval's explicit draw
    assert rows[3]["model_b"] == "falcon-40b-instruct"
    hard = AlpacaEvalPairs(hard_labels=True).data_sources("train", ctx)
    assert [r["label"] for r in hard] == [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0]]


def test_alpacaeval_dedup_against_valid(tmp_path, caplog):
    caplog.set_level("INFO", logger="replicator")
    ctx = DataContext(data_dir=alpaca_dir(tmp_path), seed=0,
                      valid_groups={prompt_group(["what is the capital of  Australia?"])})
    rows = AlpacaEvalPairs().data_sources("train", ctx)
    assert len(rows) == 3 and "Sydney." not in [r["response_a"][0] for r in rows]
    assert "dropped 1 of 4" in caplog.text


def test_alpacaeval_max_rows_and_bad_preference(tmp_path):
    import pandas as pd

    ctx = DataContext(data_dir=alpaca_dir(tmp_path), seed=0)
    assert len(AlpacaEvalPairs(max_rows=2).data_sources("train", ctx)) == 2
    path = tmp_path / "alpacaeval" / "gpt4_pairwise_30k.parquet"
    df = pd.read_parquet(path)
    df.loc[1, "preference"] = float("nan")
    df.loc[3, "preference"] = 0.0
    df.to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(DataError) as ei:
        AlpacaEvalPairs(file=str(tmp_path / "bad.parquet")).data_sources("train", ctx)
    assert [p[:2] for p in ei.value.problems] == [("alpacaeval-1", "preference"),
                                                  ("alpacaeval-3", "preference")]


def test_alpacaeval_check(tmp_path):
    problems = AlpacaEvalPairs().data_check(tmp_path)
    assert len(problems) == 1 and "REPLICATOR_DATA_DIR" in problems[0]
    assert AlpacaEvalPairs().data_check(alpaca_dir(tmp_path)) == []


# --- the real shared data --------------------------------------------------------------------


def real_dir() -> Path:
    d = os.environ.get("REPLICATOR_DATA_DIR")
    if not d:
        pytest.skip("REPLICATOR_DATA_DIR is not set")
    return Path(d)


@pytest.mark.real_data
def test_real_competition_csv():
    path = real_dir() / "lmsys-chatbot-arena" / "train.csv"
    rows = competition.read_competition_csv(path, require_labels=True)
    assert len(rows) == 1478
    assert len({r["id"] for r in rows}) == 1478
    for r in rows:
        assert sorted(r["label"]) == [0.0, 0.0, 1.0]
        assert len(r["prompt"]) == len(r["response_a"]) == len(r["response_b"]) >= 1
        for t in r["prompt"] + r["response_a"] + r["response_b"]:
            assert isinstance(t, str)
            t.encode("utf-8")  # no lone surrogates
    src = KaggleCSV()
    train = src.data_sources("train", DataContext(real_dir(), 0))
    valid = src.data_sources("valid", DataContext(real_dir(), 0))
    assert len(train) + len(valid) == 1478
    assert not {r["group"] for r in train} & {r["group"] for r in valid}


@pytest.mark.real_data
def test_real_alpacaeval():
    rows = AlpacaEvalPairs().data_sources("train", DataContext(real_dir(), 0))
    assert len(rows) == 30000
    for r in rows:
        assert math.isclose(sum(r["label"]), 1.0) and all(0 <= x <= 1 for x in r["label"])
        assert not any(math.isnan(x) for x in r["label"])


def test_two_equal_blocks_register():
    """Two blocks with the same parameters are two plugins (equal dataclasses; the manager registers
    each under its own alias)."""
    from replicator.core.config.catalogue import build_plugins

    blocks = {"a": {"use": "kaggle_csv"}, "b": {"use": "kaggle_csv"}, "c": {"use": "alpacaeval_pairs"},
              "d": {"use": "alpacaeval_pairs"}, "prompt": {"use": "plain_turns"},
              "head": {"use": "default_head"}, "loss": {"use": "cross_entropy"}}
    assert KaggleCSV() == KaggleCSV()
    plugins = build_plugins(blocks, "t.yaml")
    assert [alias for alias, _ in plugins.providers("data_sources")] == ["a", "b", "c", "d"]
