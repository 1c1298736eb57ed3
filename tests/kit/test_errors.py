"""Errors that name where the problem is (core/errors.py): the file and key of a recipe error, the file,
row and field of each bad data row."""

from __future__ import annotations

import pytest

from replicator.core.errors import DataError, RecipeError, ReplicatorError


def test_recipe_error_names_file_and_key():
    e = RecipeError("recipes/smoke.yaml", "train.lr", "must be > 0, got -1")
    assert isinstance(e, ReplicatorError)
    assert str(e) == "recipes/smoke.yaml: train.lr: must be > 0, got -1"
    assert (e.file, e.key) == ("recipes/smoke.yaml", "train.lr")
    with pytest.raises(ReplicatorError, match=r"^recipes/smoke\.yaml: train\.lr: "):
        raise e


def test_data_error_names_file_row_and_field_of_each_problem():
    problems = [("42", "prompt", "not a JSON list"), ("43", "winner_tie", "not 0 or 1")]
    e = DataError("data/train.csv", problems)
    assert isinstance(e, ReplicatorError)
    assert e.file == "data/train.csv" and e.problems == problems
    assert str(e).splitlines() == [
        "2 bad row(s) in data/train.csv:",
        "data/train.csv: row 42: field 'prompt': not a JSON list",
        "data/train.csv: row 43: field 'winner_tie': not 0 or 1",
    ]


def test_data_error_shows_ten_problems_and_counts_the_rest():
    problems = [(str(i), "response_a", f"problem {i}") for i in range(12)]
    lines = str(DataError("t.csv", problems)).splitlines()
    assert lines[0] == "12 bad row(s) in t.csv:"
    assert lines[1:11] == [f"t.csv: row {i}: field 'response_a': problem {i}" for i in range(10)]
    assert lines[11:] == ["... and 2 more"]
    assert "problem 10" not in str(DataError("t.csv", problems))


def test_data_error_total_counts_problems_not_listed():
    e = DataError("t.csv", [("1", "id", "duplicate")] * 12, total=25)
    lines = str(e).splitlines()
    assert lines[0] == "25 bad row(s) in t.csv:" and lines[-1] == "... and 15 more"
    few = DataError("t.csv", [("1", "id", "duplicate")], total=3)
    assert str(few).splitlines() == ["3 bad row(s) in t.csv:", "t.csv: row 1: field 'id': duplicate"]
