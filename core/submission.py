"""``replicate predict``: a finished run's final model on a Kaggle-format test CSV -> a submission
(``id, winner_model_a, winner_model_b, winner_tie``; probabilities in [0, 1] summing to 1)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from .errors import ReplicatorError
from .io import atomic_write_text

log = logging.getLogger(__name__)


def find_run(run: str) -> Path:
    """A run folder, or a run id looked up under the reports folder."""
    from .pipeline import reports_root

    p = Path(run)
    if (p / "fingerprint.json").exists():
        return p
    hits = list(reports_root().glob(f"*/{run}")) if "/" not in str(run) else []
    if len(hits) == 1:
        return hits[0]
    raise ReplicatorError(f"run {run!r}: no run folder with fingerprint.json found (give reports/<recipe>/<run_id>)")


def submission_frame(ids: list[str], probs: np.ndarray):
    """The submission table: probabilities clipped to [0, 1] and normalised per row."""
    import pandas as pd

    final = np.clip(probs, 0.0, 1.0)
    final = final / final.sum(axis=1, keepdims=True)
    return pd.DataFrame({"id": ids, "winner_model_a": final[:, 0], "winner_model_b": final[:, 1],
                         "winner_tie": final[:, 2]})


def predict(run: str, test_csv: Path, out: Path, progress: bool = True) -> dict:
    """Write a Kaggle/mle-bench submission for ``test_csv`` with the final model of ``run``.

    Postprocessing (calibration) is fitted on all the run's validation predictions."""
    from .baselines import PARAMS_FILE, is_baseline, load_params
    from .baselines import predict as baseline_predict
    from .calibrate import postprocess
    from .data import read_competition_csv
    from .evaluate import VALID_PREDICTIONS, read_valid_fit
    from .manager import build_plugins
    from .model import load_for_inference
    from .pipeline import WEIGHTS, artifacts_root
    from .predict import predict_probs
    from .recipe import resolve

    run_dir = find_run(run)
    fp = json.loads((run_dir / "fingerprint.json").read_text())
    resolved = resolve(run_dir / "resolved.yaml", check_plugins=False)
    stage = resolved.final
    art = artifacts_root() / fp["recipe"] / fp["run_id"] / stage.name
    if is_baseline(stage.model.base):  # a baseline run: its fitted parameters, no model
        rows = read_competition_csv(test_csv, require_labels=False)
        final = baseline_predict(load_params(art / PARAMS_FILE), rows)
        return _write(out, rows, final, run_dir)
    if stage.model.features:  # a frozen-feature run: the backbone encodes, the saved head predicts
        from .features import predict_rows

        rows = read_competition_csv(test_csv, require_labels=False)
        plugins = build_plugins(stage.plugins, str(run_dir / "resolved.yaml"), unused=stage.unused_hooks)
        probs = predict_rows(stage, art, rows, progress)
        final = postprocess(plugins, probs, rows, fit=read_valid_fit(art / VALID_PREDICTIONS))
        return _write(out, rows, final, run_dir)
    weights = art / WEIGHTS
    if not weights.exists():
        raise ReplicatorError(f"{weights} is missing: run `replicate run` for this recipe first "
                              f"(artifacts live under REPLICATOR_ARTIFACTS={artifacts_root()})")
    rows = read_competition_csv(test_csv, require_labels=False)
    plugins = build_plugins(stage.plugins, str(run_dir / "resolved.yaml"), unused=stage.unused_hooks)
    model, tok = load_for_inference(stage.model, plugins, weights, load_in_8bit=stage.predict.load_in_8bit)
    probs = predict_probs(model, tok, plugins, rows, stage.predict.max_length, stage.predict.batch_tokens, progress)
    final = postprocess(plugins, probs["tta"], rows, fit=read_valid_fit(art / VALID_PREDICTIONS))
    return _write(out, rows, final, run_dir)


def _write(out, rows: list[dict], final: np.ndarray, run_dir: Path) -> dict:
    out = Path(out)
    atomic_write_text(out, submission_frame([r["id"] for r in rows], final).to_csv(index=False, float_format="%.10f"))
    log.info("wrote %s (%d rows) with %s", out, len(rows), run_dir)
    return {"rows": len(rows), "out": str(out), "run": str(run_dir)}
