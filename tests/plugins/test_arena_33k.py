"""The arena_33k source (plugins/arena_33k.py); every input file is hand-written for these tests."""

from __future__ import annotations

import csv
import json

import pytest

from replicator.core.errors import DataError, ReplicatorError
from replicator.core.rows import DataContext, prompt_group
from replicator.plugins.arena_33k import Arena33k as _Arena33k
from replicator.plugins.arena_33k import winner_label

from ..source_files import arena_records, check_labels, write_arena

pytestmark = pytest.mark.usefixtures("info_logs")


def Arena33k(**kw):  # noqa: N802 -- these folders have no competition train.csv to de-duplicate against
    return _Arena33k(**{"against": None, **kw})


@pytest.mark.parametrize("fmt", ["json", "jsonl", "parquet", "csv"])
def test_arena_formats_convert_the_same(tmp_path, fmt):
    write_arena(tmp_path / "arena-33k" / f"battles.{fmt}", arena_records(), fmt)
    rows = Arena33k(dedup=False).data_sources("train", DataContext(tmp_path, 0))
    assert [r["id"] for r in rows] == [f"arena33k-{r['question_id']}" for r in arena_records()]
    check_labels(rows)
    r0, r1, r2, r3 = rows[:4]
    assert r0["prompt"] == ["What is the difference between OpenCL and CUDA?"]
    assert r0["response_b"][0].startswith("CUDA is NVIDIA's")
    assert (r0["model_a"], r0["model_b"], r0["source"]) == ("chatglm-6b", "koala-13b", "arena_33k")
    assert r0["label"] == [0.0, 1.0, 0.0]
    assert r1["label"] == [0.0, 0.0, 1.0]
    assert r2["label"] == [1.0, 0.0, 0.0]
    assert r3["label"] == [0.0, 0.0, 1.0]  # tie (bothbad) is a tie
    # multi-turn: prompt = user turns, responses = assistant turns; a null reply becomes ""
    assert r2["prompt"] == ["Fuji vs. Nikon, which is better?", "Which one has better lenses for wildlife?"]
    assert r2["response_a"] == ["Both make excellent cameras.",
                                "Nikon has a wider range of long telephoto lenses."]
    assert r2["response_b"] == ["It depends on what you shoot.", ""]
    assert rows == Arena33k(dedup=False, file=f"arena-33k/battles.{fmt}").data_sources(
        "train", DataContext(tmp_path, 0))


def test_arena_winner_mapping():
    assert winner_label("model_a") == [1, 0, 0]
    assert winner_label("model_b") == [0, 1, 0]
    assert (winner_label("tie") == winner_label("tie (bothbad)") == winner_label(" Tie  (bothbad) ")
            == [0, 0, 1])
    assert (winner_label("bothbad") is None and winner_label(None) is None
            and winner_label(float("nan")) is None)


def test_arena_dedup_within_set_and_against_valid(tmp_path, caplog):
    write_arena(tmp_path / "arena-33k" / "b.json", arena_records(), "json")
    rows = Arena33k().data_sources("train", DataContext(tmp_path, 0))
    assert len(rows) == 4  # the swapped duplicate (extra space in its prompt) is dropped
    assert "dedup dropped 1 of 5" in caplog.text
    valid = {prompt_group(["fuji VS. nikon, which is better?", "Which one has better lenses for wildlife?"])}
    rows = Arena33k().data_sources("train", DataContext(tmp_path, 0, valid_groups=valid))
    assert len(rows) == 3 and all("Fuji" not in r["prompt"][0] for r in rows)
    assert "dropped 1 of 4 row(s) whose prompt is in the validation or test split" in caplog.text
    assert Arena33k().data_sources("valid", DataContext(tmp_path, 0)) is None
    assert Arena33k().data_sources("pool", DataContext(tmp_path, 0)) is None


def test_arena_dedup_against_the_competition_train_set(tmp_path, caplog):
    """The 21k: a 33k battle whose prompt and (unordered) responses are a competition row's is dropped."""
    from ..conftest import write_csv

    recs = arena_records()
    write_arena(tmp_path / "arena-33k" / "b.json", recs, "json")
    first = Arena33k().data_sources("train", DataContext(tmp_path, 0))[0]
    with pytest.raises(Exception, match="against"):
        _Arena33k().data_sources("train", DataContext(tmp_path, 0))  # the default needs the competition file
    same = {"id": "77", "model_a": "x", "model_b": "y", "prompt": json.dumps(first["prompt"]),
            "response_a": json.dumps(first["response_b"]), "response_b": json.dumps(first["response_a"]),
            "winner_model_a": 0, "winner_model_b": 1, "winner_tie": 0}  # the same battle, A and B swapped
    write_csv(tmp_path / "lmsys-chatbot-arena" / "train.csv", [same])
    rows = _Arena33k().data_sources("train", DataContext(tmp_path, 0))
    assert first["id"] not in {r["id"] for r in rows} and len(rows) == 3
    assert "1 of 4 row(s) repeat a row of lmsys-chatbot-arena/train.csv" in caplog.text


def test_arena_competition_schema(tmp_path):
    path = tmp_path / "arena-33k" / "lmsys-33k-deduplicated.csv"
    path.parent.mkdir()
    with open(path, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "model_a", "model_b", "prompt", "response_a", "response_b",
                    "winner_model_a", "winner_model_b", "winner_tie"])
        w.writerow(["1234", "gpt-4", "claude-1", json.dumps(["Name a prime number above 100."]),
                    json.dumps(["101 is prime."]), json.dumps(["100 is prime."]), 1, 0, 0])
    (rows,) = Arena33k().data_sources("train", DataContext(tmp_path, 0))
    assert rows["id"] == "arena33k-1234" and rows["label"] == [1.0, 0.0, 0.0]


@pytest.mark.parametrize("edit, field, message", [
    ({"winner": "bothbad"}, "winner", "expected one of model_a, model_b, tie, tie (bothbad)"),
    ({"winner": None}, "winner", "got None"),
    ({"conversation_b": "not json"}, "conversation_b", "invalid JSON"),
    ({"conversation_a": [{"role": "assistant", "content": "Hi"}]}, "conversation_a",
     "before any user message"),
    ({"conversation_a": [{"role": "narrator", "content": "Hi"}]}, "conversation_a",
     "unknown role 'narrator'"),
    ({"conversation_a": [{"role": "user", "content": 42}]}, "conversation_a", "content is a int"),
    ({"conversation_b": []}, "conversation_b", "no user message"),
])
def test_arena_malformed_names_file_row_field(tmp_path, edit, field, message):
    recs = arena_records()
    recs[1].update(edit)
    path = write_arena(tmp_path / "arena-33k" / "b.jsonl", recs, "jsonl")
    with pytest.raises(DataError) as e:
        Arena33k().data_sources("train", DataContext(tmp_path, 0))
    assert e.value.file == str(path)
    ((rid, f, msg),) = e.value.problems
    assert rid == "2564acd09e3942fd97657d05282d4389 (line 2)" and f == field and message in msg
    assert str(path) in str(e.value)


def test_arena_missing_column_and_bad_jsonl_line(tmp_path):
    recs = arena_records()
    for r in recs:
        del r["winner"]
    write_arena(tmp_path / "a.json", recs, "json")
    with pytest.raises(DataError, match="missing required column.*winner"):
        Arena33k(file=str(tmp_path / "a.json")).data_sources("train", DataContext(tmp_path, 0))
    p = tmp_path / "b.jsonl"
    p.write_text(json.dumps(arena_records()[0]) + "\n{\"question_id\": \"x\", \n", encoding="utf-8")
    with pytest.raises(DataError) as e:
        Arena33k(file=str(p)).data_sources("train", DataContext(tmp_path, 0))
    assert e.value.problems[0][:2] == ("line 2", "(line)")


def test_arena_check_messages(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (msg,) = Arena33k().data_check(tmp_path)
    assert "33k arena data not found" in msg and str(tmp_path / "arena-33k") in msg
    assert ("REPLICATOR_DATA_DIR" in msg and "absolute path" in msg
            and "lmsys/chatbot_arena_conversations" in msg)
    (msg,) = Arena33k(hub_id=None).data_check(tmp_path)
    assert "Hugging Face" not in msg
    with pytest.raises(ReplicatorError, match="33k arena data not found"):
        Arena33k().data_sources("train", DataContext(tmp_path, 0))
    (tmp_path / "arena-33k").mkdir()
    assert "has no .json" in Arena33k().data_check(tmp_path)[0]
    write_arena(tmp_path / "arena-33k" / "part-2.jsonl", arena_records()[2:], "jsonl")
    write_arena(tmp_path / "arena-33k" / "part-1.jsonl", arena_records()[:2], "jsonl")
    assert Arena33k().data_check(tmp_path) == []
    assert [p.name for p in Arena33k().data_files(tmp_path)] == ["part-1.jsonl", "part-2.jsonl"]


def test_arena_params_rejected():
    with pytest.raises(ValueError, match="max_rows"):
        Arena33k(max_rows=-1)
