"""The alpacaeval_pairs source (plugins/alpacaeval.py)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from replicator.core.errors import DataError
from replicator.core.rows import DataContext, prompt_group
from replicator.plugins.alpacaeval import AlpacaEvalPairs

from ..source_files import real_dir


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


@pytest.mark.real_data
def test_real_alpacaeval():
    rows = AlpacaEvalPairs().data_sources("train", DataContext(real_dir(), 0))
    assert len(rows) == 30000
    for r in rows:
        assert math.isclose(sum(r["label"]), 1.0) and all(0 <= x <= 1 for x in r["label"])
        assert not any(math.isnan(x) for x in r["label"])
