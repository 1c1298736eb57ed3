"""Ids as the data gives them, checked (issue 24): an id with surrounding whitespace or a control character
(NUL, tab, newline, ...) is refused, never normalised, by the same rule in a training file, a test file and
the hub's records (``core/data/competition.py``, "Ids"), naming the file, the row and the field, before any
model loads and before anything is written. So ``2618015469`` and ``2618015469 `` can never pass as two rows,
and a NUL in an id can never reach a submission. Ids that are merely unusual stay exactly as written."""

from __future__ import annotations

import csv

import pytest

from replicator.core.data.competition import read_competition_csv, rows_from_records
from replicator.core.errors import DataError

from ..conftest import synthetic_rows, write_csv
from .helpers import assert_refused, invoke, run_outputs, tree

SPACE, CONTROL = "leading or trailing whitespace", "holds a control character"
#: case -> (the id that replaces the second data row's, the words of the refusal)
BAD_IDS = {
    "trailing space": ("2618015469 ", SPACE),
    "leading space": (" 2618015469", SPACE),
    "non-breaking space at the end": ("2618015469\u00a0", SPACE),
    "NUL inside": ("26180\x0015469", CONTROL),
    "NUL at the end": ("2618015469\x00", CONTROL),
    "tab inside": ("2618\t015469", CONTROL),
    "newline at the end": ("2618015469\n", CONTROL),
    "DEL": ("2618015469\x7f", CONTROL),
}


def _train_csv(folder, bad_id, twin: bool = True):
    """A data folder whose train.csv has ``2618015469`` as its first row's id and ``bad_id`` as its second's
    (line 3; ``twin``: the same id written another way)."""
    rows = synthetic_rows(160)
    rows[0]["id"] = "2618015469" if twin else rows[0]["id"]
    rows[1]["id"] = bad_id
    return write_csv(folder / "lmsys-chatbot-arena" / "train.csv", rows)


def _bad_row_line(output: str, file, line: int, rid: str) -> str:
    found = [s for s in output.splitlines()
             if s.startswith(f"{file}: row line {line}: field 'id': id {rid!r}")]
    assert found, output
    return found[0]


@pytest.mark.parametrize("case", list(BAD_IDS))
def test_run_refuses_a_training_id_the_data_would_have_to_alter(case, tmp_path, isolated, monkeypatch,
                                                                 no_model):
    from .conftest import HOSTILE_RECIPE

    bad_id, words = BAD_IDS[case]
    data = tmp_path / "data"
    train = _train_csv(data, bad_id)
    monkeypatch.setenv("REPLICATOR_DATA_DIR", str(data))
    recipe = tmp_path / "hostile.yaml"
    recipe.write_text(HOSTILE_RECIPE, encoding="utf-8")
    before = tree(tmp_path)
    out = invoke(["run", recipe])
    assert_refused(out, f"bad row(s) in {train}")
    line = _bad_row_line(out.output, train, 3, bad_id)
    assert words in line and "fix the id in the file" in line, line
    assert run_outputs(tmp_path) == [] and tree(tmp_path) == before


def test_the_two_spellings_of_one_id_never_both_pass(tmp_path):
    train = _train_csv(tmp_path, "2618015469 ")
    with pytest.raises(DataError) as e:
        read_competition_csv(train, require_labels=True)
    assert [(p[0], p[1]) for p in e.value.problems] == [("line 3", "id")]
    assert "leading or trailing whitespace" in e.value.problems[0][2]


@pytest.mark.parametrize("bad_id", ["2618015469 ", "90\x0001"], ids=["trailing space", "NUL"])
def test_predict_refuses_a_test_id_before_the_model_loads_and_writes_no_submission(
        bad_id, tiny_copy, isolated, synthetic_data_dir, no_model):
    _, run_dir, _, _ = tiny_copy
    test = isolated / "test.csv"
    rows = list(csv.DictReader(open(synthetic_data_dir / "lmsys-chatbot-arena" / "test.csv", newline="",
                                    encoding="utf-8")))
    rows[0]["id"], rows[1]["id"] = "2618015469", bad_id
    write_csv(test, rows)
    sub = isolated / "submission.csv"
    before = tree(isolated)
    out = invoke(["predict", run_dir, test, "-o", sub])
    assert_refused(out, f"bad row(s) in {test}")
    _bad_row_line(out.output, test, 3, bad_id)
    assert not sub.exists() and tree(isolated) == before


def test_the_hub_records_follow_the_same_rule(tmp_path):
    good = synthetic_rows(3)
    for r in good:
        r["id"] = str(r["id"])
    bad = [dict(good[0]), dict(good[1], id="7 ")]
    with pytest.raises(DataError) as e:
        rows_from_records(bad, "hf://datasets/x", require_labels=True)
    assert [(p[0], p[1]) for p in e.value.problems] == [("record 1", "id")]


def test_unusual_ids_that_need_no_change_are_kept_exactly(tmp_path):
    ids = ["007", "a b", "ünïcode-ид", "1e5", "-1", "id,with,commas", 'quote"d']
    rows = synthetic_rows(len(ids))
    for r, i in zip(rows, ids, strict=True):
        r["id"] = i
    got = read_competition_csv(write_csv(tmp_path / "train.csv", rows), require_labels=True)
    assert [r["id"] for r in got] == ids
