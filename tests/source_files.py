"""Hand-written files of every extra data source, in their published formats (not copied from the shared
data): the 33k arena battles, UltraFeedback pairs, HH-RLHF transcripts, a pseudo-label pool and MT-bench
human judgments."""

from __future__ import annotations

import csv
import gzip
import json
import math
import os
from pathlib import Path

import pytest

from replicator.core.rows import make_row

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


def real_dir() -> Path:
    d = os.environ.get("REPLICATOR_DATA_DIR")
    if not d:
        pytest.skip("REPLICATOR_DATA_DIR is not set")
    return Path(d)


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


QUESTIONS = {
    101: ["Write a short poem about the sea.", "Now make it rhyme."],
    102: ["What is 17 * 3?", "And divided by 3 again?"],
    103: ["Name a prime number above 10.", "Why is it prime?"],
}

ANSWERS = {
    ("m1", 101): ["Waves roll in and out, grey and wide.", "The sea is blue, the sky is too."],
    ("m2", 101): ["Sea.", "Sea, free."],
    ("m3", 101): ["Salt and foam beneath the moon.", "Salt and foam, a silver tune."],
    ("m1", 102): ["17 * 3 = 51.", "51 / 3 = 17."],
    ("m2", 102): ["It is 41.", "About 13."],
    ("m3", 102): ["51", "17"],
    ("m1", 103): ["11 is prime.", "Its only divisors are 1 and 11."],
    ("m2", 103): ["12.", "Because it is."],
    ("m3", 103): ["13", "It has no divisors but 1 and itself."],
}


def conversation(model: str, q: int) -> list[dict]:
    out = []
    for user, answer in zip(QUESTIONS[q], ANSWERS[(model, q)], strict=True):
        out += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    return out


def judgment(q: int, a: str, b: str, winner: str, judge: str, turn: int) -> dict:
    return {"question_id": q, "model_a": a, "model_b": b, "winner": winner, "judge": judge, "turn": turn,
            "category": "writing", "conversation_a": conversation(a, q), "conversation_b": conversation(b, q)}


def mt_bench_records() -> list[dict]:
    """12 judgments: 3 questions, both turns, two judges of one pair, ties, B over-represented."""
    return [
        judgment(101, "m1", "m2", "model_a", "expert_1", 1),
        judgment(101, "m1", "m2", "tie", "author_2", 1),  # second judge of the same pair and turn
        judgment(101, "m1", "m2", "model_a", "expert_1", 2),
        judgment(101, "m2", "m3", "model_b", "expert_3", 1),
        judgment(101, "m2", "m3", "model_b", "expert_3", 2),
        judgment(102, "m2", "m1", "model_b", "expert_1", 1),
        judgment(102, "m3", "m1", "tie", "expert_2", 1),
        judgment(102, "m2", "m3", "model_b", "author_1", 2),
        judgment(103, "m1", "m2", "model_a", "expert_4", 1),
        judgment(103, "m2", "m3", "model_b", "expert_4", 2),
        judgment(103, "m1", "m3", "tie", "expert_4", 2),
        judgment(103, "m2", "m1", "model_b", "expert_5", 1),
    ]


def write_mt_bench(path: Path, records=None, raw_lines=()) -> Path:
    return write_jsonl_gz(path, mt_bench_records() if records is None else records, raw_lines)
