"""Rows unlike the training rows: the cpu recipe's head trained on the real rows with the shorter responses
and scored on those with the longer ones, with and without its two guards against extrapolation.

The cpu recipe cross-fitted 1.0307 on our 1,478 rows and scored 1.0453 on 981 rows held back by others,
where a plain logistic regression on log-scale length and style counts scored 1.0404. A linear head
extrapolates its inputs without bound; the raw A - B differences of characters, words and lines in the
length features are heavy-tailed, so a pair of texts longer than any training pair gets logits beyond any
seen. This script makes that situation on purpose: the prompt groups are ordered by their longest response
(characters); the head is fitted on the groups up to a quantile and scored on the rest, for quantiles 0.5,
0.7 and 0.85. Each head's C is chosen by grouped CV inside its training rows, as the recipe does.

Heads (the cpu recipe's, `model.features` of recipes/cpu.yaml, only these two keys changed):
  raw+noclip   raw A - B count differences kept, inputs not clipped (the recipe before this change)
  log+noclip   the log counts and log-ratios only
  raw+clip     raw differences, every input clipped to its range over the training rows
  log+clip     both guards (the recipe now: `raw_diffs: false`, `clip: true`, the defaults)
and the length-and-style regression (`baseline:style_lr`, every report's reference, unchanged).

It prints each head's log loss on the held rows, and its difference from the old head's on the same rows
(95 % paired bootstrap over prompt groups). The model's vectors come from the recipe's feature cache: run
`replicate run recipes/cpu.yaml` once first (or this encodes them, ~15 min on 2 cores in fp32).

    REPLICATOR_DATA_DIR=../shared/data python -m benchmarks.length_shift
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np

from replicator.core.config.recipe import resolve
from replicator.core.data.competition import read_competition_csv
from replicator.core.data.files import data_dir
from replicator.core.scoring.stats import paired_bootstrap, row_log_loss
from replicator.core.stages import baseline as B
from replicator.core.stages import frozen_features as F

HEADS = {"raw+noclip": (True, False), "log+noclip": (False, False), "raw+clip": (True, True),
         "log+clip": (False, True)}


def longest_per_group(rows: list[dict]) -> np.ndarray:
    """Per row, the characters of the longest response in its prompt group (groups move whole)."""
    longest = [max(len(B.joined(r["response_a"])), len(B.joined(r["response_b"]))) for r in rows]
    per_group: dict[str, int] = {}
    for r, n in zip(rows, longest, strict=True):
        per_group[r["group"]] = max(per_group.get(r["group"], 0), n)
    return np.array([per_group[r["group"]] for r in rows])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quantiles", type=float, nargs="+", default=[0.5, 0.7, 0.85])
    args = ap.parse_args()
    rows = read_competition_csv(data_dir() / "lmsys-chatbot-arena" / "train.csv", require_labels=True)
    stage = resolve("recipes/cpu.yaml", data_dir=data_dir()).stages[-1]
    [f] = F.model_vectors(stage, [rows], progress=True)
    y, groups = B.labels_of(rows), np.array([str(r["group"]) for r in rows])
    longest = longest_per_group(rows)
    seed = 7
    for q in args.quantiles:
        cut = np.quantile(longest, q)
        tr, te = np.where(longest <= cut)[0], np.where(longest > cut)[0]
        train, held = [rows[i] for i in tr], [rows[i] for i in te]
        losses = {"style_lr": row_log_loss(B.predict(B.fit("style_lr", train), held), y[te])}
        chosen = {}
        for name, (raw, clip) in HEADS.items():
            fc = dataclasses.replace(stage.model.features, raw_diffs=raw, clip=clip)
            params, _ = F._fit_final(fc, train, f[tr], seed)
            losses[name] = row_log_loss(F.head_probs(params, f[te], F.row_inputs(held, fc)), y[te])
            chosen[name] = params["C"]
        longest_train = int(longest[tr].max())
        print(f"\ntrained on {len(tr)} rows (longest response <= {longest_train:,} characters), "
              f"scored on {len(te)} (up to {int(longest[te].max()):,})")
        ref = losses["raw+noclip"]
        for name, v in losses.items():
            d = paired_bootstrap(ref, v, groups[te])
            vs = ("" if name == "raw+noclip"
                  else f"  Δ vs raw+noclip {d['delta']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}]")
            c = f"  C {chosen[name]:g}" if name in chosen else ""
            print(f"  {name:<11} {v.mean():.4f}{vs}{c}")


if __name__ == "__main__":
    main()
