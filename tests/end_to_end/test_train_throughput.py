"""benchmarks/train_throughput.py: the comparison runs end to end on a tiny model (--quick). Its CUDA
``packed`` trainer is the runner's ``train.packed`` (tests/tokens/test_batches.py checks those logits and
gradients against padded rows on a CPU)."""

from __future__ import annotations

import json

import pytest


def test_quick_benchmark_runs_every_trainer_on_the_same_tokens(isolated, capsys):
    from benchmarks.train_throughput import main

    main(
        [
            "--quick",
            "--lengths",
            "64",
            "--steps",
            "1",
            "--trainers",
            "hf_random",
            "ours_grouped",
            "ours_tokens",
        ]
    )
    out = capsys.readouterr().out
    lines = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
    assert [r["trainer"] for r in lines] == ["hf_random", "ours_grouped", "ours_tokens"]
    assert len({r["all_useful_tokens"] for r in lines}) == 1  # the same rows and ids, each once
    for r in lines:
        assert r["rows"] == 16 and r["useful_tokens_per_s"] > 0 and 0 <= r["padding_share"] < 1
        assert (
            r["utilisation"] > 0
            and r["peak_rss_gib"] > 0
            and r["vs_hf_random"]
            == pytest.approx(r["useful_tokens_per_s"] / lines[0]["useful_tokens_per_s"], rel=1e-2)
        )
    assert lines[2]["batch_tokens"] >= 64 and lines[2]["micro_batches_per_step"] == 1
    assert "ours_tokens" in out.split("\n\n")[-2]  # the table
