"""Running a recipe: its stages in order, each data -> model -> train -> evaluate, and reuse of
finished work.

``reports/<recipe>/<run_id>/`` (``REPLICATOR_REPORTS``) holds the small committed outputs:
``resolved.yaml`` (the complete config), ``fingerprint.json``, per-row validation predictions
and, written last, ``metrics.json``. Heavy outputs (checkpoints, weights, predictions) go to
``artifacts/<recipe>/<run_id>/<stage>/`` (``REPLICATOR_ARTIFACTS``, git-ignored).

Reuse never trusts a marker alone: a stage is done when its ``done.json`` exists *and* the outputs
it vouches for are there (weights, readable validation predictions, ``outputs.json`` when asked);
a run is finished when its ``metrics.json`` exists and every stage is done. A stage with a
``checkpoint.pt`` resumes from it. ``force`` first removes ``metrics.json``, then the artifacts.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

from . import baselines
from .data import collect_rows, sample_rows
from .evaluate import VALID_PREDICTIONS, evaluate, label_prior
from .fingerprint import fingerprint
from .io import atomic_save_safetensors, atomic_write_text
from .manager import build_plugins
from .recipe import Resolved, StageConfig
from .rows import DataContext
from .stage_outputs import OUTPUTS, attach_teachers, load_stage_outputs, write_stage_outputs

log = logging.getLogger(__name__)

WEIGHTS = "final.safetensors"
DONE = "done.json"
METRICS = "metrics.json"
#: per-stage results kept out of the top level of metrics.json (they stay under ``stages``)
STAGE_ONLY = ("train_loss_history", "model", "stage")


def reports_root() -> Path:
    return Path(os.environ.get("REPLICATOR_REPORTS", "reports"))


def artifacts_root() -> Path:
    return Path(os.environ.get("REPLICATOR_ARTIFACTS", "artifacts"))


def run_folders(resolved: Resolved, run_id: str) -> tuple[Path, Path]:
    """(reports folder, artifacts folder) of a run."""
    return reports_root() / resolved.name / run_id, artifacts_root() / resolved.name / run_id


# ---------------------------------------------------------------- what is finished


def _readable_predictions(path: Path) -> bool:
    try:
        cols = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    n = len(cols.get("id") or [])
    return n > 0 and all(len(cols.get(f"{v}_{k}", [])) == n for v in ("tta", "final", "label") for k in ("a", "b", "tie"))


def weights_file(stage: StageConfig) -> str:
    """What a finished stage keeps of its model: trained weights, a baseline's parameters or a
    frozen-feature stage's head."""
    from .features import HEAD_FILE

    if baselines.is_baseline(stage.model.base):
        return baselines.PARAMS_FILE
    return HEAD_FILE if stage.model.features else WEIGHTS


def stage_missing(stage: StageConfig, sart: Path) -> list[str]:
    """What a finished stage should have under ``sart`` and has not (``[]``: the stage is done)."""
    weights = weights_file(stage)
    need = [DONE, weights, VALID_PREDICTIONS] + ([OUTPUTS] if stage.outputs else [])
    missing = [f for f in need if not (sart / f).exists()]
    if VALID_PREDICTIONS not in missing and not _readable_predictions(sart / VALID_PREDICTIONS):
        missing.append(f"{VALID_PREDICTIONS} (unreadable)")
    return missing


def finished(resolved: Resolved, run_dir: Path, art: Path) -> bool:
    """Whether the run's ``metrics.json`` exists and every stage it vouches for is done."""
    if not (run_dir / METRICS).exists():
        return False
    missing = {s.name: stage_missing(s, art / s.name) for s in resolved.stages}
    missing = {k: v for k, v in missing.items() if v}
    if missing:
        log.warning("%s has metrics but not the outputs they vouch for under %s (%s): recomputing, so that "
                    "`replicate predict` has a model", run_dir, art,
                    "; ".join(f"{k}: {', '.join(v)}" for k, v in missing.items()))
    return not missing


# ---------------------------------------------------------------- one stage


def _seed_everything(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def stage_rows(resolved: Resolved, stage: StageConfig, plugins, ctx: DataContext) -> tuple[list[dict], list[dict]]:
    """The stage's training rows (teachers attached, at most ``train.max_rows``) and validation rows
    (at most ``predict.max_rows``), both sampled with the seed in their original order."""
    train_rows, valid_rows = collect_rows(plugins, ctx)
    attach_teachers(train_rows, ctx.stage_outputs)
    train_rows = sample_rows(train_rows, stage.train.max_rows, resolved.seed)
    valid_rows = sample_rows(valid_rows, stage.predict.max_rows, resolved.seed + 1)
    log.info("stage %s: %d train rows, %d validation rows", stage.name, len(train_rows), len(valid_rows))
    return train_rows, valid_rows


def run_stage(resolved: Resolved, stage: StageConfig, sart: Path, data_dir: Path, run_dir: Path,
              progress: bool) -> dict:
    """Train and evaluate one stage; its results (what ``done.json`` holds). The baselines
    (:mod:`replicator.core.baselines`) are fitted on the same training rows and scored on the same
    validation rows; a ``baseline:`` model trains nothing else."""
    t0 = time.time()
    plugins = build_plugins(stage.plugins, resolved.file, unused=stage.unused_hooks)
    ctx = DataContext(data_dir=data_dir, seed=resolved.seed, stage=stage.name, cache_dir=sart.parent / "cache",
                      stage_outputs=load_stage_outputs(resolved, stage, sart.parent))
    train_rows, valid_rows = stage_rows(resolved, stage, plugins, ctx)
    if baselines.is_baseline(stage.model.base):
        result, preds, labels = baselines.run_baseline(stage, train_rows, valid_rows, sart)
    elif stage.model.features:
        from .features import run_features_stage

        result, preds, labels = run_features_stage(stage, plugins, train_rows, valid_rows, sart, resolved.seed,
                                                   progress)
    else:
        result, preds, labels = _train_and_evaluate(resolved, stage, plugins, ctx, train_rows, valid_rows, sart,
                                                    progress)
    write_row_predictions(run_dir, stage, resolved.final.name, valid_rows, preds, labels)
    result.update({"stage": stage.name, "seconds": round(time.time() - t0, 1)})
    return result


def _train_and_evaluate(resolved: Resolved, stage: StageConfig, plugins, ctx: DataContext, train_rows, valid_rows,
                        sart: Path, progress: bool):
    """Load, train, save and evaluate the stage's model (+ its outputs for later stages): (results,
    predictions per view with the baselines', labels)."""
    from .model import load_for_inference, load_model, trainable_state
    from .trainer import train_stage

    refs = baselines.every_run(train_rows, valid_rows)  # before training: a failure here costs seconds
    _seed_everything(resolved.seed)
    model, tok, info = load_model(stage.model, plugins, train=True)
    init_from = sart.parent / stage.from_stage / WEIGHTS if stage.from_stage else None
    result = train_stage(stage, plugins, train_rows, model, tok, info, sart, resolved.seed, init_from, progress)
    result["train_label_prior"] = label_prior(train_rows)
    atomic_save_safetensors(trainable_state(model), sart / WEIGHTS, metadata={"base": stage.model.base})
    if stage.predict.load_in_8bit:  # inference as the solutions ran it: backbone in 8-bit
        del model
        model, tok = load_for_inference(stage.model, plugins, sart / WEIGHTS, load_in_8bit=True)
    scores, preds, labels = evaluate(model, tok, plugins, stage, valid_rows, sart, progress, baselines=refs)
    result.update(scores)
    if stage.outputs:
        result["outputs"] = write_stage_outputs(stage, plugins, model, tok, train_rows, ctx, sart, progress)
    result["model"] = {k: v for k, v in info.items() if k != "aux_loss"}
    return result, preds, labels


def row_predictions_path(run_dir: Path, stage: str, final: str) -> Path:
    """``valid_predictions.csv.gz`` for the final stage, ``valid_predictions.<stage>.csv.gz`` before it."""
    return run_dir / ("valid_predictions.csv.gz" if stage == final else f"valid_predictions.{stage}.csv.gz")


def write_row_predictions(run_dir: Path, stage: StageConfig, final: str, rows, preds, labels) -> None:
    """Per-row validation predictions (every view, ``tta``, ``final``) committed with the report."""
    from .rowpreds import write_row_predictions as write

    write(row_predictions_path(run_dir, stage.name, final), rows, preds, labels)


def _stage(resolved: Resolved, stage: StageConfig, art: Path, data_dir: Path, run_dir: Path, progress: bool) -> dict:
    """A stage's results: reused when it is done, else computed and marked done."""
    sart = art / stage.name
    missing = stage_missing(stage, sart)
    if not missing:
        log.info("stage %s: already done, reused", stage.name)
        return json.loads((sart / DONE).read_text())
    if (sart / DONE).exists():
        log.warning("stage %s: done.json exists but %s missing: recomputing", stage.name, ", ".join(missing))
        (sart / DONE).unlink()
    result = run_stage(resolved, stage, sart, data_dir, run_dir, progress)
    atomic_write_text(sart / DONE, json.dumps(result, indent=2))
    return result


# ---------------------------------------------------------------- the run


def run_metrics(fp: dict, resolved: Resolved, stages: dict[str, dict]) -> dict:
    """metrics.json: the final stage's results at the top level, every stage's under ``stages``."""
    final = stages[resolved.final.name]
    metrics = {"run_id": fp["run_id"], "recipe": resolved.name, "final_stage": resolved.final.name,
               "n_processes": fp["n_processes"]}
    metrics.update({k: v for k, v in final.items() if k not in STAGE_ONLY})
    metrics["stages"] = stages
    return metrics


def run_recipe(resolved: Resolved, data_dir: Path, force: bool = False,
               progress: bool = True) -> tuple[Path, dict, bool]:
    """Run every stage of ``resolved``; return (run folder, metrics, reused)."""
    for s in resolved.stages:  # an unknown baseline name fails before anything is written
        if baselines.is_baseline(s.model.base):
            baselines.baseline_kind(s.model.base, f"stage {s.name}: model.base")
    fp = fingerprint(resolved, data_dir)
    run_dir, art = run_folders(resolved, fp["run_id"])
    metrics_file = run_dir / METRICS
    if force:
        metrics_file.unlink(missing_ok=True)  # first: a forced run never leaves old metrics behind
        if art.exists():
            shutil.rmtree(art)
    elif finished(resolved, run_dir, art):
        log.info("%s is finished: reused", run_dir)
        return run_dir, json.loads(metrics_file.read_text()), True
    metrics_file.unlink(missing_ok=True)  # stale metrics vouch for nothing while we recompute
    atomic_write_text(run_dir / "resolved.yaml", resolved.to_yaml())
    atomic_write_text(run_dir / "fingerprint.json", json.dumps(fp, indent=2))
    log.info("run %s: %d stage(s) -> %s", fp["run_id"], len(resolved.stages), run_dir)
    stages = {s.name: _stage(resolved, s, art, data_dir, run_dir, progress) for s in resolved.stages}
    metrics = run_metrics(fp, resolved, stages)
    atomic_write_text(metrics_file, json.dumps(metrics, indent=2))  # last: the run's done marker
    return run_dir, metrics, False
