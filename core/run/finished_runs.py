"""What a finished run predicts: its folder found and checked, its final stage loaded (model, frozen-feature
head or baseline parameters) and its probabilities of new rows in the view asked for. Used by
``replicate predict`` (:mod:`replicator.core.run.submission`) and by the fold and ensemble combinations."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from replicator.core.config.catalogue import build_plugins
from replicator.core.config.recipe import resolve
from replicator.core.errors import ReplicatorError
from replicator.core.model.inference import load_predictor
from replicator.core.predict.evaluate import read_valid_fit
from replicator.core.predict.postprocess import postprocess
from replicator.core.predict.views import predict_probs
from replicator.core.rows import swap_row
from replicator.core.run.ensemble import swap_back
from replicator.core.run.pipeline import weights_file
from replicator.core.stages.baseline import is_baseline, load_params
from replicator.core.stages.baseline import predict as baseline_predict
from replicator.core.stages.frozen_features import predict_rows
from replicator.core.stages.offsets import saved_offset
from replicator.core.util.layout import (
    BASELINE_PARAMS,
    FAILED,
    FINGERPRINT,
    METRICS,
    OFFSET_PARAMS,
    RESOLVED,
    VALID_PREDICTIONS,
    WEIGHTS,
    artifacts_root,
    reports_root,
)
from replicator.core.util.manifest import check_artifacts, check_reports, rebuild_hint, run_manifest
from replicator.core.util.path_checks import check_safetensors, readable_file

log = logging.getLogger(__name__)


def find_run(run: str) -> Path:
    """A run folder, or a run id looked up under the reports folder; a failed or unfinished run is
    an error naming the folder and what it lacks."""

    p = Path(run)
    hits = [p] if p.is_dir() else list(reports_root().glob(f"*/{run}")) if "/" not in str(run) else []
    if len(hits) != 1:
        raise ReplicatorError(f"run {run!r}: no run folder with fingerprint.json found "
                              "(give reports/<recipe>/<run_id>)")
    p = hits[0]
    if (p / FAILED).exists():
        raise ReplicatorError(f"run {p}: its last attempt failed ({_failure(p / FAILED)}); "
                              "rerun `replicate run`")
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


def read_fingerprint(run_dir: Path) -> dict:
    """A run's ``fingerprint.json`` with its run id and recipe; a ReplicatorError naming it otherwise."""
    path = Path(run_dir) / FINGERPRINT
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ReplicatorError(f"{path}: unreadable ({type(e).__name__}: {e}); "
                              f"{rebuild_hint(run_dir)}") from None
    if not isinstance(info, dict) or not all(isinstance(info.get(k), str) for k in ("recipe", "run_id")):
        raise ReplicatorError(f"{path}: not a run's fingerprint (no recipe and run_id); "
                              f"{rebuild_hint(run_dir)}")
    return info


def run_parts(run_dir: Path) -> tuple[dict, object, Path]:
    """(fingerprint, final stage, the stage's artifacts folder) of a finished run, every file that
    ``predict`` reads checked: there, readable, and the file the run finished with (its ``manifest.json``;
    a run made before manifests is read with a warning)."""

    manifest = run_manifest(run_dir)
    check_reports(run_dir, manifest, [FINGERPRINT])
    fingerprint_info = read_fingerprint(run_dir)
    readable_file(run_dir / RESOLVED, "resolved recipe")
    check_reports(run_dir, manifest, [RESOLVED])
    stage = resolve(run_dir / RESOLVED, check_plugins=False).final
    artifacts = artifacts_root() / fingerprint_info["recipe"] / fingerprint_info["run_id"] / stage.name
    hint = ("run `replicate run` for this recipe first "
            f"(artifacts live under REPLICATOR_ARTIFACTS={artifacts_root()})")
    needs = [BASELINE_PARAMS] if is_baseline(stage.model.base) else [weights_file(stage), VALID_PREDICTIONS]
    needs += [OFFSET_PARAMS] if stage.model.offset else []
    for f in needs:
        if not (artifacts / f).exists():
            raise ReplicatorError(f"{artifacts / f} is missing: {hint}")
        readable_file(artifacts / f, "run output")
    if weights_file(stage) == WEIGHTS:
        check_safetensors(artifacts / WEIGHTS)
    if VALID_PREDICTIONS in needs:
        _valid_fit(artifacts)
    check_artifacts(run_dir, manifest, artifacts.parent, prefix=f"{stage.name}/")
    return fingerprint_info, stage, artifacts


def _valid_fit(artifacts: Path):
    """The validation (probabilities, labels) a run's postprocessing is fitted on."""
    try:
        return read_valid_fit(artifacts / VALID_PREDICTIONS)
    except (ValueError, KeyError) as e:
        raise ReplicatorError(f"{artifacts / VALID_PREDICTIONS}: unreadable ({type(e).__name__}: {e}); rerun "
                              "the same `replicate run` command to rebuild it") from None


def run_probs(run_dir: Path, stage, artifacts: Path, rows: list[dict], view: str = "final",
              progress: bool = True):
    """A finished run's (N, 3) probabilities of ``rows``: ``final`` (TTA mean, postprocessed: what its
    submission holds), or the raw ``identity``, ``swapped`` or ``both`` view (:func:`view_probs`)."""

    if view != "final" and (is_baseline(stage.model.base) or stage.model.features):
        raise ReplicatorError(f"run {run_dir}: a baseline or frozen-feature run predicts its final view "
                              f"only, not {view!r} (it is swap-symmetric by construction)")
    if is_baseline(stage.model.base):  # a baseline run: its fitted parameters, no model
        return baseline_predict(load_params(artifacts / BASELINE_PARAMS), rows)
    fit = _valid_fit(artifacts)
    plugins = build_plugins(stage.plugins, str(run_dir / RESOLVED), unused=stage.unused_hooks)
    if stage.model.features:  # a frozen-feature run: the backbone encodes, the saved head predicts

        return postprocess(plugins, predict_rows(stage, artifacts, rows, progress), rows, fit=fit)
    model, tokenizer = load_predictor(stage, plugins, artifacts / WEIGHTS)
    offset = (saved_offset(stage.model, load_params(artifacts / OFFSET_PARAMS), rows, progress)
              if stage.model.offset else None)
    return model_probs(stage, plugins, model, tokenizer, rows, view, fit, progress, offset)


def model_probs(stage, plugins, model, tokenizer, rows: list[dict], view: str, fit, progress: bool = True,
                offset=None):
    """A loaded model's probabilities of ``rows`` in ``view``: ``final`` = its recipe's TTA views
    averaged, then postprocessed with ``fit`` (validation (probabilities, labels)); otherwise
    :func:`view_probs` over its identity predictions. ``offset``: a ``model.offset`` baseline's
    log-probabilities, added to the logits."""

    def predict_fn(batch: list[dict], use_tta: bool = False) -> dict:
        return predict_probs(model, tokenizer, plugins, batch, stage.predict.max_length,
                             stage.predict.batch_tokens, progress, use_tta=use_tta, offset=offset)

    if view == "final":
        return postprocess(plugins, predict_fn(rows, use_tta=True)["tta"], rows, fit=fit)
    return view_probs(rows, view, lambda batch: predict_fn(batch)["identity"])


def view_probs(rows: list[dict], view: str, predict_fn) -> np.ndarray:
    """``identity``: ``predict_fn(rows)``; ``swapped``: ``predict_fn`` of the A/B-swapped rows, columns
    swapped back to the original order; ``both``: the mean of the two."""

    if view not in ("identity", "swapped", "both"):
        raise ReplicatorError(f"unknown prediction view {view!r}; known: final, identity, swapped, both")
    out = []
    if view in ("identity", "both"):
        out.append(np.asarray(predict_fn(rows)))
    if view in ("swapped", "both"):
        out.append(swap_back(predict_fn([swap_row(r) for r in rows])))
    return np.mean(out, axis=0)
