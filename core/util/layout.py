"""Where a run's files live, and their names: the one low module that every layer may import.

``reports/<recipe>/<run_id>/`` (``REPLICATOR_REPORTS``) holds the small committed outputs of a run;
``artifacts/<recipe>/<run_id>/<stage>/`` (``REPLICATOR_ARTIFACTS``, git-ignored) the heavy ones;
``REPLICATOR_CACHE`` (default ``~/.cache/arena-replicator``) the converted embedded models.
"""

from __future__ import annotations

import os
from pathlib import Path

# ---------------------------------------------------------------- a run's reports folder
#: the complete config of a run, every default written out
RESOLVED = "resolved.yaml"
#: everything that identifies a run (replicator.core.run.fingerprint)
FINGERPRINT = "fingerprint.json"
#: a run's results, written last: the run's done marker
METRICS = "metrics.json"
#: the error of a failed attempt (no metrics.json beside it)
FAILED = "failed.json"
#: per-row validation predictions of the final stage (replicator.core.scoring.row_predictions)
ROW_PREDICTIONS = "valid_predictions.csv.gz"

# ---------------------------------------------------------------- a stage's artifacts folder
#: a stage's done marker, holding its results
DONE = "done.json"
#: trained weights (LoRA adapters and heads, or every weight of a full fine-tune)
WEIGHTS = "final.safetensors"
#: the logistic head of a frozen-feature stage (replicator.core.stages.frozen_features)
HEAD_FILE = "feature_head.json"
#: a baseline stage's fitted parameters (replicator.core.stages.baseline)
BASELINE_PARAMS = "baseline.json"
#: the offset baseline of a stage with model.offset, fitted on all its rows (replicator.core.stages.crossfit)
OFFSET_PARAMS = "offset.json"
#: every validation prediction of a stage, per view (replicator.core.predict.evaluate)
VALID_PREDICTIONS = "valid_predictions.json"
#: what a stage predicts for later stages (``outputs:``; replicator.core.predict.stage_outputs)
OUTPUTS = "outputs.json"
#: the results of a train step (replicator.core.stages.steps)
TRAIN_RESULT = "train.json"


def reports_root() -> Path:
    return Path(os.environ.get("REPLICATOR_REPORTS", "reports"))


def artifacts_root() -> Path:
    return Path(os.environ.get("REPLICATOR_ARTIFACTS", "artifacts"))


def cache_root() -> Path:
    """Converted embedded models (replicator.core.model.embedded)."""
    return Path(os.environ.get("REPLICATOR_CACHE", Path.home() / ".cache" / "arena-replicator"))


def run_folders(recipe: str, run_id: str) -> tuple[Path, Path]:
    """(reports folder, artifacts folder) of a run of ``recipe``."""
    return reports_root() / recipe / run_id, artifacts_root() / recipe / run_id


def row_predictions_path(run_dir: Path, stage: str, final: str) -> Path:
    """``valid_predictions.csv.gz`` for the final stage, ``valid_predictions.<stage>.csv.gz`` before it."""
    return run_dir / (ROW_PREDICTIONS if stage == final else f"valid_predictions.{stage}.csv.gz")
