"""``replicate predict``: a finished run's final model on a Kaggle-format test CSV -> a submission
(``id, winner_model_a, winner_model_b, winner_tie``; probabilities in [0, 1] summing to 1)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from .dist import is_main
from .errors import ReplicatorError
from .io import atomic_write_text

log = logging.getLogger(__name__)


def find_run(run: str) -> Path:
    """A run folder, or a run id looked up under the reports folder; a failed or unfinished run is
    an error naming the folder and what it lacks."""
    from .pipeline import FAILED, FINGERPRINT, METRICS, reports_root

    p = Path(run)
    hits = [p] if p.is_dir() else list(reports_root().glob(f"*/{run}")) if "/" not in str(run) else []
    if len(hits) != 1:
        raise ReplicatorError(f"run {run!r}: no run folder with fingerprint.json found (give reports/<recipe>/<run_id>)")
    p = hits[0]
    if (p / FAILED).exists():
        raise ReplicatorError(f"run {p}: its last attempt failed ({_failure(p / FAILED)}); rerun `replicate run`")
    for f in (FINGERPRINT, METRICS):
        if not (p / f).is_file():
            raise ReplicatorError(f"run {p}: not finished (no {f}); run `replicate run` for it first")
    return p


def _failure(path: Path) -> str:
    try:
        info = json.loads(path.read_text())
        return f"stage {info.get('stage') or '-'}: {info.get('error')}: {info.get('message')}; see {path}"
    except (OSError, ValueError, AttributeError):
        return f"see {path}"


def submission_frame(ids: list[str], probs: np.ndarray):
    """The submission table: probabilities clipped to [0, 1] and normalised per row."""
    import pandas as pd

    final = np.clip(probs, 0.0, 1.0)
    final = final / final.sum(axis=1, keepdims=True)
    return pd.DataFrame({"id": ids, "winner_model_a": final[:, 0], "winner_model_b": final[:, 1],
                         "winner_tie": final[:, 2]})


def _inputs(run: str, test_csv: Path, out: Path) -> tuple[Path, dict, object, Path]:
    """Every path ``predict`` reads or writes checked before a model loads: (run folder, its
    fingerprint, its final stage, the stage's artifacts folder)."""
    from .baselines import PARAMS_FILE, is_baseline
    from .evaluate import VALID_PREDICTIONS
    from .pipeline import WEIGHTS, artifacts_root, weights_file
    from .preflight import check_safetensors, output_file, readable_file
    from .recipe import resolve

    output_file(out, "submission file (--out)")
    readable_file(test_csv, "test file")
    run_dir = find_run(run)
    fp = json.loads((run_dir / "fingerprint.json").read_text())
    readable_file(run_dir / "resolved.yaml", "resolved recipe")
    stage = resolve(run_dir / "resolved.yaml", check_plugins=False).final
    art = artifacts_root() / fp["recipe"] / fp["run_id"] / stage.name
    hint = f"run `replicate run` for this recipe first (artifacts live under REPLICATOR_ARTIFACTS={artifacts_root()})"
    needs = [PARAMS_FILE] if is_baseline(stage.model.base) else [weights_file(stage), VALID_PREDICTIONS]
    for f in needs:
        if not (art / f).exists():
            raise ReplicatorError(f"{art / f} is missing: {hint}")
        readable_file(art / f, "run output")
    if weights_file(stage) == WEIGHTS:
        check_safetensors(art / WEIGHTS)
    return run_dir, fp, stage, art


def predict(run: str, test_csv: Path, out: Path, progress: bool = True) -> dict:
    """Write a Kaggle/mle-bench submission for ``test_csv`` with the final model of ``run``.

    Every input and output is checked first (:func:`_inputs`), the test rows are read and validated,
    then the model loads. Postprocessing (calibration) is fitted on all the run's validation predictions."""
    from .baselines import PARAMS_FILE, is_baseline, load_params
    from .baselines import predict as baseline_predict
    from .calibrate import postprocess
    from .data import read_competition_csv
    from .evaluate import VALID_PREDICTIONS, read_valid_fit
    from .manager import build_plugins
    from .model import load_for_inference
    from .pipeline import WEIGHTS
    from .predict import predict_probs

    run_dir, fp, stage, art = _inputs(run, Path(test_csv), Path(out))
    rows = read_competition_csv(test_csv, require_labels=False)
    if is_baseline(stage.model.base):  # a baseline run: its fitted parameters, no model
        final = baseline_predict(load_params(art / PARAMS_FILE), rows)
        return _write(out, rows, final, run_dir)
    try:
        fit = read_valid_fit(art / VALID_PREDICTIONS)
    except (ValueError, KeyError) as e:
        raise ReplicatorError(f"{art / VALID_PREDICTIONS}: unreadable ({type(e).__name__}: {e}); rerun "
                              "`replicate run` with --force") from None
    plugins = build_plugins(stage.plugins, str(run_dir / "resolved.yaml"), unused=stage.unused_hooks)
    if stage.model.features:  # a frozen-feature run: the backbone encodes, the saved head predicts
        from .features import predict_rows

        final = postprocess(plugins, predict_rows(stage, art, rows, progress), rows, fit=fit)
        return _write(out, rows, final, run_dir)
    model, tok = load_for_inference(stage.model, plugins, art / WEIGHTS, load_in_8bit=stage.predict.load_in_8bit,
                                    merge_lora=stage.predict.merge_lora)
    probs = predict_probs(model, tok, plugins, rows, stage.predict.max_length, stage.predict.batch_tokens, progress)
    final = postprocess(plugins, probs["tta"], rows, fit=fit)
    return _write(out, rows, final, run_dir)


def _write(out, rows: list[dict], final: np.ndarray, run_dir: Path) -> dict:
    out = Path(out)
    if is_main():
        atomic_write_text(out, submission_frame([r["id"] for r in rows], final).to_csv(index=False, float_format="%.10f"))
    log.info("wrote %s (%d rows) with %s", out, len(rows), run_dir)
    return {"rows": len(rows), "out": str(out), "run": str(run_dir)}
