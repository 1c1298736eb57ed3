"""Scoring a stage on its validation rows: predictions per TTA view, their mean, the cross-fitted
postprocess; metrics of each; every prediction kept in ``valid_predictions.json`` (artifacts)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from replicator.core.config.recipe import StageConfig
from replicator.core.predict.postprocess import crossfit_postprocess
from replicator.core.predict.views import IDENTITY, predict_probs
from replicator.core.scoring import metrics as M
from replicator.core.util.atomic import atomic_write_text
from replicator.core.util.distributed import is_main
from replicator.core.util.layout import VALID_PREDICTIONS

BASELINE_VIEW = "baseline_"  # views named so are baselines (replicator.core.stages.baseline), scored as such
CLASSES = ("a", "b", "tie")


def labels_of(rows: list[dict]) -> np.ndarray:
    return np.array([r["label"] for r in rows], dtype=np.float64)


def label_prior(rows: list[dict]) -> list[float]:
    """The share of each class in the labels of ``rows`` (soft labels count fractionally)."""
    return [round(float(x), 6) for x in labels_of(rows).mean(axis=0)]


def scores(preds: dict[str, np.ndarray], labels: np.ndarray) -> dict:
    """log loss and accuracy of the identity view (no prefix), the TTA mean (``tta_``), the
    postprocessed predictions (``final_``), each baseline (``baseline_<name>_``: views named so, see
    :mod:`replicator.core.stages.baseline`) and each other view (``view_<name>_``)."""
    result = {"n_valid_rows": len(labels), "uniform_log_loss": M.UNIFORM_LOG_LOSS}
    result.update(M.summarize(preds[IDENTITY], labels))
    result.update(M.summarize(preds["tta"], labels, "tta_"))
    result.update(M.summarize(preds["final"], labels, "final_"))
    for name, p in preds.items():
        if name.startswith(BASELINE_VIEW):
            result.update(M.summarize(p, labels, f"{name}_"))
        elif name not in (IDENTITY, "tta", "final"):
            result.update(M.summarize(p, labels, f"view_{name}_"))
    return result


def write_valid_predictions(path: Path, rows: list[dict], preds: dict[str, np.ndarray],
                            labels: np.ndarray) -> None:
    """``{"id": [...], "<view>_a": [...], ..., "final_tie": [...], "label_a": [...], ...}`` as JSON."""
    cols: dict[str, list] = {"id": [r["id"] for r in rows]}
    for name, p in [*preds.items(), ("label", labels)]:
        for k, lab in enumerate(CLASSES):
            cols[f"{name}_{lab}"] = p[:, k].tolist()
    atomic_write_text(path, json.dumps(cols))


def read_valid_fit(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(TTA probabilities, labels) of the validation rows, what ``predict`` fits calibrators on."""
    valid = json.loads(Path(path).read_text())
    return (np.array([valid[f"tta_{k}"] for k in CLASSES]).T,
            np.array([valid[f"label_{k}"] for k in CLASSES]).T)


def evaluate(model, tokenizer, plugins, stage: StageConfig, valid_rows, artifacts: Path, progress=True,
             baselines: dict[str, np.ndarray] | None = None, store=None, load=None):
    """(metrics, predictions per view + ``tta`` + ``final`` + ``baselines``, labels) of ``valid_rows``.

    ``baselines``: the baseline views of the same rows (``baseline_prior``, ``baseline_length``),
    added after ``final``: never averaged into ``tta`` nor postprocessed. ``store``/``load``: cached
    views and a model loaded only when a view is missing
    (:func:`replicator.core.predict.views.predict_probs`)."""
    labels = labels_of(valid_rows)
    preds = predict_probs(model, tokenizer, plugins, valid_rows, stage.predict.max_length,
                          stage.predict.batch_tokens, progress, store=store, load=load)
    preds["final"] = crossfit_postprocess(plugins, preds["tta"], valid_rows, labels)
    preds.update(baselines or {})
    if is_main():  # every process has all the predictions (gathered); one writes them
        write_valid_predictions(artifacts / VALID_PREDICTIONS, valid_rows, preds, labels)
    return scores(preds, labels), preds, labels
