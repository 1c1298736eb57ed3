"""Shared fixtures: a synthetic competition data folder, an isolated run environment, the recipes and the
tiny-model overrides the tests run them with, and the fixtures several test modules use (captured INFO
logs, the hub off, the character tokenizer, the token cache, a finished run).

The synthetic rows are written here, not copied from the shared data: realistic prompts with a
learnable signal (a refusal loses, identical answers tie, a fuller answer tends to win).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import random
from pathlib import Path

import pytest

from .char_tokenizer import char_tokenizer

if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest -n N: N workers share the cores, so each torch gets one thread (set before torch is
    # imported); several torch processes each spinning on every core run many times slower
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"

PROMPTS = [
    "How do I reverse a list in Python?",
    "What is the capital of Australia?",
    "Write a haiku about autumn rain.",
    "Explain what a hash table is.",
    "Give me three tips for better sleep.",
    "Why is the sky blue?",
    "Translate 'good morning' into Spanish.",
    "What is the difference between TCP and UDP?",
    "Summarise the plot of Hamlet in two sentences.",
    "How many legs does a spider have?",
    "Suggest a name for a coffee shop.",
    "What does HTTP status 404 mean?",
]
GOOD = [
    "Here is a clear answer with an example. First, {x}. Second, you can check the result. "
    "I hope this helps!",
    "Good question. The short answer is {x}; the longer answer is that it depends on the context, "
    "so here is an example and a list of points to consider.",
]
REFUSAL = "I'm sorry, but I cannot help with that."
MODELS = ["gpt-4-0613", "claude-2.1", "llama-2-70b-chat", "vicuna-13b", "mixtral-8x7b-instruct-v0.1",
          "gemini-pro"]


def synthetic_rows(n: int, seed: int = 0, with_labels: bool = True, start_id: int = 1000) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        p = PROMPTS[i % len(PROMPTS)] + ("" if i < len(PROMPTS) else f" (variant {i})")
        prompt = [p]
        good = rng.choice(GOOD).format(x=f"the answer to '{p[:30]}'")
        kind = rng.random()
        if kind < 0.35:
            a, b, lab = good, REFUSAL, (1, 0, 0)
        elif kind < 0.7:
            a, b, lab = REFUSAL, good, (0, 1, 0)
        else:
            a = b = good
            lab = (0, 0, 1)
        ra, rb = [a], [b]
        if i % 5 == 0:  # some multi-turn rows, one with a null turn
            prompt.append("Can you say more?")
            ra.append("Sure, here is more detail about it.")
            rb.append(None if i % 10 == 0 else "There is nothing more to add.")
        row = {"id": str(start_id + i), "model_a": rng.choice(MODELS), "model_b": rng.choice(MODELS),
               "prompt": json.dumps(prompt), "response_a": json.dumps(ra), "response_b": json.dumps(rb)}
        if with_labels:
            row.update(winner_model_a=lab[0], winner_model_b=lab[1], winner_tie=lab[2])
        rows.append(row)
    return rows


def write_csv(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def write_competition_files(d: Path, n_train: int, n_test: int) -> None:
    """train.csv and a Kaggle-format test.csv (no labels, no model names) under ``d``."""
    write_csv(d / "lmsys-chatbot-arena" / "train.csv", synthetic_rows(n_train))
    test = synthetic_rows(n_test, seed=1, with_labels=False, start_id=9000)
    for r in test:
        del r["model_a"], r["model_b"]
    write_csv(d / "lmsys-chatbot-arena" / "test.csv", test)


@pytest.fixture(scope="session")
def synthetic_data_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("data")
    write_competition_files(d, 160, 24)
    return d


@pytest.fixture(scope="session")
def rich_data_dir(tmp_path_factory) -> Path:
    """Small synthetic competition rows plus every extra source's file format (hand-written)."""
    from .source_files import (
        arena_records,
        hh_records,
        uf_binarized,
        write_arena,
        write_jsonl_gz,
        write_mt_bench,
        write_parquet,
        write_pool_csv,
    )

    d = tmp_path_factory.mktemp("rich_data")
    write_competition_files(d, 60, 12)
    write_arena(d / "arena-33k" / "battles.json", arena_records(), "json")
    write_parquet(d / "ultrafeedback" / "ultrafeedback_binarized.parquet", uf_binarized())
    write_jsonl_gz(d / "hh-rlhf" / "harmless-base-test.jsonl.gz", hh_records())
    write_parquet(d / "alpacaeval" / "gpt4_pairwise_30k.parquet", [
        {"instruction": f"Name a fruit that is {c}.", "output_1": f"A {c} fruit: the {f}.",
         "generator_1": "gpt4", "output_2": "Fruit.", "generator_2": "alpaca-7b", "preference": p,
         "annotator": "weighted_alpaca_eval_gpt4_turbo", "dataset": "helpful_base"}
        for (c, f), p in zip([("red", "strawberry"), ("yellow", "banana"), ("green", "kiwi"),
                              ("orange", "orange"), ("purple", "plum"), ("blue", "blueberry")],
                             [1.1, 1.9, 1.0, 2.0, 1.5, 1.3], strict=True)])
    write_pool_csv(d / "pool" / "unlabelled.csv")
    write_mt_bench(d / "mt-bench-human" / "human_judgments.jsonl.gz")
    return d


@pytest.fixture()
def isolated(tmp_path, monkeypatch, synthetic_data_dir):
    """Reports and artifacts in tmp_path, synthetic data, no hub."""
    monkeypatch.setenv("REPLICATOR_REPORTS", str(tmp_path / "reports"))
    monkeypatch.setenv("REPLICATOR_ARTIFACTS", str(tmp_path / "artifacts"))
    monkeypatch.setenv("REPLICATOR_DATA_DIR", str(synthetic_data_dir))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("REPLICATOR_CRASH_AFTER_STEP", raising=False)
    return tmp_path


#: a tiny-model version of the smoke recipe, for end-to-end tests in seconds. fp32 stated: ``auto`` is bf16
#: on a CPU with bf16 matrix units and fp32 on one without (core/model/precision.py), and these tests compare
#: numbers (across process layouts, resumes, packing) with fp32 tolerances on whatever CPU CI gets; the bf16
#: path has its own tests (tests/model/test_precision.py, tests/end_to_end/test_recipes.py, test_fsdp.py)
#: The smoke recipe cross-fits with cached frozen layers and a head on the responses' pooled states (issue
#: 22); TINY keeps its single-split fine-tuning through every layer with the last-token head, the path of the
#: solution recipes that these tests exercise, with every prompt format (tests/end_to_end/test_crossfit.py
#: covers the cross-fitted path).
SINGLE_SPLIT = ["train.crossfit=null", "model.offset=null", "model.freeze_layers=0",
                "model.cache_frozen=false", "plugins.head={use: default_head, init: zeros}"]
TINY = [*SINGLE_SPLIT, "model.base=tiny:llama", "model.dtype=float32", "model.lora.r=32", "train.max_rows=0",
        "predict.max_rows=0", "train.batch_size=8", "train.warmup_steps=0", "train.max_length=128",
        "predict.max_length=128", "train.checkpoint_every=3", "train.lr=3e-3", "train.epochs=8"]
#: ... in one epoch on 48 training rows and 24 validation rows
QUICK = TINY + ["train.epochs=1", "train.max_rows=48", "predict.max_rows=24"]

SMOKE = RECIPES / "smoke.yaml"
CPU = RECIPES / "cpu.yaml"
BASELINE = RECIPES / "baseline_length.yaml"
#: every shipped recipe, by file name
ALL = sorted(p.name for p in RECIPES.glob("*.yaml"))


def tiny_classifier():
    """A 2-layer Llama sequence classifier (vocab 50, 3 labels, pad 0) from a config, seeded, in eval mode."""
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, num_labels=3, pad_token_id=0)
    return LlamaForSequenceClassification(cfg).eval()


@pytest.fixture()
def info_logs(caplog):
    """The sources report what they drop or repair at INFO (``replicator.*`` loggers): capture it."""
    caplog.set_level(logging.INFO, logger="replicator")


@pytest.fixture()
def offline(monkeypatch):
    """A plan reads no weights and downloads nothing: the hub is off for every test that uses this."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="module")
def tok():
    """The character-level tokenizer of tests/char_tokenizer.py: one character = one token."""
    return char_tokenizer()


@pytest.fixture()
def cache_env(isolated, monkeypatch):
    """The token cache under ``isolated``'s artifacts, one encoding worker, nothing left open."""
    from replicator.core.tokens import store as token_store

    monkeypatch.setenv("REPLICATOR_TOKEN_WORKERS", "1")
    monkeypatch.delenv("REPLICATOR_TOKEN_CACHE", raising=False)
    token_store.forget_open()
    yield isolated
    token_store.forget_open()


@pytest.fixture()
def no_model(monkeypatch):
    """Loading a model fails the test: every check must come before it."""
    from replicator.core.model import inference, loading

    def refuse(*a, **k):
        raise AssertionError("a model was loaded before the paths were checked")

    monkeypatch.setattr(inference, "load_for_inference", refuse)
    monkeypatch.setattr(loading, "load_model", refuse)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, synthetic_data_dir):
    """A finished tiny run, copied by each test that breaks something in it."""
    from .smoke_runs import _run

    root = tmp_path_factory.mktemp("finished")
    mp = pytest.MonkeyPatch()
    for k, v in (("REPLICATOR_REPORTS", root / "reports"), ("REPLICATOR_ARTIFACTS", root / "artifacts"),
                 ("REPLICATOR_DATA_DIR", synthetic_data_dir), ("HF_HUB_OFFLINE", "1")):
        mp.setenv(k, str(v))
    try:
        run_dir, _, _ = _run()
    finally:
        mp.undo()
    return root, run_dir.relative_to(root)
