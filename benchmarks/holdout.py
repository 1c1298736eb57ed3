"""A held-out check of `replicate predict`: the real rows split by prompt into a training file and a
Kaggle-format test file, a recipe run on the first, its submission scored on the second against the
length-and-style regression fitted on the same training rows (95 % paired bootstrap over prompt groups).

Cross-fitted numbers score the folds' models; a submission comes from the weights `replicate run` saves (the
cpu recipe's head refitted on every row, the smoke recipe's fold weights averaged plus the offset refitted),
read back by `replicate predict` on rows it never saw. This checks that path, as the held-back rows do.

    python -m benchmarks.holdout split /tmp/hold                 # /tmp/hold/data/..., test.csv, labels.csv
    REPLICATOR_DATA_DIR=/tmp/hold/data replicate run recipes/cpu.yaml
    REPLICATOR_DATA_DIR=/tmp/hold/data replicate predict reports/cpu/<run_id> /tmp/hold/test.csv -o cpu.csv
    python -m benchmarks.holdout score /tmp/hold cpu.csv [more submissions ...]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import pandas as pd

from replicator.core.data.competition import read_competition_csv
from replicator.core.scoring.stats import paired_bootstrap, row_log_loss
from replicator.core.stages import baseline as B

LABELS = ["winner_model_a", "winner_model_b", "winner_tie"]


def split(out: Path, fraction: float, seed: int) -> None:
    src = Path(os.environ.get("REPLICATOR_DATA_DIR", "data")) / "lmsys-chatbot-arena" / "train.csv"
    df = pd.read_csv(src)
    prompts = np.array(sorted(df.prompt.unique()), dtype=object)
    np.random.default_rng(seed).shuffle(prompts)
    held = df.prompt.isin(set(prompts[:int(len(prompts) * fraction)]))
    (out / "data" / "lmsys-chatbot-arena").mkdir(parents=True, exist_ok=True)
    df[~held].to_csv(out / "data" / "lmsys-chatbot-arena" / "train.csv", index=False)
    df[held].drop(columns=["model_a", "model_b", *LABELS]).to_csv(out / "test.csv", index=False)
    df[held].to_csv(out / "labels.csv", index=False)
    print(f"{src}: {int((~held).sum())} training rows -> {out}/data/, {int(held.sum())} held-out rows "
          f"({len(set(df.prompt[held]))} prompts) -> "
          f"{out}/test.csv")


def score(out: Path, submissions: list[Path]) -> None:
    train = read_competition_csv(out / "data" / "lmsys-chatbot-arena" / "train.csv", require_labels=True)
    test = read_competition_csv(out / "labels.csv", require_labels=True)
    y, ids, groups = B.labels_of(test), [r["id"] for r in test], np.array([r["group"] for r in test])
    probs = {"length-and-style regression": B.predict(B.fit("style_lr", train), test),
             "length regression": B.predict(B.fit("length_lr", train), test)}
    for s in submissions:
        sub = pd.read_csv(s, dtype={"id": str}).set_index("id")
        missing = [i for i in ids if i not in sub.index]
        if missing:
            raise SystemExit(f"{s}: no row for id {missing[0]} (and {len(missing) - 1} more)")
        probs[str(s)] = sub.loc[ids, LABELS].to_numpy(dtype=np.float64)
    losses = {k: row_log_loss(p, y) for k, p in probs.items()}
    ref = losses["length-and-style regression"]
    print(f"{len(test)} held-out rows, {len(set(groups.tolist()))} prompts; regressions fitted on "
          f"{len(train)} rows")
    for k, v in losses.items():
        r = paired_bootstrap(ref, v, groups)
        print(f"  {k:40s} {v.mean():.4f}   Δ vs the style regression {r['delta']:+.4f} "
              f"[{r['lo']:+.4f}, {r['hi']:+.4f}]")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("split")
    s.add_argument("out", type=Path)
    s.add_argument("--fraction", type=float, default=0.27, help="share of prompts held out")
    s.add_argument("--seed", type=int, default=123)
    c = sub.add_parser("score")
    c.add_argument("out", type=Path)
    c.add_argument("submissions", type=Path, nargs="+")
    a = ap.parse_args()
    if a.cmd == "split":
        split(a.out, a.fraction, a.seed)
    else:
        score(a.out, a.submissions)


if __name__ == "__main__":
    main()
