"""Predictions a stage writes for later stages (``outputs:``) and how later stages get them.

``outputs: [train]``: teacher probabilities on the stage's training rows (distillation: they land
in ``row["teacher"][stage]``); ``outputs: [pool]``: probabilities on the ``pool`` split
(pseudo-labels, with the pool rows). Stored as ``outputs.json`` in the stage's artifacts folder.
"""

from __future__ import annotations

import json
from pathlib import Path

from replicator.core.config.recipe import Resolved, StageConfig
from replicator.core.data.collect import stage_rows_error
from replicator.core.predict.views import predict_probs
from replicator.core.util.atomic import atomic_write_text
from replicator.core.util.distributed import is_main
from replicator.core.util.layout import OUTPUTS


def _probs_by_id(model, tokenizer, plugins, stage: StageConfig, rows, progress) -> dict[str, list[float]]:
    p = predict_probs(model, tokenizer, plugins, rows, stage.predict.max_length, stage.predict.batch_tokens,
                      progress)["tta"]
    return {r["id"]: [float(x) for x in pr] for r, pr in zip(rows, p, strict=True)}


def write_stage_outputs(stage: StageConfig, plugins, model, tokenizer, train_rows, ctx, path: Path,
                        progress) -> dict:
    """Predictions later stages consume, written to ``path``: on the training rows (teachers) and on the
    pool (pseudo-labels)."""
    out: dict = {}
    if "train" in stage.outputs:
        out["train"] = _probs_by_id(model, tokenizer, plugins, stage, train_rows, progress)
    if "pool" in stage.outputs:
        pool = [r for rows in plugins.all("data_sources", split="pool", ctx=ctx) if rows for r in rows]
        if not pool:
            stage_rows_error(stage.name, "pool", "outputs: [pool] asks for pseudo-labels but no data "
                             "source feeds the 'pool' split")
        out["pool"] = _probs_by_id(model, tokenizer, plugins, stage, pool, progress)
        out["pool_rows"] = [{k: v for k, v in r.items() if k != "label"} for r in pool]
    if is_main():
        atomic_write_text(path, json.dumps(out))
    return {k: len(v) for k, v in out.items()}


def load_stage_outputs(resolved: Resolved, stage: StageConfig, art_root: Path) -> dict:
    """Outputs of the stages before ``stage`` that wrote any."""
    found = {}
    for s in resolved.stages:
        if s.name == stage.name:
            break
        f = art_root / s.name / OUTPUTS
        if s.outputs and f.exists():
            found[s.name] = json.loads(f.read_text())
    return found


def attach_teachers(rows: list[dict], stage_outputs: dict) -> None:
    """``row["teacher"][stage]`` = that stage's probabilities for the row, for every stage that
    predicted on training rows (distillation)."""
    for name, out in stage_outputs.items():
        preds = out.get("train")
        if not preds:
            continue
        for r in rows:
            if r["id"] in preds:
                r.setdefault("teacher", {})[name] = preds[r["id"]]
