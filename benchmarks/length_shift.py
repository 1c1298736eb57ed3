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
(95 % paired bootstrap over prompt groups). With `--style` it measures the same two guards on the
length-and-style regression instead (no LM; seconds): cross-fitted on the runs' five grouped folds of split
seeds 7, 0 and 1, then on the shifted splits. The model's vectors come from the recipe's feature cache: run
`replicate run recipes/cpu.yaml` once first (or this encodes them, ~15 min on 2 cores in fp32).

    REPLICATOR_DATA_DIR=../shared/data python -m benchmarks.length_shift [--style]
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
from replicator.core.stages.crossfit import fold_splits

HEADS = {"raw+noclip": (True, False), "log+noclip": (False, False), "raw+clip": (True, True),
         "log+clip": (False, True)}


def longest_per_group(rows: list[dict]) -> np.ndarray:
    """Per row, the characters of the longest response in its prompt group (groups move whole)."""
    longest = [max(len(B.joined(r["response_a"])), len(B.joined(r["response_b"]))) for r in rows]
    per_group: dict[str, int] = {}
    for r, n in zip(rows, longest, strict=True):
        per_group[r["group"]] = max(per_group.get(r["group"], 0), n)
    return np.array([per_group[r["group"]] for r in rows])


def guarded_style(train: np.ndarray, y, groups, held: np.ndarray, raw: bool, clip: bool) -> np.ndarray:
    """The style regression's probabilities of ``held`` (its :data:`STYLE_FEATURES` rows), fitted on ``train``
    as ``baseline:style_lr`` is (swap-symmetric, C by grouped CV inside), without the raw differences unless
    ``raw``, with every input clipped to the training range (both orders) when ``clip``."""
    from sklearn.model_selection import GroupKFold

    names = list(B.STYLE_FEATURES)
    cols = [i for i, n in enumerate(names) if raw or n not in {f"diff_{c}" for c in B.COUNTS}]

    def swap(x):
        full = np.zeros((len(x), len(names)))
        full[:, cols] = x
        return B.swap_style_features(full)[:, cols]

    def fit_predict(xa, ya, xb, C):
        xs, k, w = B._samples(xa, ya, swap)
        params = B.fit_linear(xs, k, w, C=C, max_iter=2000)
        if clip:
            both = np.vstack([xa, swap(xa)])
            xb = np.clip(xb, both.min(axis=0), both.max(axis=0))
        return B._symmetric_probs(params, xb, swap)

    x, xh = train[:, cols], held[:, cols]
    splits = list(GroupKFold(n_splits=B.STYLE_CV_FOLDS, shuffle=True, random_state=0).split(x, groups=groups))
    cv = {C: np.mean([row_log_loss(fit_predict(x[tr], y[tr], x[va], C), y[va]).mean() for tr, va in splits])
          for C in B.STYLE_C_GRID}
    return fit_predict(x, y, xh, min(cv, key=cv.get))


STYLES = {"style_lr": (True, False), "log+clip": (False, True)}


def style_main(rows, y, groups, longest, quantiles) -> None:
    x = B.style_matrix(rows)
    for seed in (7, 0, 1):
        p = {name: np.zeros((len(rows), 3)) for name in STYLES}
        for tr, va in fold_splits(rows, 5, seed):
            for name, (raw, clip) in STYLES.items():
                p[name][va] = guarded_style(x[tr], y[tr], groups[tr], x[va], raw, clip)
        ref, new = row_log_loss(p["style_lr"], y), row_log_loss(p["log+clip"], y)
        d = paired_bootstrap(ref, new, groups)
        print(f"cross-fitted, seed {seed}: style_lr {ref.mean():.4f}, log+clip {new.mean():.4f} "
              f"(Δ {d['delta']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}])")
    for q in quantiles:
        cut = np.quantile(longest, q)
        tr, te = np.where(longest <= cut)[0], np.where(longest > cut)[0]
        ref, new = (row_log_loss(guarded_style(x[tr], y[tr], groups[tr], x[te], *STYLES[n]), y[te])
                    for n in STYLES)
        d = paired_bootstrap(ref, new, groups[te])
        print(f"trained on {len(tr)} shorter rows, scored on {len(te)}: style_lr {ref.mean():.4f}, log+clip "
              f"{new.mean():.4f} (Δ {d['delta']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}])")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quantiles", type=float, nargs="+", default=[0.5, 0.7, 0.85])
    ap.add_argument("--style", action="store_true", help="the guards on the style regression instead")
    args = ap.parse_args()
    rows = read_competition_csv(data_dir() / "lmsys-chatbot-arena" / "train.csv", require_labels=True)
    y, groups = B.labels_of(rows), np.array([str(r["group"]) for r in rows])
    longest = longest_per_group(rows)
    if args.style:
        style_main(rows, y, groups, longest, args.quantiles)
        return
    stage = resolve("recipes/cpu.yaml", data_dir=data_dir()).stages[-1]
    [f] = F.model_vectors(stage, [rows], progress=True)
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
