"""The extra-data sources: arena_33k, ultrafeedback_pairs, hh_rlhf, pseudo_labels.

Every input file here is hand-written for these tests (realistic content, not copied from the
shared data); the ``real_data`` test reads the shared HH-RLHF file through REPLICATOR_DATA_DIR.
"""

from __future__ import annotations

import csv
import gzip
import json
import logging
import math
import os
from pathlib import Path

import pytest

from replicator.core.data import splits
from replicator.core.errors import DataError, ReplicatorError
from replicator.core.rows import DataContext, make_row, prompt_group
from replicator.plugins.arena_33k import Arena33k as _Arena33k
from replicator.plugins.arena_33k import winner_label
from replicator.plugins.hh_rlhf import HHRLHF, parse_transcript
from replicator.plugins.pseudo_labels import PseudoLabels
from replicator.plugins.ultrafeedback import UltraFeedbackPairs, rating_label


def Arena33k(**kw):  # noqa: N802 -- these folders have no competition train.csv to de-duplicate against
    return _Arena33k(**{"against": None, **kw})


@pytest.fixture(autouse=True)
def _info_logs(caplog):
    """The sources report what they drop or repair at INFO (``replicator.*`` loggers): capture it."""
    caplog.set_level(logging.INFO, logger="replicator")


def conv(*turns) -> list[dict]:
    """user, assistant, user, assistant, ... -> arena messages."""
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]


def check_labels(rows):
    for r in rows:
        assert len(r["label"]) == 3
        assert all(isinstance(x, float) and math.isfinite(x) and 0 <= x <= 1 for x in r["label"]), r
        assert math.isclose(sum(r["label"]), 1.0, abs_tol=1e-12)
        assert len(r["prompt"]) == len(r["response_a"]) == len(r["response_b"]) >= 1
        assert all(isinstance(t, str) for t in r["prompt"] + r["response_a"] + r["response_b"])


# ---------------------------------------------------------------------------------------------
# arena_33k


def arena_records() -> list[dict]:
    """Five battles in the chatbot_arena_conversations schema (hand-written)."""
    base = {"judge": "arena_user_1204", "anony": True, "language": "English", "tstamp": 1682351591.1322}
    return [
        {**base, "question_id": "58210e39b3fd4441a2bd4a518bb44c2d", "model_a": "chatglm-6b",
         "model_b": "koala-13b", "winner": "model_b", "turn": 1,
         "conversation_a": conv("What is the difference between OpenCL and CUDA?",
                                "OpenCL and CUDA are two different programming models."),
         "conversation_b": conv("What is the difference between OpenCL and CUDA?",
                                "CUDA is NVIDIA's proprietary platform; OpenCL is an open standard that "
                                "runs on GPUs and CPUs from many vendors.")},
        {**base, "question_id": "2564acd09e3942fd97657d05282d4389", "model_a": "oasst-pythia-12b",
         "model_b": "alpaca-13b", "winner": "tie", "turn": 1,
         "conversation_a": conv("Why did my parent not invite me to their wedding?",
                                "It is possible that they wanted a small ceremony."),
         "conversation_b": conv("Why did my parent not invite me to their wedding?",
                                "I don't know the reason; it might help to ask them directly.")},
        {**base, "question_id": "90bfd142157948aba01931726c888e7f", "model_a": "koala-13b",
         "model_b": "oasst-pythia-12b", "winner": "model_a", "turn": 2,
         "conversation_a": conv("Fuji vs. Nikon, which is better?", "Both make excellent cameras.",
                                "Which one has better lenses for wildlife?",
                                "Nikon has a wider range of long telephoto lenses."),
         "conversation_b": conv("Fuji vs. Nikon, which is better?", "It depends on what you shoot.",
                                "Which one has better lenses for wildlife?", None)},
        {**base, "question_id": "a7c5accc53e649a3bc6b2e41d962ebc4", "model_a": "vicuna-13b",
         "model_b": "stablelm-tuned-alpha-7b", "winner": "tie (bothbad)", "language": "Spanish", "turn": 1,
         "conversation_a": conv("Cuál es la capital de Australia?", "La capital de Australia es Sídney."),
         "conversation_b": conv("Cuál es la capital de Australia?", "Melbourne.")},
        # an A/B-swapped duplicate of the first battle (dedup drops it)
        {**base, "question_id": "c0fd8b8d0e1c4c0e9a1e8bd3b1c1f001", "model_a": "koala-13b",
         "model_b": "chatglm-6b", "winner": "model_a", "turn": 1,
         "conversation_a": conv("What is the difference between  OpenCL and CUDA?",
                                "CUDA is NVIDIA's proprietary platform; OpenCL is an open standard that "
                                "runs on GPUs and CPUs from many vendors."),
         "conversation_b": conv("What is the difference between OpenCL and CUDA?",
                                "OpenCL and CUDA are two different programming models.")},
    ]


def write_arena(path: Path, records: list[dict], fmt: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "json":
        path.write_text(json.dumps(records), encoding="utf-8")
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    elif fmt == "parquet":
        import pandas as pd

        pd.DataFrame(records).to_parquet(path)
    elif fmt == "csv":
        cols = list(records[0])
        with open(path, "w", encoding="utf-8", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=cols)
            w.writeheader()
            for r in records:
                w.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in r.items()})
    return path


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
    from .conftest import write_csv

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


# ---------------------------------------------------------------------------------------------
# ultrafeedback_pairs


def uf_binarized() -> list[dict]:
    """Rated pairs in the ultrafeedback_binarized schema (hand-written); ratings 1-10."""
    rows = []
    topics = ["photosynthesis", "the French Revolution", "binary search", "compound interest",
              "plate tectonics", "the Pythagorean theorem", "vaccines", "black holes", "supply and demand",
              "recursion"]
    for i in range(60):
        t = topics[i % len(topics)]
        q = f"Explain {t} to a twelve-year-old." + ("" if i < len(topics) else f" Use example #{i}.")
        rows.append({"prompt": q, "prompt_id": f"{i:04x}" * 4,
                     "chosen": f"Sure! {t.capitalize()} is easiest to see with an everyday example ...",
                     "rejected": f"{t} is a complex topic.",
                     "score_chosen": 8.5 if i % 7 else 6.0, "score_rejected": 6.0 if i % 5 else 3.0})
    return rows


def write_parquet(path: Path, records) -> Path:
    import pandas as pd

    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(records).to_parquet(path)
    return path


def test_rating_label_rule():
    assert rating_label(0.0, 1.0, ties=True) == [0, 0, 1]
    assert rating_label(0.0, 1.0, ties=False) == [0.5, 0.5, 0]
    assert rating_label(0.0, 0.0, ties=False) is None
    assert rating_label(2.5, 0.0, ties=True) == [1, 0, 0] and rating_label(-1, 0.0, ties=True) == [0, 1, 0]
    p = rating_label(1.0, 1.0, ties=True)
    assert math.isclose(p[0], 1 / (1 + math.exp(-1))) and p[2] == 0 and math.isclose(sum(p), 1)
    assert rating_label(-1.0, 2.0, ties=True)[1] == pytest.approx(1 / (1 + math.exp(-0.5)))
    big = rating_label(-1e6, 1e-3, ties=True)  # no overflow, no NaN
    assert big == [0.0, 1.0, 0.0]


def test_ultrafeedback_binarized_soft_labels_and_order(tmp_path):
    write_parquet(tmp_path / "ultrafeedback" / "ultrafeedback_binarized.parquet", uf_binarized())
    rows = UltraFeedbackPairs().data_sources("train", DataContext(tmp_path, 0))
    assert len(rows) == 60
    check_labels(rows)
    src = {r["prompt"]: r for r in uf_binarized()}
    a_first = 0
    for r in rows:
        s = src[r["prompt"][0]]
        chosen_is_a = r["response_a"][0] == s["chosen"]
        a_first += chosen_is_a
        d = (s["score_chosen"] - s["score_rejected"]) * (1 if chosen_is_a else -1)
        assert r["label"] == pytest.approx(rating_label(d, 1.0, True))
        assert r["id"] == "uf-" + s["prompt_id"] and r["source"] == "ultrafeedback_pairs"
    assert 18 <= a_first <= 42  # roughly balanced
    ties = [r for r in rows if r["label"][2] == 1.0]
    assert len(ties) == sum(s["score_chosen"] == s["score_rejected"] for s in uf_binarized()) > 0
    again = UltraFeedbackPairs().data_sources("train", DataContext(tmp_path, 0))
    assert again == rows  # deterministic for a seed
    other = UltraFeedbackPairs().data_sources("train", DataContext(tmp_path, 1))
    assert [r["response_a"] for r in other] != [r["response_a"] for r in rows]


def test_ultrafeedback_hard_and_no_ties(tmp_path, caplog):
    path = write_parquet(tmp_path / "uf.parquet", uf_binarized())
    rows = UltraFeedbackPairs(file=str(path), temperature=0.0, ties=False).data_sources(
        "train", DataContext(tmp_path, 0))
    n_equal = sum(s["score_chosen"] == s["score_rejected"] for s in uf_binarized())
    assert len(rows) == 60 - n_equal
    assert f"dropped {n_equal} pair(s) with equal ratings" in caplog.text
    assert all(sorted(r["label"]) == [0.0, 0.0, 1.0] and r["label"][2] == 0.0 for r in rows)
    soft = UltraFeedbackPairs(file=str(path), ties=False).data_sources("train", DataContext(tmp_path, 0))
    assert len(soft) == 60 and not any(r["label"][2] for r in soft)
    check_labels(soft)


def test_ultrafeedback_raw_schema_and_messages(tmp_path):
    raw = [{"source": "evol_instruct", "instruction": "Write a limerick about a cat who learns to code.",
            "models": ["gpt-4", "llama-2-7b-chat", "wizardlm-13b", "falcon-40b-instruct"],
            "completions": [
                {"model": "gpt-4", "response": "There once was a cat named Lou ...", "overall_score": 8.0},
                {"model": "llama-2-7b-chat", "response": "A cat who could code ...", "overall_score": 6.5},
                {"model": "wizardlm-13b", "response": "Cats cannot code.", "overall_score": 2.0},
                {"model": "falcon-40b-instruct", "response": None, "overall_score": 1},
            ]}]
    path = write_parquet(tmp_path / "raw.parquet", raw)
    (best_worst,) = UltraFeedbackPairs(file=str(path), pairing="best_vs_worst").data_sources(
        "train", DataContext(tmp_path, 0))
    assert {best_worst["model_a"], best_worst["model_b"]} == {"gpt-4", "falcon-40b-instruct"}
    assert "" in best_worst["response_a"] + best_worst["response_b"]
    (best_random,) = UltraFeedbackPairs(file=str(path)).data_sources("train", DataContext(tmp_path, 0))
    assert "gpt-4" in (best_random["model_a"], best_random["model_b"])
    allp = UltraFeedbackPairs(file=str(path), pairing="all_pairs").data_sources(
        "train", DataContext(tmp_path, 0))
    assert len(allp) == 6 and len({r["id"] for r in allp}) == 6
    check_labels(allp + [best_worst, best_random])
    # binarized with whole conversations as chosen/rejected
    msgs = [{"prompt": "What is 2+2?", "prompt_id": "p1", "score_chosen": 10.0, "score_rejected": 3.0,
             "chosen": [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}],
             "rejected": [{"role": "user", "content": "What is 2+2?"},
                          {"role": "assistant", "content": "22"}]}]
    (r,) = UltraFeedbackPairs(file=str(write_parquet(tmp_path / "m.parquet", msgs))).data_sources(
        "train", DataContext(tmp_path, 0))
    assert r["prompt"] == ["What is 2+2?"] and {r["response_a"][0], r["response_b"][0]} == {"4", "22"}


def test_ultrafeedback_malformed_and_check(tmp_path, monkeypatch):
    recs = uf_binarized()[:3]
    recs[2]["score_rejected"] = float("nan")
    path = write_parquet(tmp_path / "bad.parquet", recs)
    with pytest.raises(DataError) as e:
        UltraFeedbackPairs(file=str(path)).data_sources("train", DataContext(tmp_path, 0))
    assert e.value.file == str(path)
    assert e.value.problems == [
        ("0002000200020002 (record 2)", "score_rejected", "expected a finite number, got nan")]
    with pytest.raises(DataError, match="expected the binarized columns"):
        UltraFeedbackPairs(file=str(write_parquet(tmp_path / "x.parquet", [{"q": "hi"}]))).data_sources(
            "train", DataContext(tmp_path, 0))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (msg,) = UltraFeedbackPairs().data_check(tmp_path)
    assert "UltraFeedback pairs not found" in msg and "alpacaeval_pairs" in msg and "absolute path" in msg
    with pytest.raises(ValueError, match="temperature"):
        UltraFeedbackPairs(temperature=-1.0)


def test_ultrafeedback_dedup_valid(tmp_path, caplog):
    path = write_parquet(tmp_path / "uf.parquet", uf_binarized())
    valid = {prompt_group(["Explain binary search to a twelve-year-old."])}
    rows = UltraFeedbackPairs(file=str(path)).data_sources("train",
                                                           DataContext(tmp_path, 0, valid_groups=valid))
    assert len(rows) == 59 and "dropped 1 of 60" in caplog.text
    assert UltraFeedbackPairs(file=str(path)).data_sources("valid", DataContext(tmp_path, 0)) is None


# ---------------------------------------------------------------------------------------------
# hh_rlhf


def hh_records() -> list[dict]:
    """HH-RLHF style transcripts (hand-written): single-turn, multi-turn, doubled marker, empty last reply."""
    recs = [
        {"chosen": "\n\nHuman: How do I get a splinter out?\n\nAssistant: Clean the area, then use "
                   "sterilised tweezers to pull it out in the direction it went in.",
         "rejected": "\n\nHuman: How do I get a splinter out?\n\nAssistant: Just leave it."},
        {"chosen": "\n\nHuman: My neighbor's dog barks all night.\n\nAssistant: That sounds frustrating.\n\n"
                   "Human: How can I make it stop?\n\nAssistant: Try talking to your neighbor first; if that "
                   "fails, contact your local council about noise rules.",
         "rejected": "\n\nHuman: My neighbor's dog barks all night.\n\nAssistant: That sounds "
                     "frustrating.\n\nHuman: How can I make it stop?\n\nAssistant: You could put something "
                     "in its food."},
        {"chosen": "\n\nHuman: What is a good name for a goldfish?\n\nAssistant: How about Bubbles?  Human: "
                   "something else\n\nAssistant: Or Captain Fin.",
         "rejected": "\n\nHuman: What is a good name for a goldfish?\n\nAssistant: Fish."},
        {"chosen": "\n\nHuman: Tell me a joke about computers.\n\nAssistant: Why did the computer go to the "
                   "doctor? It had a virus.",
         "rejected": "\n\nHuman: Tell me a joke about computers.\n\nAssistant:"},
    ]
    for i in range(56):
        q = f"Can you recommend a book about topic number {i}?"
        recs.append({"chosen": f"\n\nHuman: {q}\n\nAssistant: Here is a well-reviewed introduction I'd "
                               "suggest.",
                     "rejected": f"\n\nHuman: {q}\n\nAssistant: No."})
    return recs


def write_jsonl_gz(path: Path, records, raw_lines=()) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r) + "\n")
        for line in raw_lines:
            fh.write(line + "\n")
    return path


def test_parse_transcript():
    h, a, err = parse_transcript(hh_records()[1]["chosen"])
    assert err is None and h == ["My neighbor's dog barks all night.", "How can I make it stop?"]
    assert a[0] == "That sounds frustrating." and a[1].startswith("Try talking")
    h, a, err = parse_transcript(hh_records()[2]["chosen"])  # inline "Human:" is text; doubled marker merged
    assert h == ["What is a good name for a goldfish?"]
    assert a == ["How about Bubbles?  Human: something else\n\nOr Captain Fin."]
    assert parse_transcript(hh_records()[3]["rejected"])[:2] == (["Tell me a joke about computers."], [""])
    assert "does not start with a Human turn" in parse_transcript("\n\nAssistant: hi\n\nHuman: yo")[2]
    assert "no Assistant turn" in parse_transcript("\n\nHuman: hello?")[2]
    assert "text before the first" in parse_transcript("Human: hi\n\nAssistant: hello")[2]


def test_hh_rlhf_conversion_and_seeded_order(tmp_path):
    write_jsonl_gz(tmp_path / "hh-rlhf" / "harmless-base-test.jsonl.gz", hh_records())
    rows = HHRLHF().data_sources("train", DataContext(tmp_path, 0))
    assert len(rows) == 60
    check_labels(rows)
    assert [r["id"] for r in rows[:2]] == ["hh-harmless-base-test-1", "hh-harmless-base-test-2"]
    chosen_a = 0
    for rec, r in zip(hh_records(), rows, strict=True):
        assert r["label"] in ([1.0, 0.0, 0.0], [0.0, 1.0, 0.0])  # hard, never a tie
        chosen = parse_transcript(rec["chosen"])[1]
        winner = r["response_a"] if r["label"][0] == 1.0 else r["response_b"]
        assert winner == chosen
        chosen_a += r["label"][0] == 1.0
        assert r["response_a"][:-1] == r["response_b"][:-1]  # shared context: only the last reply differs
    assert 18 <= chosen_a <= 42
    multi = rows[1]
    assert multi["prompt"] == ["My neighbor's dog barks all night.", "How can I make it stop?"]
    assert HHRLHF().data_sources("train", DataContext(tmp_path, 0)) == rows
    flipped = HHRLHF().data_sources("train", DataContext(tmp_path, 7))
    assert [r["label"] for r in flipped] != [r["label"] for r in rows]
    assert len(HHRLHF(max_rows=10).data_sources("train", DataContext(tmp_path, 0))) == 10
    valid = {rows[0]["group"]}
    assert len(HHRLHF().data_sources("train", DataContext(tmp_path, 0, valid_groups=valid))) == 59
    assert HHRLHF().data_sources("valid", DataContext(tmp_path, 0)) is None


@pytest.mark.parametrize("line, field, message", [
    ('{"chosen": "\\n\\nHuman: hi\\n\\nAssistant: hello"}', "rejected", "missing"),
    ('{"chosen": 3, "rejected": "\\n\\nHuman: hi\\n\\nAssistant: hello"}', "chosen", "a int"),
    ('{"chosen": "\\n\\nHuman: hi", "rejected": "\\n\\nHuman: hi\\n\\nAssistant: yo"}', "chosen",
     "no Assistant"),
    ('{"chosen": "\\n\\nHuman: hi\\n\\nAssistant: a", "rejected": "\\n\\nHuman: hey\\n\\nAssistant: b"}',
     "rejected", "Human turns differ"),
    ('{"chosen": "\\n\\nHuman: hi\\n\\nAssistant: a", "rejected": ', "(line)", "invalid JSON"),
    ('["\\n\\nHuman: hi"]', "(line)", "expected a JSON object"),
])
def test_hh_rlhf_malformed_names_file_line_field(tmp_path, line, field, message):
    path = write_jsonl_gz(tmp_path / "hh.jsonl.gz", hh_records()[:3], raw_lines=[line])
    with pytest.raises(DataError) as e:
        HHRLHF(file=str(path)).data_sources("train", DataContext(tmp_path, 0))
    assert e.value.file == str(path)
    ((where, f, msg),) = e.value.problems
    assert (where, f) == ("line 4", field) and message in msg
    assert f"{path}: row line 4: field {field!r}" in str(e.value)


def test_hh_rlhf_check(tmp_path):
    (msg,) = HHRLHF().data_check(tmp_path)
    assert ("HH-RLHF file not found" in msg and "REPLICATOR_DATA_DIR" in msg
            and "harmless-base-test.jsonl.gz" in msg)
    with pytest.raises(ReplicatorError, match="HH-RLHF file not found"):
        HHRLHF().data_sources("train", DataContext(tmp_path, 0))
    assert HHRLHF().data_files(tmp_path) == [tmp_path / "hh-rlhf" / "harmless-base-test.jsonl.gz"]


@pytest.mark.real_data
def test_real_hh_rlhf():
    d = os.environ.get("REPLICATOR_DATA_DIR")
    if not d:
        pytest.skip("REPLICATOR_DATA_DIR is not set")
    rows = HHRLHF().data_sources("train", DataContext(Path(d), 0))
    assert len(rows) == 2312 and len({r["id"] for r in rows}) == 2312
    check_labels(rows)
    assert all(r["label"][2] == 0.0 for r in rows)
    assert 0.45 < sum(r["label"][0] for r in rows) / len(rows) < 0.55
    assert sum(len(r["prompt"]) > 1 for r in rows) > 1000  # most transcripts are multi-turn
    for r in rows:
        assert r["response_a"][:-1] == r["response_b"][:-1]
        for t in r["prompt"] + r["response_a"] + r["response_b"]:
            t.encode("utf-8")


# ---------------------------------------------------------------------------------------------
# pseudo_labels


def write_pool_csv(path: Path) -> Path:
    """Unlabelled pairs in the competition test format (hand-written)."""
    rows = [
        ("77001", ["Suggest a weekend trip from Berlin."], ["Dresden: 2 hours by train, baroque old town."],
         ["Go somewhere."]),
        ("77002", ["What is 15% of 80?"], ["12"], ["15% of 80 is 12."]),
        ("77003", ["Write a tweet about recycling.", "Shorter please."],
         ["Recycling isn't a chore, it's a habit worth keeping!", "Recycle: small habit, big impact."],
         ["Please recycle.", None]),
        ("77004", ["How do I center a div?"],
         ["Use display: flex with justify-content and align-items set to center."], ["Use <center>."]),
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "prompt", "response_a", "response_b"])
        for rid, p, a, b in rows:
            w.writerow([rid, json.dumps(p), json.dumps(a), json.dumps(b)])
    return path


def test_pseudo_labels_pool_split(tmp_path):
    write_pool_csv(tmp_path / "pool" / "lmsys-1m-pairs.csv")
    src = PseudoLabels(file="pool/lmsys-1m-pairs.csv")
    ctx = DataContext(tmp_path, 0, stage="teacher")
    pool = src.data_sources("pool", ctx)
    assert [r["id"] for r in pool] == ["pool-77001", "pool-77002", "pool-77003", "pool-77004"]
    assert all(r["label"] is None and r["source"] == "pseudo_labels" for r in pool)
    assert pool[2]["response_b"] == ["Please recycle.", ""]
    for split in ("train", "valid", "test"):
        assert src.data_sources(split, ctx) is None
    valid = {prompt_group(["what is 15% of 80?"])}
    assert len(src.data_sources("pool", DataContext(tmp_path, 0, valid_groups=valid))) == 3
    # a recipe-wide block with from_stage feeds the pool in the labeller stage itself
    both = PseudoLabels(file="pool/lmsys-1m-pairs.csv", from_stage="teacher")
    assert len(both.data_sources("pool", ctx)) == 4 and both.data_sources("train", ctx) is None


def fake_outputs(pool: list[dict]) -> dict:
    probs = {"pool-77001": [0.8, 0.1, 0.1], "pool-77002": [0.3, 0.3, 0.4], "pool-77003": [0.7, 0.2, 0.1],
             "pool-77004": [2.0, 6.0, 2.0]}  # unnormalised: renormalised to [0.2, 0.6, 0.2]
    return {"teacher": {"pool": probs,
                        "pool_rows": [{k: v for k, v in r.items() if k != "label"} for r in pool]}}


def test_pseudo_labels_from_stage(tmp_path, caplog):
    write_pool_csv(tmp_path / "pool.csv")
    pool = PseudoLabels(file="pool.csv").data_sources("pool", DataContext(tmp_path, 0, stage="teacher"))
    outs = fake_outputs(pool)
    ctx = DataContext(tmp_path, 0, stage="student", stage_outputs=outs)
    rows = PseudoLabels(from_stage="teacher").data_sources("train", ctx)
    check_labels(rows)
    assert [r["id"] for r in rows] == [r["id"] for r in pool]
    assert rows[0]["label"] == [0.8, 0.1, 0.1]
    assert rows[3]["label"] == pytest.approx([0.2, 0.6, 0.2])
    assert rows[2]["prompt"] == ["Write a tweet about recycling.", "Shorter please."]
    assert PseudoLabels(from_stage="teacher").data_sources("pool", ctx) is None
    hard = PseudoLabels(from_stage="teacher", hard=True).data_sources("train", ctx)
    assert [r["label"] for r in hard] == [[1, 0, 0], [0, 0, 1], [1, 0, 0], [0, 1, 0]]
    confident = PseudoLabels(from_stage="teacher", min_confidence=0.6).data_sources("train", ctx)
    assert [r["id"] for r in confident] == ["pool-77001", "pool-77003", "pool-77004"]
    assert "dropped 1 of 4 pool row(s)" in caplog.text
    valid = {prompt_group(["Suggest a weekend trip from Berlin."])}
    ctx_v = DataContext(tmp_path, 0, stage="student", stage_outputs=outs, valid_groups=valid)
    assert len(PseudoLabels(from_stage="teacher").data_sources("train", ctx_v)) == 3


def test_pseudo_labels_errors(tmp_path):
    ctx = DataContext(tmp_path, 0, stage="student", stage_outputs={"teacher": {"train": {"1": [1, 0, 0]}}})
    with pytest.raises(ReplicatorError) as e:
        PseudoLabels(from_stage="teacher").data_sources("train", ctx)
    assert "'teacher' wrote no pool predictions" in str(e.value) and "outputs: [pool]" in str(e.value)
    with pytest.raises(ReplicatorError, match="'teacher' wrote no pool predictions"):
        PseudoLabels(from_stage="teacher").data_sources("train", DataContext(tmp_path, 0, stage="student"))
    row = make_row("pool-1", ["hi"], ["a"], ["b"])
    bad = {"teacher": {"pool": {"pool-1": [float("nan"), 0.5, 0.5]}, "pool_rows": [row]}}
    with pytest.raises(ReplicatorError, match="row pool-1 is not three finite"):
        PseudoLabels(from_stage="teacher").data_sources("train", DataContext(tmp_path, 0, stage_outputs=bad))
    missing = {"teacher": {"pool": {"pool-2": [1, 0, 0]}, "pool_rows": [row]}}
    with pytest.raises(ReplicatorError, match="no pool prediction for row pool-1"):
        PseudoLabels(from_stage="teacher").data_sources("train",
                                                        DataContext(tmp_path, 0, stage_outputs=missing))
    with pytest.raises(ValueError, match="give file"):
        PseudoLabels()
    with pytest.raises(ValueError, match="min_confidence"):
        PseudoLabels(file="x.csv", min_confidence=1.5)
    (msg,) = PseudoLabels(file="pool.csv").data_check(tmp_path)
    assert "pseudo-label pool file not found" in msg and "REPLICATOR_DATA_DIR" in msg
    assert PseudoLabels(from_stage="teacher").data_check(tmp_path) == []
    with pytest.raises(ReplicatorError, match="no file"):
        PseudoLabels(from_stage="teacher").data_sources("pool", DataContext(tmp_path, 0, stage="teacher"))


def test_pseudo_labels_bad_csv_names_row(tmp_path):
    path = tmp_path / "pool.csv"
    path.write_text('id,prompt,response_a,response_b\n5,"[""hi""]","[""a""]","not json"\n', encoding="utf-8")
    with pytest.raises(DataError) as e:
        PseudoLabels(file=str(path)).data_sources("pool", DataContext(tmp_path, 0))
    assert e.value.problems[0][:2] == ("5", "response_b")


# ---------------------------------------------------------------------------------------------
# shared


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
