"""The smoke recipe's linear probe alone (`-t head_lp` before any fine-tuning step), cross-fitted on the
real rows: what the pooled pair features of the frozen model add to the style offset, without training.

`-t head_lp` fits, in each fold, a regression of the labels on the response_pool head's features (d, |d|,
(a + b) / 2 of the top layer's pooled states) with the style regression's log-probabilities as an offset
(core/stages/linear_probe.py), then fine-tunes from it. This script computes those features once for
every row in both orders (from the cached frozen states: run the smoke recipe once first, or it encodes
them), then for each split seed and each of the five grouped folds of the runs (the same
`fold_splits`): fits the style regression on the training rows, the probe on the training rows in both
orders with its L2 strength chosen by 3-fold grouped CV inside them, and predicts the held rows in both
orders (averaged, as TTA). It prints, per seed and pooled, the probe's out-of-fold log loss against the
style regression's on the same folds (95 % paired bootstrap over prompt groups), the C chosen per fold,
first with the grid of 4a76ee9, then with the runner's (five steps stronger).

    REPLICATOR_DATA_DIR=../shared/data python -m benchmarks.pair_probe --seeds 7 0 1
"""

from __future__ import annotations

import argparse
import contextlib
import time

import numpy as np

from replicator.core.config.catalogue import build_plugins
from replicator.core.config.recipe import resolve
from replicator.core.data.competition import read_competition_csv
from replicator.core.data.files import data_dir
from replicator.core.model import loading
from replicator.core.model.cached_layers import StateCache, cached_bottom
from replicator.core.predict.views import views_of
from replicator.core.scoring.stats import paired_bootstrap, row_log_loss
from replicator.core.stages import baseline as B
from replicator.core.stages import linear_probe as LP
from replicator.core.stages.crossfit import fold_splits
from replicator.core.tokens.batches import Encoder

#: the pair probe's grid at 4a76ee9 (its strongest C was chosen in every fold: the grid was widened since)
FIRST_GRID = (0.0001,) + LP.C_GRID


def features(rows: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """(identity, swapped) pair features (N, 3 H) of ``rows`` under the smoke recipe's model and texts."""
    resolved = resolve("recipes/smoke.yaml", ["head_lp"], data_dir=data_dir())
    stage = resolved.stages[-1]
    plugins = build_plugins(stage.plugins, resolved.file, unused=stage.unused_hooks)
    model, tok, info = loading.load_model(stage.model, plugins, train=True)
    encoder, views = Encoder(plugins, tok), views_of(plugins)
    n = stage.predict.max_length
    encoder.prepare(rows, n, views=views, progress=True)
    seqs = {v.name: [encoder(dict(v.apply(r), view=v.name), n) for r in rows] for v in views}
    cache = StateCache.for_model(info["path"], model, stage.model.freeze_layers)
    every = [s for v in views for s in seqs[v.name]]
    t0 = time.time()
    cache.ensure(model, every, stage.predict.batch_tokens, tok.pad_token_id, True, desc="frozen layers")
    with cached_bottom(model, cache) if stage.model.cache_frozen else contextlib.nullcontext():
        x = LP.pooled_features(model, tok, every, stage.predict.batch_tokens, True)
    print(f"features of {len(every)} sequences: {time.time() - t0:.0f} s")
    return x[:len(rows)], x[len(rows):]


def crossfit(rows, xi, xs, seed: int, grid) -> tuple[np.ndarray, np.ndarray, list]:
    """(probe + offset, style regression) out-of-fold probabilities of ``rows``, and each fold's C."""
    from replicator.core.rows import swap_row

    probe, style, chosen = np.zeros((len(rows), 3)), np.zeros((len(rows), 3)), []
    swapped = [swap_row(r) for r in rows]
    perm = [1, 0, 2]
    for tr, va in fold_splits(rows, 5, seed):
        params = B.fit("style_lr", [rows[i] for i in tr])
        off = B.log_probs(params)
        x = np.vstack([xi[tr], xs[tr]])
        both = [rows[i] for i in tr] + [swapped[i] for i in tr]
        y = np.array([r["label"] for r in both], dtype=np.float64)
        groups = np.array([str(r["group"]) for r in both])
        fit, _ = LP.fit_pair_probe(x, y, off(both), groups, seed, grid)
        chosen.append(fit["C"])
        held, held_s = [rows[i] for i in va], [swapped[i] for i in va]
        p = (LP.pair_probs(fit, xi[va], off(held)) + LP.pair_probs(fit, xs[va], off(held_s))[:, perm]) / 2
        probe[va] = p
        style[va] = B.predict(params, held)
    return probe, style, chosen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[7, 0, 1])
    args = ap.parse_args()
    rows = read_competition_csv(data_dir() / "lmsys-chatbot-arena" / "train.csv", require_labels=True)
    xi, xs = features(rows)
    y, groups = B.labels_of(rows), np.array([r["group"] for r in rows])
    for name, grid in (("4a76ee9's grid", FIRST_GRID), ("runner's grid", LP.PAIR_C_GRID)):
        base_all, var_all, seeds_all = [], [], []
        print(f"\n{name} {grid}")
        for seed in args.seeds:
            probe, style, chosen = crossfit(rows, xi, xs, seed, grid)
            lb, lv = row_log_loss(style, y), row_log_loss(probe, y)
            d = paired_bootstrap(lb, lv, groups)
            print(f"  seed {seed}: probe + offset {lv.mean():.4f}, style {lb.mean():.4f}, "
                  f"Δ {d['delta']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}]; C per fold {chosen}")
            base_all.append(lb)
            var_all.append(lv)
            seeds_all.append(np.full(len(lb), seed))
        d = paired_bootstrap(np.concatenate(base_all), np.concatenate(var_all),
                             np.tile(groups, len(args.seeds)), seeds=np.concatenate(seeds_all))
        print(f"  pooled: Δ {d['delta']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}]")


if __name__ == "__main__":
    main()
