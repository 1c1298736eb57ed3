"""benchmarks/train_throughput.py: the comparison runs end to end on a tiny model (--quick), and the
padding-free packed forward of its CUDA path gives the logits of the padded batch (checked on a CPU:
transformers keeps packed rows apart from their restarting position ids when there is no mask)."""

from __future__ import annotations

import json

import pytest

from .conftest import tiny_classifier


def test_packed_rows_give_the_logits_of_the_padded_batch():
    import torch

    from benchmarks.train_throughput import packed_logits
    from replicator.core.batches import collate, forward_logits

    model = tiny_classifier()
    torch.nn.init.normal_(model.score.weight)
    seqs = [[5, 6, 7, 8, 9, 10], [11, 12, 13], [14, 15, 16, 17]]
    with torch.no_grad():
        padded = forward_logits(model, *collate(seqs, 0, "cpu"))
        packed = packed_logits(model, seqs, "cpu")
        mixed = packed_logits(model, [seqs[0] + seqs[1]], "cpu")  # one row: not the same as two
    torch.testing.assert_close(packed, padded, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(mixed[0], padded[1], atol=1e-3)


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
