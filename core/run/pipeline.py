"""Running a recipe: its stages in order, each data -> model -> train -> evaluate, and reuse of
finished work.

``reports/<recipe>/<run_id>/`` (``REPLICATOR_REPORTS``) holds the small committed outputs:
``resolved.yaml`` (the complete config), ``fingerprint.json``, per-row validation predictions
and, written last, ``metrics.json``. Heavy outputs (checkpoints, weights, predictions) go to
``artifacts/<recipe>/<run_id>/<stage>/`` (``REPLICATOR_ARTIFACTS``, git-ignored); live tracking of each stage
(:mod:`replicator.core.util.tracking`) to ``artifacts/<recipe>/<run_id>/tracking/``.

Reuse never trusts a marker alone: a stage is done when its ``done.json`` exists *and* the outputs
it vouches for are there (weights complete, readable validation predictions, ``outputs.json`` when
asked); a run is finished when its ``metrics.json`` and ``fingerprint.json`` exist, no
``failed.json`` does, and every stage is done. A stage with a ``checkpoint.pt`` resumes from it.

Order of an attempt: the reports and artifacts folders are checked writable; the run's lock is
taken (:mod:`replicator.core.util.lock`); the first stage's data is read and checked; only then does the
run write (``force`` first removes ``metrics.json``, then the artifacts; ``resolved.yaml``);
``fingerprint.json`` and, last, ``metrics.json`` are written when every stage is done. A failure
after the first write leaves ``failed.json`` (error, stage) and no ``metrics.json``/``fingerprint.json``
(``replicate report`` only sees finished runs). Under ``accelerate launch`` every process computes
its share and only the main process writes (:mod:`replicator.core.util.distributed`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import random
import shutil
import time
from pathlib import Path

import numpy as np

from replicator.core.config.catalogue import build_plugins
from replicator.core.config.recipe import Resolved, StageConfig
from replicator.core.data.collect import collect_rows
from replicator.core.data.splits import sample_rows
from replicator.core.errors import RecipeError, ReplicatorError

# the loaders and the training loop are called through their modules: tests replace them there
from replicator.core.model import inference, loading, meta, precision
from replicator.core.model.gptq import write_calibration
from replicator.core.model.sharding import strategy, trainable_to_save
from replicator.core.predict.evaluate import evaluate, label_prior, labels_of
from replicator.core.predict.stage_outputs import attach_teachers, load_stage_outputs, write_stage_outputs
from replicator.core.predict.views import IDENTITY, predict_probs
from replicator.core.rows import DataContext
from replicator.core.run.fingerprint import fingerprint
from replicator.core.scoring.metrics import log_loss
from replicator.core.scoring.row_predictions import write_row_predictions as write
from replicator.core.stages import baseline as baselines
from replicator.core.stages import steps
from replicator.core.stages.crossfit import run_crossfit_stage
from replicator.core.stages.frozen_features import run_features_stage
from replicator.core.stages.result import StageResult
from replicator.core.stages.steps import forget, stage_keys
from replicator.core.tokens.encoding import n_workers
from replicator.core.train import trainer
from replicator.core.util import tracking
from replicator.core.util.atomic import atomic_save_safetensors, atomic_write_text, remove_temp_files
from replicator.core.util.distributed import barrier, is_main
from replicator.core.util.layout import (
    BASELINE_PARAMS,
    DONE,
    FAILED,
    FINGERPRINT,
    HEAD_FILE,
    METRICS,
    OUTPUTS,
    RESOLVED,
    TRAIN_RESULT,
    VALID_PREDICTIONS,
    WEIGHTS,
    row_predictions_path,
    run_folders,
)
from replicator.core.util.lock import run_lock
from replicator.core.util.manifest import (
    FINGERPRINT_KEY,
    MANIFEST,
    entries,
    entry,
    entry_of,
    listing,
    problems,
    read_manifest,
    run_problems,
    write_manifest,
)
from replicator.core.util.path_checks import safetensors_problem, writable_folder

log = logging.getLogger(__name__)

#: per-stage results kept out of the top level of metrics.json (they stay under ``stages``)
STAGE_ONLY = ("train_loss_history", "model", "stage", "train_reused", "views_reused", "train_seconds")


# ---------------------------------------------------------------- what is finished


def _readable_predictions(path: Path) -> bool:
    try:
        cols = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    n = len(cols.get("id") or [])
    return n > 0 and all(len(cols.get(f"{v}_{k}", [])) == n
                         for v in ("tta", "final", "label") for k in ("a", "b", "tie"))


def weights_file(stage: StageConfig) -> str:
    """What a finished stage keeps of its model: trained weights, a baseline's parameters or a
    frozen-feature stage's head."""

    if baselines.is_baseline(stage.model.base):
        return BASELINE_PARAMS
    return HEAD_FILE if stage.model.features else WEIGHTS


def stage_missing(stage: StageConfig, stage_artifacts: Path, verify: bool = True) -> list[str]:
    """What a finished stage should have under ``stage_artifacts`` and has not (``[]``: the stage is done);
    with ``verify``, also every file that is not the one the stage finished with (its ``manifest.json``)."""
    weights = weights_file(stage)
    need = [DONE, weights, VALID_PREDICTIONS] + ([OUTPUTS] if stage.outputs else [])
    missing = [f for f in need if not (stage_artifacts / f).exists()]
    if not stage_seal(stage_artifacts).exists():
        missing.append(stage_seal(stage_artifacts).name)
    if VALID_PREDICTIONS not in missing and not _readable_predictions(stage_artifacts / VALID_PREDICTIONS):
        missing.append(f"{VALID_PREDICTIONS} (unreadable)")
    if weights == WEIGHTS and WEIGHTS not in missing and safetensors_problem(stage_artifacts / WEIGHTS):
        missing.append(f"{WEIGHTS} ({safetensors_problem(stage_artifacts / WEIGHTS)})")
    if verify and not missing:
        missing += [f"{p.name} ({why})" for p, why in stage_damage(stage_artifacts)]
    return missing


def stage_seal(stage_artifacts: Path) -> Path:
    """A stage's manifest, beside its folder: ``artifacts/<recipe>/<run_id>/<stage>.manifest.json``."""
    return stage_artifacts.parent / f"{stage_artifacts.name}.{MANIFEST}"


def stage_damage(stage_artifacts: Path, run_dir: Path | None = None) -> list[tuple[Path, str]]:
    """``[(file, why)]``: the files of a stage (its folder; with ``run_dir`` its per-row predictions in the
    reports folder too) that are not the ones its manifest (:func:`stage_seal`) recorded when it finished."""
    seal = stage_seal(stage_artifacts)
    try:
        recorded = read_manifest(seal)
    except ReplicatorError as e:
        return [(seal, str(e).removeprefix(f"{seal}: "))]
    found = problems(recorded.get("artifacts") or {}, stage_artifacts)
    if DONE not in (recorded.get("artifacts") or {}):
        found.append((stage_artifacts / DONE, f"not in {seal}"))
    if run_dir is not None:
        found += problems(recorded.get("reports") or {}, run_dir)
    return found


def _seal_stage(stage_artifacts: Path, rowpreds: Path, done_text: str) -> None:
    """The stage's manifest (:func:`stage_seal`): every file of its folder, ``done.json`` as it is about to
    be written, and its per-row predictions in the reports folder."""
    files = entries(stage_artifacts, skip=(DONE,)) | {DONE: entry_of(done_text)}
    write_manifest(stage_seal(stage_artifacts), "stage", {"artifacts": files,
                                                         "reports": {rowpreds.name: entry(rowpreds)}},
                   stage=stage_artifacts.name)


def _discard(damaged: list[Path], stage_artifacts: Path) -> None:
    """Remove the damaged files of a stage folder before it is recomputed, and the cached steps' files they
    are hard links of (its weights, outputs, calibration rows), so that no step reuses what was damaged."""
    cache = steps.steps_root(stage_artifacts.parent)
    for p in damaged:
        if not p.is_relative_to(stage_artifacts) or not p.is_file():
            continue
        st = p.stat()
        if st.st_nlink > 1 and cache.is_dir():
            for twin in (f for f in cache.rglob("*") if f.is_file() and not f.is_symlink()):
                if os.path.samestat(twin.stat(), st):
                    log.warning("%s: removed (the cached step of a damaged file: %s)", twin, p)
                    twin.unlink()
        p.unlink()


def finished(resolved: Resolved, run_dir: Path, artifacts: Path) -> bool:
    """Whether the run's ``metrics.json`` and ``fingerprint.json`` exist, no ``failed.json`` says its
    last attempt failed, every file its ``manifest.json`` records is the one it finished with (else a
    warning naming the damaged files: the run is recomputed, never reused), and every stage is done."""
    if not ((run_dir / METRICS).exists() and (run_dir / FINGERPRINT).exists()) or (run_dir / FAILED).exists():
        return False
    damaged = run_problems(run_dir, artifacts)
    if damaged:
        log.warning("%s: not the run that finished (%s): recomputing what is damaged", run_dir,
                    listing(damaged))
        return False
    missing = {s.name: stage_missing(s, artifacts / s.name, verify=False) for s in resolved.stages}
    missing = {k: v for k, v in missing.items() if v}
    if missing:
        log.warning("%s has metrics but not the outputs they vouch for under %s (%s): recomputing, so that "
                    "`replicate predict` has a model", run_dir, artifacts,
                    "; ".join(f"{k}: {', '.join(v)}" for k, v in missing.items()))
    return not missing


# ---------------------------------------------------------------- one stage


def _seed_everything(seed: int) -> None:

    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def stage_rows(resolved: Resolved, stage: StageConfig, plugins,
               ctx: DataContext) -> tuple[list[dict], list[dict]]:
    """The stage's training rows (teachers attached, at most ``train.max_rows``) and validation rows
    (at most ``predict.max_rows``), both sampled with the seed in their original order."""
    train_rows, valid_rows = collect_rows(plugins, ctx)
    attach_teachers(train_rows, ctx.stage_outputs)
    train_rows = sample_rows(train_rows, stage.train.max_rows, resolved.seed)
    valid_rows = sample_rows(valid_rows, stage.predict.max_rows, resolved.seed + 1)
    log.info("stage %s: %d train rows, %d validation rows", stage.name, len(train_rows), len(valid_rows))
    return train_rows, valid_rows


@dataclasses.dataclass
class RunState:
    """One attempt at a run: where it writes and whether it has begun writing (:meth:`begin`)."""

    resolved: Resolved
    fingerprint_info: dict
    run_dir: Path
    artifacts: Path
    data_dir: Path
    force: bool = False
    progress: bool = True
    begun: bool = False
    stage: str = ""
    #: step keys of the LM stages (:func:`replicator.core.stages.steps.stage_keys`)
    keys: dict = dataclasses.field(default_factory=dict)
    #: the tracker kind of this run, the tracker of the stage running (:mod:`replicator.core.util.tracking`)
    track: str = "none"
    tracker: tracking.Tracker = tracking.NO_TRACKER

    def stage_tracker(self, stage: StageConfig) -> tracking.Tracker:
        """The tracker of ``stage`` (started by its first log: nothing is written before :meth:`begin`)."""
        config = {**self.resolved.complete, "run_id": self.fingerprint_info["run_id"], "stage": stage.name,
                  "toggles": " ".join(self.resolved.toggles)}
        return tracking.Tracker(self.track, self.artifacts / tracking.FOLDER, config["run_id"],
                                self.resolved.name, stage.name, config, main=is_main())

    def begin(self) -> None:
        """The first write of this attempt, once the first stage's data and config passed their checks:
        what ``force`` replaces goes (metrics first, then the artifacts), the results of an older
        attempt stop vouching for anything, temp files of killed writers (the lock is ours) go,
        ``resolved.yaml`` is written."""
        if self.begun:
            return
        if is_main():
            for f in (METRICS, FINGERPRINT):
                (self.run_dir / f).unlink(missing_ok=True)
            if self.force:

                forget(self.artifacts, self.resolved, self.keys)  # the cached steps this run would reuse
                if self.artifacts.exists():
                    shutil.rmtree(self.artifacts)
            for folder in (self.run_dir, self.artifacts):
                remove_temp_files(folder)
            atomic_write_text(self.run_dir / RESOLVED, self.resolved.to_yaml())
        barrier()
        self.begun = True
        log.info("run %s: %d stage(s) -> %s", self.fingerprint_info["run_id"], len(self.resolved.stages),
                 self.run_dir)

    def mark_failed(self, error: BaseException) -> None:
        """``failed.json`` (the error, the stage) once this attempt has written anything: the folder is
        never taken for a result, and the next run recomputes what is not done."""
        if not (self.begun and is_main()):
            return
        message = "interrupted" if isinstance(error, KeyboardInterrupt) else str(error)  # Ctrl-C has none
        info = {"run_id": self.fingerprint_info["run_id"], "stage": self.stage, "error": type(error).__name__,
                "message": message, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        try:
            atomic_write_text(self.run_dir / FAILED, json.dumps(info, indent=2))
        except Exception as e:  # the original error matters more than this one
            log.error("could not write %s: %s", self.run_dir / FAILED, e)
        else:
            log.error("run %s failed in stage %s: %s (%s)", self.fingerprint_info["run_id"],
                      self.stage or "-", message, self.run_dir / FAILED)


def run_stage(state: RunState, stage: StageConfig, progress: bool) -> dict:
    """Check, train and evaluate one stage; its results (what ``done.json`` holds). The stage's data
    is read and checked before the run writes anything (:meth:`RunState.begin`). The baselines
    (:mod:`replicator.core.stages.baseline`) are fitted on the same training rows and scored on the same
    validation rows; a ``baseline:`` model trains nothing else."""
    t0, resolved, stage_artifacts = time.time(), state.resolved, state.artifacts / stage.name
    plugins = build_plugins(stage.plugins, resolved.file, unused=stage.unused_hooks)
    ctx = DataContext(data_dir=state.data_dir, seed=resolved.seed, stage=stage.name,
                      cache_dir=state.artifacts / "cache",
                      stage_outputs=load_stage_outputs(resolved, stage, state.artifacts))
    train_rows, valid_rows = stage_rows(resolved, stage, plugins, ctx)
    state.begin()
    if is_main():
        (stage_artifacts / DONE).unlink(missing_ok=True)
    if baselines.is_baseline(stage.model.base):
        outcome = baselines.run_baseline(stage, train_rows, valid_rows, stage_artifacts)
    elif stage.model.features:
        # a cross-fitted frozen-feature stage scores more rows than the validation rows
        outcome = run_features_stage(stage, plugins, train_rows, valid_rows, stage_artifacts, resolved.seed,
                                     progress)
    elif stage.train.crossfit:  # every row of the validation rows' sources scored out of fold
        keys = state.keys[stage.name]
        with run_lock(steps.train_dir(state.artifacts, stage, keys), f"{stage.name} folds {keys.train[:16]}"):
            outcome = run_crossfit_stage(stage, plugins, train_rows, valid_rows, stage_artifacts,
                                         resolved.seed, progress,
                                         folds_dir=steps.folds_dir(state.artifacts, stage, keys))
    else:
        outcome = _train_and_evaluate(state, stage, plugins, ctx, train_rows, valid_rows, stage_artifacts,
                                      progress)
    if is_main():
        write_row_predictions(state.run_dir, stage, resolved.final.name, outcome.scored_rows,
                              outcome.predictions, outcome.labels)
    outcome.results.update({"stage": stage.name, "seconds": round(time.time() - t0, 1)})
    state.tracker.log(outcome.results, state.tracker.last_step or outcome.results.get("optimizer_steps") or 0,
                      prefix="final/")
    if is_main():
        plugins.notify("on_stage_end", stage=stage.name, results=outcome.results)
    return outcome.results


def _train_and_evaluate(state: RunState, stage: StageConfig, plugins, ctx: DataContext, train_rows,
                        valid_rows, stage_artifacts: Path, progress: bool) -> StageResult:
    """Train (or reuse the trained weights of the same train key), write the stage's outputs for later
    stages, predict each view (or reuse it) and postprocess (:mod:`replicator.core.stages.steps`): a
    :class:`StageResult` (predictions per view with the baselines'). Every process trains and predicts
    its share; the main process writes. The model is loaded only for a step that has to be computed."""

    keys = state.keys[stage.name]
    refs = baselines.every_run(train_rows, valid_rows)  # before training: a failure here costs seconds
    train_dir = steps.train_dir(state.artifacts, stage, keys)
    with (run_lock(train_dir, f"{stage.name} training {keys.train[:16]}") if is_main()
          else contextlib.nullcontext()):
        result, model, tokenizer = _train_step(state, stage, plugins, train_rows, valid_rows, train_dir,
                                               progress)
    if is_main():
        steps.link(train_dir / WEIGHTS, stage_artifacts / WEIGHTS)

    def trained_precision():  # the model as it trained (4-bit QLoRA stays 4-bit), with its weights

        return inference.load_for_inference(stage.model, plugins, train_dir / WEIGHTS)

    if stage.outputs:  # what later stages learn from comes from the model in the precision it trained in
        out_file = steps.outputs_file(state.artifacts, stage, keys)
        exists = out_file.exists()
        barrier()  # every process has looked before the main process writes it
        if exists:
            result["outputs"] = {k: len(v) for k, v in json.loads(out_file.read_text()).items()}
            log.info("stage %s: outputs reused (%s)", stage.name, out_file)
        else:
            if model is None:
                model, tokenizer = trained_precision()
            result["outputs"] = write_stage_outputs(stage, plugins, model, tokenizer, train_rows, ctx,
                                                    out_file, progress)
        barrier()
        if is_main():
            steps.link(out_file, stage_artifacts / OUTPUTS)
    if stage.predict.load_in_8bit:  # inference as the solutions ran it: backbone in 8-bit, loaded when needed
        model = tokenizer = None

    if stage.predict.gptq:

        if is_main():
            calibration = write_calibration(stage, plugins, train_rows, train_dir, state.resolved.seed)
            steps.link(calibration, stage_artifacts / calibration.name)
        barrier()  # written before any process quantizes

    def for_prediction():

        return inference.load_predictor(stage, plugins, train_dir / WEIGHTS)

    store = steps.ViewStore(state.artifacts, stage, keys, plugins, [r["id"] for r in valid_rows])
    barrier()  # every process has looked at the cached views before any is written
    scores, preds, labels = evaluate(model, tokenizer, plugins, stage, valid_rows, stage_artifacts, progress,
                                     baselines=refs, store=store, load=for_prediction)
    result.update(scores)
    result["views_reused"] = store.reused
    return StageResult(result, preds, labels, valid_rows)


def _train_step(state: RunState, stage: StageConfig, plugins, train_rows, valid_rows, train_dir: Path,
                progress: bool):
    """(training results, model, tokenizer): reused from ``train_dir`` (model None) when a run with the same
    train key finished training there, else trained (resuming ``train_dir/checkpoint.pt``) and saved there."""
    from accelerate.utils import extract_model_from_parallel

    done = (train_dir / TRAIN_RESULT).exists() and not safetensors_problem(train_dir / WEIGHTS)
    damaged = problems(_train_seal(train_dir), train_dir, [WEIGHTS, TRAIN_RESULT]) if done else []
    if damaged:  # weights or results not the ones the step finished with (its manifest.json): trained again
        log.warning("stage %s: trained weights in %s not reused: %s", stage.name, train_dir,
                    "; ".join(f"{p.name}: {why}" for p, why in damaged))
        done = False
    barrier()  # every process has looked before the main process writes
    if done:
        log.info("stage %s: trained weights reused from %s", stage.name, train_dir)
        return json.loads((train_dir / TRAIN_RESULT).read_text()) | {"train_reused": True}, None, None
    t0 = time.time()
    _seed_everything(state.resolved.seed)
    model, tokenizer, info = loading.load_model(stage.model, plugins, train=True)
    init_from = state.artifacts / stage.from_stage / WEIGHTS if stage.from_stage else None
    train_dir.mkdir(parents=True, exist_ok=True)
    score_fn = _valid_log_loss(plugins, tokenizer, stage, valid_rows)
    result = trainer.train_stage(stage, plugins, train_rows, model, tokenizer, info, train_dir,
                                 state.resolved.seed, init_from, progress, score_fn=score_fn,
                                 tracker=state.tracker)
    result["train_label_prior"] = label_prior(train_rows)
    result["model"] = {k: v for k, v in info.items() if k != "aux_loss"}
    result["train_seconds"] = round(time.time() - t0, 1)
    sharded = strategy(stage.launch.parallel) is not None  # FSDP2 or ZeRO-2 (the engine hooked the model)
    weights = trainable_to_save(model, model, is_main())
    if is_main():
        atomic_save_safetensors(weights, train_dir / WEIGHTS, metadata={"base": stage.model.base})
        text = json.dumps(result, indent=2)
        write_manifest(train_dir / MANIFEST, "train", {"artifacts": {WEIGHTS: entry(train_dir / WEIGHTS),
                                                                     TRAIN_RESULT: entry_of(text)}})
        atomic_write_text(train_dir / TRAIN_RESULT, text)
    barrier()  # the weights are written
    # prediction loads the saved weights into a plain model (core/model/sharding.py, core/model/zero.py)
    if sharded:
        del model, weights
        return result | {"train_reused": False}, None, None
    # without the training autocast, the fp32 master weights back in the weights' dtype: prediction computes
    # as it does from reused weights (core/model/precision.py)
    model = extract_model_from_parallel(model, keep_fp32_wrapper=False)
    precision.to_weights_dtype(model, info["dtype"])
    return result | {"train_reused": False}, model, tokenizer


def _train_seal(train_dir: Path) -> dict:
    """What a train step's ``manifest.json`` recorded (``{}``, so nothing matches, when it is missing or
    unreadable: a step trained before manifests is trained again)."""
    try:
        return read_manifest(train_dir / MANIFEST).get("artifacts") or {}
    except ReplicatorError:
        return {}


def _valid_log_loss(plugins, tokenizer, stage: StageConfig, valid_rows):
    """The periodic evaluation of ``train.eval_every``: log loss of the model on the validation rows, without
    TTA (the view the 1st place's trainer scored [R1])."""

    labels = labels_of(valid_rows)

    def score(model) -> float:  # predict_probs puts the model in eval mode; Loop.evaluate puts it back
        preds = predict_probs(model, tokenizer, plugins, valid_rows, stage.predict.max_length,
                              stage.predict.batch_tokens, progress=False, use_tta=False)
        return log_loss(preds[IDENTITY], labels)

    return score


def write_row_predictions(run_dir: Path, stage: StageConfig, final: str, rows, preds, labels) -> None:
    """Per-row validation predictions (every view, ``tta``, ``final``) committed with the report."""

    write(row_predictions_path(run_dir, stage.name, final), rows, preds, labels)


def _stage(state: RunState, stage: StageConfig) -> dict:
    """A stage's results: reused when it is done (never before ``force`` has cleared the old run),
    else computed and marked done. A baseline stage runs in the main process only."""
    stage_artifacts = state.artifacts / stage.name
    state.stage = stage.name
    rowpreds = row_predictions_path(state.run_dir, stage.name, state.resolved.final.name)
    if state.begun or not state.force:
        missing = stage_missing(stage, stage_artifacts, verify=False)
        if not rowpreds.exists():  # the report's per-row file is an output too (a deleted report folder)
            missing.append(str(rowpreds))
        # every file the stage finished with, as it was (its manifest), before anything is reused
        damaged = [] if missing else stage_damage(stage_artifacts, state.run_dir)
        barrier()  # every process has looked before anyone writes
        if not missing and not damaged:
            log.info("stage %s: already done, reused", stage.name)
            return json.loads((stage_artifacts / DONE).read_text())
        if (stage_artifacts / DONE).exists():
            log.warning("stage %s: done.json exists but %s: recomputing", stage.name,
                        "; ".join([f"{', '.join(missing)} missing"] * bool(missing)
                                  + [f"{p}: {why}" for p, why in damaged]))
        if is_main():
            _discard([p for p, _ in damaged], stage_artifacts)
    if baselines.is_baseline(stage.model.base) and not is_main():
        state.begin()  # in step with the main process's begin()
        barrier()
        return json.loads((stage_artifacts / DONE).read_text())
    with state.stage_tracker(stage) as state.tracker:
        result = run_stage(state, stage, state.progress)
    if is_main():
        done_text = json.dumps(result, indent=2)
        _seal_stage(stage_artifacts, rowpreds, done_text)  # what the stage finished with, then its marker
        atomic_write_text(stage_artifacts / DONE, done_text)
    barrier()
    return result


# ---------------------------------------------------------------- the run


def run_metrics(fingerprint_info: dict, resolved: Resolved, stages: dict[str, dict]) -> dict:
    """metrics.json: the final stage's results at the top level, every stage's under ``stages``."""
    final = stages[resolved.final.name]
    metrics = {"run_id": fingerprint_info["run_id"], "recipe": resolved.name,
               "final_stage": resolved.final.name, "n_processes": fingerprint_info["n_processes"]}
    metrics.update({k: v for k, v in final.items() if k not in STAGE_ONLY})
    metrics["stages"] = stages
    return metrics


def _finish(state: RunState, stages: dict[str, dict]) -> dict:
    """The run's last writes: ``failed.json`` of an older attempt goes, ``fingerprint.json``, then
    ``metrics.json``, the run's done marker."""
    state.begin()  # every stage reused, metrics missing: the run still writes through begin()
    metrics = run_metrics(state.fingerprint_info, state.resolved, stages)
    if is_main():
        (state.run_dir / FAILED).unlink(missing_ok=True)
        atomic_write_text(state.run_dir / FINGERPRINT, json.dumps(state.fingerprint_info, indent=2))
        metrics_text = json.dumps(metrics, indent=2)
        _write_run_manifest(state, metrics_text)
        atomic_write_text(state.run_dir / METRICS, metrics_text)
    barrier()
    return metrics


def _write_run_manifest(state: RunState, metrics_text: str) -> None:
    """The run's ``manifest.json``: every file of its reports folder (``metrics.json`` as it is about to be
    written) and of its stage folders. The stage folders' entries come from their own manifests, checked
    when the stage was reused or written when it was computed: the weights are not hashed again."""
    reports = entries(state.run_dir, skip=(MANIFEST, FAILED, METRICS)) | {METRICS: entry_of(metrics_text)}
    artifacts = {}
    for s in state.resolved.stages:
        seal = stage_seal(state.artifacts / s.name)
        artifacts |= {f"{s.name}/{k}": v for k, v in read_manifest(seal)["artifacts"].items()}
        artifacts[seal.name] = entry(seal)
    write_manifest(state.run_dir / MANIFEST, "run", {"reports": reports, "artifacts": artifacts},
                   run_id=state.fingerprint_info["run_id"])


def decoder_layers(base: str, file: str) -> int | None:
    """The decoder layer count of ``base`` from its config (shipped, ``tiny:``, a local folder, or the hub
    cache; nothing downloaded), None when no config is at hand."""
    try:
        config = meta.load_config(base, file, "model.base")
    except (ReplicatorError, ValueError, OSError):
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(base, local_files_only=True)
        except Exception:  # not cached, not a hub id, an unknown architecture: the model load will tell
            return None
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    n = getattr(text, "num_hidden_layers", None)
    return n if isinstance(n, int) else None


def check_feature_layers(resolved: Resolved, stage: StageConfig) -> None:
    """A frozen-feature stage's ``model.features.layers`` index the model's hidden states: 0 (the embeddings)
    to the layer count, or -1 (the last) back to -(count + 1); another is a RecipeError naming the key,
    before the model loads (for a base whose config is at hand)."""
    f = stage.model.features
    if f is None or not f.lm:
        return
    n = decoder_layers(stage.model.base, resolved.file)
    bad = [i for i in f.layers if n is not None and not -(n + 1) <= i <= n]
    if bad:
        where = f" (stage {stage.name})" if len(resolved.stages) > 1 else ""
        raise RecipeError(resolved.file, "model.features.layers", f"{bad} out of range{where}: "
                          f"{stage.model.base} has {n} decoder layers, so its hidden states are 0 (the "
                          f"embeddings) to {n}, or -1 (the last) to -{n + 1}")


def preflight(resolved: Resolved, run_dir: Path, artifacts: Path) -> None:
    """What a run checks before it takes its lock: baseline names, frozen-feature layers, the environment's
    settings (``REPLICATOR_TOKEN_WORKERS``), the reports and artifacts folders writable (a probe file, so a
    read-only folder fails here and not after training)."""
    n_workers()  # a bad REPLICATOR_TOKEN_WORKERS fails here, not when tokenising (after failed.json)
    for s in resolved.stages:  # an unknown baseline name fails before anything is written
        if baselines.is_baseline(s.model.base):
            baselines.baseline_kind(s.model.base, f"stage {s.name}: model.base")
        check_feature_layers(resolved, s)
    writable_folder(run_dir, "reports folder (REPLICATOR_REPORTS)")
    writable_folder(artifacts, "artifacts folder (REPLICATOR_ARTIFACTS)")


def run_recipe(resolved: Resolved, data_dir: Path, force: bool = False,
               progress: bool = True) -> tuple[Path, dict, bool]:
    """Run every stage of ``resolved``; return (run folder, metrics, reused).

    One process at a time per run id (:func:`replicator.core.util.lock.run_lock`: a second one waits,
    then reuses); nothing is written before the first stage's data passed its checks; a failure
    after that leaves ``failed.json`` (and no ``metrics.json``)."""

    fingerprint_info = fingerprint(resolved, data_dir)
    keys = stage_keys(resolved, fingerprint_info)
    # recorded, not in the run id
    fingerprint_info["steps"] = {name: dataclasses.asdict(k) for name, k in keys.items()}
    fingerprint_info[FINGERPRINT_KEY] = MANIFEST  # this run writes one: a missing one is damage, not age
    run_dir, artifacts = run_folders(resolved.name, fingerprint_info["run_id"])
    preflight(resolved, run_dir, artifacts)
    with run_lock(run_dir, fingerprint_info["run_id"]) if is_main() else contextlib.nullcontext():
        done = not force and finished(resolved, run_dir, artifacts)
        barrier()  # the main process holds the lock; every process has looked
        if done:
            log.info("%s is finished: reused", run_dir)
            return run_dir, json.loads((run_dir / METRICS).read_text()), True
        state = RunState(resolved, fingerprint_info, run_dir, artifacts, data_dir, force, progress, keys=keys,
                         track=tracking.choose(resolved.config.get(tracking.SETTING)))
        try:
            stages = {s.name: _stage(state, s) for s in resolved.stages}
            return run_dir, _finish(state, stages), False
        except BaseException as e:
            state.mark_failed(e)
            raise
