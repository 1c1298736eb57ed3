"""The ultrafeedback_pairs source (plugins/ultrafeedback.py)."""

from __future__ import annotations

import math

import pytest

from replicator.core.errors import DataError
from replicator.core.rows import DataContext, prompt_group
from replicator.plugins.ultrafeedback import UltraFeedbackPairs, rating_label

from ..source_files import check_labels, uf_binarized, write_parquet

pytestmark = pytest.mark.usefixtures("info_logs")


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
