"""The mt_bench data source (plugins/mt_bench.py): MT-bench human judgments as training rows, on a small
hand-written JSONL.gz, and (``real_data``) on the shared file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from replicator.core.errors import DataError, ReplicatorError
from replicator.core.rows import DataContext, prompt_group
from replicator.plugins.mt_bench import MTBenchHuman

from ..source_files import ANSWERS, QUESTIONS, conversation, judgment, mt_bench_records, write_mt_bench

FILE = "mt-bench-human/human_judgments.jsonl.gz"


@pytest.fixture()
def mt_dir(tmp_path) -> Path:
    write_mt_bench(tmp_path / FILE)
    return tmp_path


def rows_of(d: Path, seed: int = 0, valid_groups=(), **kw) -> list[dict]:
    return MTBenchHuman(**kw).data_sources("train", DataContext(d, seed, valid_groups=set(valid_groups)))


def test_one_row_per_judgment_with_what_the_judge_saw(mt_dir):
    rows = rows_of(mt_dir)
    assert len(rows) == 12 and len({r["id"] for r in rows}) == 12
    first = rows[0]
    assert first["id"] == "mtbench-101-m1-m2-t1-expert_1" and first["source"] == "mt_bench"
    assert first["prompt"] == QUESTIONS[101][:1] and first["response_a"] == ANSWERS[("m1", 101)][:1]
    assert first["response_b"] == ANSWERS[("m2", 101)][:1] and first["label"] == [1.0, 0.0, 0.0]
    assert (first["model_a"], first["model_b"]) == ("m1", "m2")
    turn2 = rows[2]
    assert turn2["prompt"] == QUESTIONS[101] and turn2["response_b"] == ANSWERS[("m2", 101)]
    assert [r["label"] for r in rows[:2]] == [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    # prompt groups by question: turn-1 and turn-2 rows of a question share one group
    groups = {q: {r["group"] for r in rows if r["id"].startswith(f"mtbench-{q}-")} for q in QUESTIONS}
    assert all(len(g) == 1 for g in groups.values()) and len(set.union(*groups.values())) == 3
    assert groups[101] == {prompt_group(QUESTIONS[101])}
    assert sum(r["label"][1] for r in rows) == 6  # the file's orientation: B over-represented


def test_whole_conversation_ties_and_soft_aggregation(mt_dir):
    rows = rows_of(mt_dir, turn_judged="conversation")
    assert all(r["prompt"] == QUESTIONS[int(r["id"].split("-")[1])] for r in rows)
    no_ties = rows_of(mt_dir, ties=False)
    assert len(no_ties) == 9 and all(r["label"][2] == 0.0 for r in no_ties)
    soft = rows_of(mt_dir, aggregate="soft")
    assert len(soft) == 11 and soft[0]["id"] == "mtbench-101-m1-m2-t1"
    assert soft[0]["label"] == [0.5, 0.0, 0.5]  # expert_1: A, author_2: tie
    # first-appearance order
    assert [r["id"] for r in soft[1:3]] == ["mtbench-101-m1-m2-t2", "mtbench-101-m2-m3-t1"]
    soft_no_ties = rows_of(mt_dir, aggregate="soft", ties=False)
    assert soft_no_ties[0]["label"] == [1.0, 0.0, 0.0]


def test_max_rows_keeps_order_and_other_splits_get_nothing(mt_dir):
    full = [r["id"] for r in rows_of(mt_dir)]
    some = [r["id"] for r in rows_of(mt_dir, max_rows=5)]
    assert len(some) == 5 and some == [i for i in full if i in some]
    assert some == [r["id"] for r in rows_of(mt_dir, max_rows=5)]  # the same seed: the same rows
    assert {tuple(r["id"] for r in rows_of(mt_dir, seed=s, max_rows=5)) for s in range(6)} != {tuple(some)}
    ctx = DataContext(mt_dir, 0)
    assert (MTBenchHuman().data_sources("valid", ctx) is None
            and MTBenchHuman().data_sources("test", ctx) is None)


def test_questions_held_out_are_dropped_whole(mt_dir):
    """A validation prompt equal to a question's first turn (or its two turns) removes all its rows."""
    by_first = rows_of(mt_dir, valid_groups=[prompt_group(QUESTIONS[101][:1])])
    assert len(by_first) == 7 and not any(r["id"].startswith("mtbench-101-") for r in by_first)
    by_full = rows_of(mt_dir, valid_groups=[prompt_group(QUESTIONS[102])])
    assert len(by_full) == 9 and not any(r["id"].startswith("mtbench-102-") for r in by_full)
    rows = rows_of(mt_dir)
    rows[0]["prompt"].append("edited")  # copies: the cached rows are not reachable
    assert rows_of(mt_dir)[0]["prompt"] == QUESTIONS[101][:1]


@pytest.mark.parametrize("edit, field, words", [
    ({"winner": "model_c"}, "winner", "unexpected value 'model_c'; expected one of model_a"),
    ({"turn": 3}, "turn", "expected 1 or 2"),
    ({"model_b": None}, "model_b", "unexpected value None"),
    ({"conversation_a": "text"}, "conversation_a", "expected a list of {role, content}"),
    ({"conversation_b": [{"role": "user", "content": "x"}]}, "conversation_b", "turn 1 needs 2"),
    ({"conversation_b": [{"role": "assistant", "content": "x"}, {"role": "user", "content": "y"}]},
     "conversation_b", "expected 'user'"),
    ({"conversation_b": conversation("m2", 102)}, "conversation_b", "user turns differ"),
])
def test_bad_records_name_line_and_field(tmp_path, edit, field, words):
    recs = mt_bench_records()
    recs[3] = {**recs[3], **edit}
    write_mt_bench(tmp_path / FILE, recs)
    with pytest.raises(DataError) as e:
        rows_of(tmp_path)
    msg = str(e.value)
    assert "line 4" in msg and field in msg and words in msg, msg


def test_soft_needs_judges_of_a_pair_to_see_the_same_answers(tmp_path):
    recs = mt_bench_records()
    recs[1] = {**recs[1], "conversation_b": conversation("m3", 101)}
    write_mt_bench(tmp_path / FILE, recs)
    assert len(rows_of(tmp_path)) == 12  # one row per judgment: nothing to reconcile
    with pytest.raises(DataError, match="judges of one pair saw different answers"):
        rows_of(tmp_path, aggregate="soft")


def test_missing_file_invalid_json_and_parameters(tmp_path):
    with pytest.raises(ReplicatorError, match="MT-bench human judgments file not found"):
        rows_of(tmp_path)
    problems = MTBenchHuman().data_check(tmp_path)
    assert (len(problems) == 1 and "REPLICATOR_DATA_DIR" in problems[0]
            and "lmsys/mt_bench_human_judgments" in problems[0])
    assert MTBenchHuman().data_files(tmp_path) == [tmp_path / FILE]
    write_mt_bench(tmp_path / FILE, raw_lines=["{not json"])
    with pytest.raises(DataError, match="line 13"):
        rows_of(tmp_path)
    write_mt_bench(tmp_path / FILE, [judgment(101, "m1", "m2", "tie", "e", 1)])
    with pytest.raises(DataError, match="no judgments other than ties"):
        rows_of(tmp_path, ties=False)
    with pytest.raises(ValueError, match="max_rows"):
        MTBenchHuman(max_rows=-1)


def test_in_a_recipe_with_kaggle_rows(mt_dir, tmp_path):
    """Resolved through the manager like any source; its rows join the competition rows in training."""
    from replicator.core.config.catalogue import build_plugins
    from replicator.core.data.collect import collect_rows

    from ..conftest import write_competition_files

    write_competition_files(mt_dir, 40, 4)
    plugins = build_plugins({"data": {"use": "kaggle_csv"}, "extra": {"use": "mt_bench", "aggregate": "soft"},
                             "prompt": {"use": "plain_turns"}, "head": {"use": "default_head"},
                             "loss": {"use": "cross_entropy"}}, "r.yaml")
    assert mt_dir / FILE in plugins.data_files(mt_dir)
    train, valid = collect_rows(plugins, DataContext(mt_dir, 0))
    assert sum(r["source"] == "mt_bench" for r in train) == 11 and valid
    assert json.dumps(train)  # plain data


@pytest.mark.real_data
def test_real_mt_bench_human_judgments():
    d = os.environ.get("REPLICATOR_DATA_DIR")
    if not d:
        pytest.skip("REPLICATOR_DATA_DIR is not set")
    rows = MTBenchHuman().data_sources("train", DataContext(Path(d), 0))
    assert len(rows) == 1751 and len({r["id"] for r in rows}) == 1751
    winners = [("model_a", "model_b", "tie")[r["label"].index(1.0)] for r in rows]
    assert (winners.count("model_b"), winners.count("tie"), winners.count("model_a")) == (1040, 417, 294)
    assert len({r["group"] for r in rows}) == 80
    assert {len(r["prompt"]) for r in rows} == {1, 2}
    soft = MTBenchHuman(aggregate="soft").data_sources("train", DataContext(Path(d), 0))
    assert len(soft) < len(rows) and all(abs(sum(r["label"]) - 1) < 1e-9 for r in soft)
    for r in rows:
        for t in r["prompt"] + r["response_a"] + r["response_b"]:
            t.encode("utf-8")
