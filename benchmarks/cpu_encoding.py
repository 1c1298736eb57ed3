"""The ``cpu`` recipe's frozen encoding on this CPU, per dtype, against the same dtype's in-process peak.

    REPLICATOR_DATA_DIR=../shared/data python -m benchmarks.cpu_encoding                  # fp32 and bf16
    REPLICATOR_DATA_DIR=../shared/data python -m benchmarks.cpu_encoding --texts 64 --batch-tokens 2048 4096

What README command 1 spends its cold minutes on: Gemma-3-270M (``model.base`` of recipes/cpu.yaml, loaded
as the recipe loads it, :func:`replicator.core.stages.frozen_features.load_backbone`) encoding each
(prompt, response) text once (:func:`~replicator.core.stages.frozen_features.encode_texts`: token-budget
batches sorted by length, the last layer's state only, mean-pooled over the response).

It tokenises every text of the recipe's rows (all of them: that is what a cold run encodes), then times the
encoding of a seeded sample of ``--texts`` of them in each ``--dtypes`` (one untimed warm-up batch first),
in one process, back to back. Per dtype and ``batch_tokens`` it prints one JSON line: texts/s, useful
(non-pad) tokens/s, the padding share, the FLOP/s of a 2048^3 matmul in that dtype measured just before
(the peak this CPU reaches in that dtype), the utilisation ``2 x N x useful tokens/s / peak`` (N: the
backbone's parameters without the embeddings; attention's own FLOPs not counted), the projected seconds to
encode every text of the recipe (its useful tokens over the measured rate) and those of a 1,000-row
``replicate predict`` (2,000 texts at the recipe's mean length), and, for every dtype after the first, the
cosine of its pooled vectors to the first dtype's (min and mean over the sample). The CPU model and its
bf16 flags come first.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.train_throughput import cpu_line, matmul_gflops

ROOT = Path(__file__).resolve().parents[1]


def texts_of(recipe: Path) -> tuple[object, list[tuple[list[int], int]]]:
    """(the resolved stage, the (ids, response start) of every text of the recipe's rows)."""
    import tempfile

    from replicator.core.config.catalogue import build_plugins
    from replicator.core.config.recipe import resolve
    from replicator.core.data.collect import collect_rows
    from replicator.core.data.files import data_dir
    from replicator.core.model.loading import load_tokenizer, resolve_base
    from replicator.core.rows import DataContext
    from replicator.core.stages.frozen_features import encode_response

    resolved = resolve(recipe, [], [])
    stage = resolved.final
    plugins = build_plugins(stage.plugins, resolved.file, unused=stage.unused_hooks)
    ctx = DataContext(data_dir=data_dir(), seed=resolved.seed, stage=stage.name,
                      cache_dir=Path(tempfile.mkdtemp(prefix="cpu-encoding-")), stage_outputs={})
    train_rows, valid_rows = collect_rows(plugins, ctx)
    f = stage.model.features
    tok = load_tokenizer(resolve_base(stage.model.base))
    items = [encode_response(tok, r["prompt"], r[side], f.max_length, f.prompt_tokens)
             for r in train_rows + valid_rows for side in ("response_a", "response_b")]
    return stage, items


def padded_tokens(lengths: list[int], batch_tokens: int) -> int:
    from replicator.core.stages.frozen_features import token_batches

    return sum(max(lengths[i] for i in b) * len(b) for b in token_batches(lengths, batch_tokens))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--recipe", type=Path, default=ROOT / "recipes" / "cpu.yaml")
    p.add_argument("--texts", type=int, default=192, help="texts timed per dtype and budget")
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    p.add_argument("--batch-tokens", nargs="+", type=int, default=None,
                   help="model.features.batch_tokens values (default: the recipe's)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    import dataclasses

    import torch

    from benchmarks.train_throughput import backbone_params
    from replicator.core.stages.frozen_features import encode_texts, load_backbone

    print(cpu_line(), f"; torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    stage, items = texts_of(args.recipe)
    lengths = [len(ids) for ids, _ in items]
    total = sum(lengths)
    print(f"{len(items)} texts of {args.recipe.name}'s rows, {total} tokens (mean {total / len(items):.1f})",
          flush=True)
    sample = random.Random(args.seed).sample(items, min(args.texts, len(items)))
    budgets = args.batch_tokens or [stage.model.features.batch_tokens]
    first = {}
    rows = []
    for dtype in args.dtypes:
        cfg = dataclasses.replace(stage.model, dtype=dtype)
        model, tok, _ = load_backbone(cfg)
        n = backbone_params(model)
        for budget in budgets:
            f = dataclasses.replace(stage.model.features, batch_tokens=budget)
            peak = matmul_gflops(2048, dtype)
            encode_texts(model, tok, sample[:8], f, progress=False)  # warm-up
            t = time.perf_counter()
            vecs = encode_texts(model, tok, sample, f, progress=False)
            dt = time.perf_counter() - t
            useful = sum(len(ids) for ids, _ in sample)
            tps = useful / dt
            row = {"dtype": dtype, "batch_tokens": budget, "texts": len(sample), "seconds": round(dt, 2),
                   "texts_per_s": round(len(sample) / dt, 2), "tokens_per_s": round(tps, 1),
                   "pad_share": round(1 - useful / padded_tokens([len(i) for i, _ in sample], budget), 3),
                   "peak_gflops": round(peak, 1), "backbone_params": n,
                   "utilisation": round(2 * n * tps / (peak * 1e9), 3),
                   "projected_cold_encoding_s": round(total / tps),
                   "projected_predict_1000_rows_s": round(2000 * total / len(items) / tps)}
            if budget in first:
                a, b = first[budget], vecs
                cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
                row.update(cosine_min=round(float(cos.min()), 6), cosine_mean=round(float(cos.mean()), 6))
            else:
                first[budget] = vecs
            print(json.dumps(row), flush=True)
            rows.append(row)
        del model
    print(f"\n{'dtype':9} {'budget':>6} {'texts/s':>8} {'tok/s':>7} {'pad':>5} {'peak':>6} {'util':>5} "
          f"{'cold s':>6} {'pred s':>6} {'cos min':>8}")
    for r in rows:
        print(f"{r['dtype']:9} {r['batch_tokens']:6d} {r['texts_per_s']:8.2f} {r['tokens_per_s']:7.1f} "
              f"{r['pad_share']:5.3f} {r['peak_gflops']:6.0f} {r['utilisation']:5.3f} "
              f"{r['projected_cold_encoding_s']:6d} {r['projected_predict_1000_rows_s']:6d} "
              f"{r.get('cosine_min', float('nan')):8.5f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
