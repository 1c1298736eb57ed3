"""Reading and validating the competition CSV (core/data/competition.py): the repair rules, and every
rejected case naming the file, the row and the field."""

from __future__ import annotations

import csv
import json

import pytest

from replicator.core.data import competition
from replicator.core.data.competition import read_competition_csv
from replicator.core.errors import DataError
from replicator.core.rows import DataContext, prompt_group
from replicator.plugins.kaggle_csv import KaggleCSV

from ..conftest import synthetic_rows
from ..source_files import TEST_COLS, TRAIN_COLS, good_rows, j, real_dir, write_csv


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


def test_nul_bytes_are_removed_with_a_notice_naming_file_row_and_field(tmp_path, caplog):
    rows = synthetic_rows(6)
    rows[1]["response_a"] = json.dumps(["bad\x00 text"])  # a raw NUL
    rows[4]["prompt"] = json.dumps(["escaped\u0000 too", "Can you say more?"])  # the \u0000 escape
    path = write_csv(tmp_path / "train.csv", rows)
    with caplog.at_level("INFO", logger="replicator"):
        got = read_competition_csv(path, require_labels=True)
    assert got[1]["response_a"] == ["bad text"] and got[4]["prompt"][0] == "escaped too"
    assert not any("\x00" in t for r in got for f in ("prompt", "response_a", "response_b") for t in r[f])
    notice = [r.getMessage() for r in caplog.records if "NUL" in r.getMessage()]
    assert len(notice) == 1 and str(path) in notice[0] and "2 field(s)" in notice[0]
    assert "1001 response_a" in notice[0] and "1004 prompt" in notice[0]
