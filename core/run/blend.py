"""Blends of finished cross-fitted runs, measured after the fact: what an ensemble of two recipes is worth.

The 2nd, 3rd and 9th places blended two models ([P2], [P3], [P9]; the 3rd fitted its blend weights on
out-of-fold predictions with scipy [R3m]). Here the members
are finished runs that scored the same rows out of fold (the cross-fitted smoke and ``cpu`` recipes score
all 1,478 arena rows), one run per member variant and split seed. Per seed, the members' per-row
predictions (each run's judged view: ``final``, else ``tta``, else ``identity``) are blended with weights
(>= 0, summing to 1) fitted to minimise the log loss, scored honestly: each of 5 prompt-grouped folds is
blended with the weights fitted on the other four (:func:`~replicator.core.run.ensemble.crossfit_blend`,
the ``ensemble: weights: fit`` of a recipe). The blend is compared with each member and with the
length-and-style regression (the first member's ``baseline_style`` view, where it has one) on the same
rows: Δ = blend − reference with a 95 % paired bootstrap interval over prompt groups, per seed and pooled
over seeds (seeds resampled too).

Which runs to blend is the reader's choice, and a choice made after looking at the members' scores is one
more chance to look lucky: the markdown says so, and the fold weights show how steady the fit is.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from replicator.core.errors import ReplicatorError
from replicator.core.report.runs import Run, discover_runs, load_run
from replicator.core.run.ensemble import align_members, crossfit_blend
from replicator.core.scoring.stats import paired_bootstrap, row_log_loss

FOLDS = 5
STYLE = "baseline_style"


def _by_variant_and_seed(runs: list[Run]) -> tuple[list[str], dict[str, dict]]:
    """Member names (variant names, in the order given) and, per name, its run of each seed; every member
    must have a run of every seed that any member has, and one run only."""
    names, table = [], {}
    for r in runs:
        if r.preds is None:
            raise ReplicatorError(f"{r.path}: has no per-row predictions to blend")
        if r.variant_name not in table:
            names.append(r.variant_name)
            table[r.variant_name] = {}
        if r.seed in table[r.variant_name]:
            raise ReplicatorError(f"{r.path} and {table[r.variant_name][r.seed].path}: two runs of "
                                  f"{r.variant_name} with split seed {r.seed}; give one of them")
        table[r.variant_name][r.seed] = r
    if len(names) < 2:
        raise ReplicatorError(f"a blend needs runs of at least two variants (recipes or toggles); got only "
                              f"{names[0] if names else 'none'}")
    seeds = sorted({s for t in table.values() for s in t})
    for name in names:
        missing = [s for s in seeds if s not in table[name]]
        if missing:
            raise ReplicatorError(f"{name} has no run of split seed {missing[0]} (its seeds: "
                                  f"{sorted(table[name])}); every member needs a run of every seed")
    return names, table


def _aligned(names: list[str], runs: list[Run]) -> list[np.ndarray]:
    """Each run's judged probabilities in the first run's row order (the rows must be the same:
    :func:`~replicator.core.run.ensemble.align_members`); the labels of each row must agree."""
    pos = align_members({n: (str(r.path), r.preds) for n, r in zip(names, runs, strict=True)})
    first = runs[0].preds
    for n, r in zip(names[1:], runs[1:], strict=True):
        if not np.allclose(r.preds.labels[pos[n]], first.labels, atol=1e-6):
            raise ReplicatorError(f"{r.path} and {runs[0].path}: the labels of the same row ids differ: the "
                                  "runs read different data")
    return [r.probs()[pos[n]] for n, r in zip(names, runs, strict=True)]


def _one_seed(names: list[str], runs: list[Run], seed: int, k: int) -> tuple[dict, dict]:
    """The blend of split seed ``seed`` (the ``k``-th): its summary and its row losses (for pooling)."""
    probs = _aligned(names, runs)
    first = runs[0].preds
    groups = np.asarray(first.groups)
    blended, fold_weights = crossfit_blend(probs, first.labels, None, list(first.groups), FOLDS, int(seed))
    losses = {n: row_log_loss(p, first.labels) for n, p in zip(names, probs, strict=True)}
    if STYLE in first.views:
        losses["style regression"] = row_log_loss(first.views[STYLE], first.labels)
    mine = row_log_loss(blended, first.labels)
    w = np.array(fold_weights)
    return ({"seed": seed, "runs": {n: r.run_id for n, r in zip(names, runs, strict=True)},
             "n_rows": len(mine), "log_loss": {"blend": float(mine.mean())} | {
                 k: float(v.mean()) for k, v in losses.items()},
             "weights_mean": dict(zip(names, w.mean(0).round(4).tolist(), strict=True)),
             "weights_range": {n: [float(w[:, i].min()), float(w[:, i].max())] for i, n in enumerate(names)},
             "delta": {k: paired_bootstrap(v, mine, groups) for k, v in losses.items()}},
            {"blend": mine, **losses, "_groups": groups, "_seeds": np.full(len(mine), k)})


def blend_runs(paths: list[Path], progress=print) -> dict:
    """The cross-fitted blend of the runs under ``paths`` (members = variants), per split seed and pooled."""
    runs = [load_run(d) for d in discover_runs(paths)]  # every run checked before any work
    names, table = _by_variant_and_seed(runs)
    per_seed, rows = [], {}
    for k, seed in enumerate(sorted(table[names[0]])):
        progress(f"blend: split seed {seed}: {', '.join(table[n][seed].run_id for n in names)}")
        summary, losses = _one_seed(names, [table[n][seed] for n in names], seed, k)
        per_seed.append(summary)
        for key, v in losses.items():
            rows.setdefault(key, []).append(v)
    pooled = {}
    if len(per_seed) > 1:
        cat = {k: np.concatenate(v) for k, v in rows.items() if len(v) == len(per_seed)}
        pooled = {k: paired_bootstrap(cat[k], cat["blend"], cat["_groups"], seeds=cat["_seeds"])
                  for k in cat if not k.startswith("_") and k != "blend"}
    return {"members": names, "folds": FOLDS, "per_seed": per_seed, "pooled": pooled}


def _cell(d: dict) -> str:
    return f"{d['delta']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}]"


def markdown(result: dict) -> str:
    """Per seed: each member's log loss, the blend's, Δ (blend − each) with its interval; then the weights."""
    refs = list(result["per_seed"][0]["delta"])
    lines = ["| split seed | " + " | ".join(refs) + " | blend | "
             + " | ".join(f"Δ vs {r}" for r in refs) + " |",
             "|---|" + "---:|" * (len(refs) + 1) + "---|" * len(refs)]
    for s in result["per_seed"]:
        ll = s["log_loss"]
        lines.append(f"| {s['seed']} | " + " | ".join(f"{ll[r]:.4f}" for r in refs)
                     + f" | {ll['blend']:.4f} | " + " | ".join(_cell(s["delta"][r]) for r in refs) + " |")
    if result["pooled"]:
        mean = {k: np.mean([s["log_loss"][k] for s in result["per_seed"]]) for k in refs + ["blend"]}
        lines.append("| pooled | " + " | ".join(f"{mean[r]:.4f}" for r in refs) + f" | {mean['blend']:.4f} | "
                     + " | ".join(_cell(result["pooled"][r]) for r in refs) + " |")
    lines += ["", "Δ = blend − the column's model, 95 % paired bootstrap interval over prompt groups (below "
              f"0: the blend is better). The blend is out of fold: each of {result['folds']} prompt-grouped "
              "folds is blended with weights fitted on the others. Which runs were blended is a choice: one "
              "made after seeing their scores is a chance to look lucky.", "",
              "| split seed | " + " | ".join(f"weight of {n} (mean; fold range)" for n in result["members"])
              + " |",
              "|---|" + "---|" * len(result["members"])]
    for s in result["per_seed"]:
        lines.append(f"| {s['seed']} | " + " | ".join(
            f"{s['weights_mean'][n]:.2f} ({s['weights_range'][n][0]:.2f}–{s['weights_range'][n][1]:.2f})"
            for n in result["members"]) + " |")
    lines += ["", "Runs: " + "; ".join(f"seed {s['seed']}: " + ", ".join(s["runs"].values())
                                      for s in result["per_seed"]) + "."]
    return "\n".join(lines) + "\n"


def write(result: dict, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    md, js = out_dir / "blend.md", out_dir / "blend.json"
    md.write_text(markdown(result), encoding="utf-8")
    js.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return [md, js]
