"""The figures of the HTML report: what each shows, its caption, and its SVG (drawn by
:mod:`replicator.core.report.plots`), or why it is missing."""

from __future__ import annotations

import numpy as np

from replicator.core.report import plots
from replicator.core.report.runs import Variant
from replicator.core.scoring.stats import expected_calibration_error, reliability_bins


def report_figures(data: dict, variants: list[Variant]) -> list[dict]:
    """The figures: dicts with ``id``, ``title``, ``alt``, ``caption`` and ``src`` (or ``missing``)."""
    colors = dict(zip([v.name for v in variants], plots.palette(len(variants)), strict=True))
    return [_delta_fig(data), *_calibration_figs(variants, colors), _loss_fig(variants, colors),
            _length_fig(data, colors)]


def _delta_fig(data: dict) -> dict:
    entries = [{"name": v["name"], **{k: v["delta"][k] for k in ("delta", "lo", "hi")}}
               for v in data["variants"] if v["delta"] is not None]
    xlabel = "Δ log loss vs base (variant − base; below 0: the variant has lower loss)"
    if not entries:  # nothing but the base: show how it compares with the references
        entries = [{"name": f"{r['name']} − base", **{k: r["delta"][k] for k in ("delta", "lo", "hi")}}
                   for r in data["references"] if r["delta"] is not None]
        xlabel = "reference − base log loss (above 0: the base beats the reference)"
    return {"id": "plot-delta", "title": "Δ log loss with 95% bootstrap intervals",
            "alt": "Delta log loss versus the base with 95% paired bootstrap intervals, one line per variant",
            "caption": "Green: the interval lies below 0 (lower loss than the base), red: above 0, "
                       "grey: it crosses 0 (not resolved at this sample size).",
            **({"src": plots.delta_plot(entries, xlabel)} if entries else
               {"missing": "no interval to draw (no per-row predictions)"})}


def _confusion(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    m = np.zeros((3, 3), dtype=np.int64)
    np.add.at(m, (labels.argmax(1), probs.argmax(1)), 1)
    return m


def _calibration_figs(variants: list[Variant], colors: dict) -> list[dict]:
    """The reliability diagrams and the confusion matrices, seeds pooled."""
    rel, conf = [], []
    for v in variants:
        runs = [r for r in v.runs if r.preds is not None]
        if not runs:
            continue
        p = np.concatenate([r.probs() for r in runs])
        y = np.concatenate([r.preds.labels for r in runs])
        b = reliability_bins(p, y)
        rel.append({"name": v.name, "color": colors[v.name], "ece": expected_calibration_error(p, y),
                    "count": b["count"], "confidence": b["confidence"], "accuracy": b["accuracy"]})
        conf.append({"name": v.name, "counts": _confusion(p, y)})
    pooled = " (seeds pooled)" if any(len(v.runs) > 1 for v in variants) else ""
    return [{"id": "plot-reliability", "title": "Reliability (top-label calibration)",
             "alt": "Reliability diagrams: accuracy against confidence of the top class, one panel per "
                    "variant",
             "caption": "Points on the diagonal are calibrated; point size is the share of rows in the bin"
                        + pooled + ".",
             **({"src": plots.reliability_plot(rel)} if rel else {"missing": "no per-row predictions"})},
            {"id": "plot-confusion", "title": "Confusion matrices",
             "alt": "Confusion matrices of true against predicted class, one panel per variant",
             "caption": "Rows: the true class; cells: share of the row and count" + pooled + ".",
             **({"src": plots.confusion_plot(conf)} if conf else {"missing": "no per-row predictions"})}]


def _loss_fig(variants: list[Variant], colors: dict) -> dict:
    series = []
    for v in variants:
        for r in v.runs:
            losses, starts = r.loss_history()
            if losses:
                series.append({"name": v.name, "color": colors[v.name], "seed": r.seed, "losses": losses,
                               "boundaries": starts})
    return {"id": "plot-loss", "title": "Training loss",
            "alt": "Training loss per optimizer step, one line per run",
            "caption": "Thin: per step; thick: running mean; dotted: a stage starts.",
            **({"src": plots.loss_plot(series)} if series else
               {"missing": "no training loss to draw: these runs recorded no loss per optimizer step "
                           "(a frozen-feature or baseline run trains no language model)"})}


def _length_fig(data: dict, colors: dict) -> dict:
    buckets = data["length_buckets"]
    if not (buckets and buckets["variants"]):
        return {"id": "plot-length", "title": "Δ by prompt length", "alt": "", "caption": "",
                "missing": "no variant to compare with the base row by row"}
    lines = [{"name": x["name"], "color": colors[x["name"]], "points": x["points"]}
             for x in buckets["variants"]]
    return {"id": "plot-length", "title": "Δ by prompt length",
            "alt": "Delta log loss versus the base per quartile of characters of prompt and responses",
            "caption": "Buckets: quartiles of the characters of prompt + both responses of the base's "
                       "validation rows (row counts over all its seeds).",
            "src": plots.length_plot(buckets["labels"], lines, "characters of prompt + responses")}
