"""Cross-fitted fine-tuning (``train.crossfit: K``): every row scored by a model that never trained on it.

A fine-tuned stage scores its validation rows only: 222 of the 1,478 arena rows, so a paired comparison
of two variants moves by +-0.04 in log loss and no technique resolves. Here, as in the frozen-feature
stage's cross-fitting, the rows of the validation rows' sources (training and validation alike) are cut
into K grouped folds (by prompt, seeded with the run's seed); for each fold the model starts again from
the same initial weights, trains on the other folds (plus the training rows of other sources, minus
those sharing a prompt group with a scored row), and predicts the fold with every test-time view. The
baselines are fitted on the same folds. Each fold trains in its own folder (``fold-<i>/``) with its own
checkpoint, so a killed run resumes in the fold it was in and keeps the folds it finished. The runner keeps
the folds under the stage's training key (``<recipe artifacts>/steps/<stage>-train-<key>/crossfit-<predict
section key>/``): a variant that changes only the test-time views or the postprocessing loads each fold's
weights and predicts again, training nothing.

With ``model.cache_frozen`` the first ``model.freeze_layers`` layers are computed once per token
sequence for every fold, view and variant that shares them (:mod:`replicator.core.model.cached_layers`);
with ``init: lp`` each fold's head starts from a linear probe fitted on that fold's training rows
(:mod:`replicator.core.stages.linear_probe`; a ``response_pool`` head's probe with the offset added).

The stage's saved weights (``final.safetensors``, what ``replicate predict`` loads) are the mean of the K
folds' trainable weights, as 1st place averaged its fold adapters [R1]; its calibration plugins fit on
the out-of-fold predictions of every scored row.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from pathlib import Path

import numpy as np

from replicator.core.errors import ReplicatorError
from replicator.core.model import loading, precision
from replicator.core.model.cached_layers import StateCache, cached_bottom
from replicator.core.model.tensors import trainable_state
from replicator.core.predict.evaluate import label_prior, labels_of, scores, write_valid_predictions
from replicator.core.predict.postprocess import crossfit_postprocess
from replicator.core.predict.views import predict_probs, views_of
from replicator.core.stages import baseline as B
from replicator.core.stages.frozen_features import scored_pool
from replicator.core.stages.linear_probe import init_head_by_probe, wants_probe
from replicator.core.stages.offsets import stage_offsets
from replicator.core.stages.result import StageResult
from replicator.core.tokens.batches import Encoder
from replicator.core.train import trainer
from replicator.core.util.atomic import atomic_save_safetensors, atomic_write_text
from replicator.core.util.distributed import world_size
from replicator.core.util.layout import OFFSET_PARAMS, TRAIN_RESULT, VALID_PREDICTIONS, WEIGHTS

log = logging.getLogger(__name__)


def fold_splits(scored: list[dict], k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(training indices, held-out indices) of each of ``k`` grouped folds of ``scored`` (by prompt group,
    shuffled with ``seed``)."""
    from sklearn.model_selection import GroupKFold

    groups = np.array([str(r["group"]) for r in scored])
    n_groups = len(set(groups.tolist()))
    if n_groups < k:
        raise ReplicatorError(f"train.crossfit: {k} folds need {k} prompt groups; the scored rows have "
                              f"{n_groups}")
    return list(GroupKFold(n_splits=k, shuffle=True, random_state=seed).split(groups, groups=groups))


def _check_untrained(stage, model) -> None:
    """``train.epochs: 0`` predicts with what the head starts from: only a probed head has learnt."""
    if stage.train.epochs == 0 and not wants_probe(model):
        raise ReplicatorError(f"stage {stage.name}: train.epochs 0 trains nothing, so each fold predicts "
                              "with the head it starts from: only a head fitted by a linear probe (head "
                              "plugin init: lp) has learnt anything; set init: lp or epochs > 0")


def _pool_and_folds(stage, train_rows: list[dict], valid_rows: list[dict], seed: int):
    """The rows a cross-fitted stage scores, the extra rows that train in every fold, and the folds; logged,
    since the stage's train / validation split is not what a cross-fitted stage trains and scores on."""
    scored, extra = scored_pool(train_rows, valid_rows)
    k = stage.train.crossfit
    log.info("crossfit: stage %s scores all %d rows out of fold in %d folds grouped by prompt%s", stage.name,
             len(scored), k, f" ({len(extra)} extra rows train in every fold)" if extra else "")
    return scored, extra, fold_splits(scored, k, seed)


def _restore(model, init: dict) -> None:
    """The trainable tensors back to their values (and dtype) when the model was loaded."""
    for n, p in model.named_parameters():
        if n in init:
            p.data = init[n].to(p.device).clone()


def _sequences(encoder, rows: list[dict], max_length: int, views=None) -> list:
    """The token ids of ``rows`` (with each of ``views`` applied, as prediction encodes them)."""
    if views is None:
        return [encoder(r, max_length) for r in rows]
    return [encoder(dict(v.apply(r), view=v.name), max_length) for v in views for r in rows]


def run_crossfit_stage(stage, plugins, train_rows: list[dict], valid_rows: list[dict], stage_artifacts: Path,
                       seed: int, progress: bool, folds_dir: Path) -> StageResult:
    """Train and predict each fold (reusing a fold whose weights are saved), average the folds' weights
    into :data:`WEIGHTS`, postprocess (cross-fitted), score: a :class:`StageResult` over every scored row.
    The folds are kept in ``folds_dir``, a folder of the stage's training key
    (:func:`~replicator.core.stages.steps.folds_dir`), so that every variant that changes only the
    prediction (TTA, temperature) reuses the folds' weights and predicts again."""
    if world_size() > 1:
        raise ReplicatorError(f"stage {stage.name}: a cross-fitted stage runs in one process (its folds "
                              f"train one after another), not {world_size()}: start it without a launcher")
    t0, k = time.time(), stage.train.crossfit
    scored, extra, splits = _pool_and_folds(stage, train_rows, valid_rows, seed)
    import torch

    torch.manual_seed(seed)  # the adapters' random init: the same in every run of this seed
    model, tokenizer, info = loading.load_model(stage.model, plugins, train=True)
    _check_untrained(stage, model)
    precision.keep_masters(model, stage.train.optimizer)  # fp32 masters from the start (the probe is fp32)
    init = trainable_state(model)
    encoder, views = Encoder(plugins, tokenizer), views_of(plugins)
    cache = (StateCache.for_model(info["path"], model, stage.model.freeze_layers)
             if stage.model.cache_frozen else None)
    if cache is not None:  # the prediction views of every scored row: the same for every fold
        encoder.prepare(scored, stage.predict.max_length, views=views, progress=progress)
        cache.ensure(model, _sequences(encoder, scored, stage.predict.max_length, views),
                     stage.predict.batch_tokens, tokenizer.pad_token_id, progress,
                     desc="frozen layers (views)")
    t_states = time.time() - t0
    oof: dict[str, np.ndarray] = {}
    refs = {view: np.zeros((len(scored), 3)) for _, view in B.EVERY_RUN}
    offsets = stage_offsets(stage, scored, extra, seed, progress)
    folds, fold_weights, probe_memo = [], [], {}  # the probe's features: the same in every fold
    for n, (tr, va) in enumerate(splits):
        rows, held = [scored[i] for i in tr] + extra, [scored[i] for i in va]
        fold_dir = folds_dir / f"fold-{n}"
        offset = offsets.fold(rows, held, tr, va) if offsets else None
        result = _train_fold(stage, plugins, model, tokenizer, info, init, encoder, cache, rows, fold_dir,
                             seed, progress, f"{n + 1}/{k}", offset, probe_memo)
        fold_weights.append(fold_dir / WEIGHTS)
        precision.to_weights_dtype(model, info["dtype"])  # predict as from saved weights
        with cached_bottom(model, cache) if cache is not None else contextlib.nullcontext():
            got = predict_probs(model, tokenizer, plugins, held, stage.predict.max_length,
                                stage.predict.batch_tokens, progress, offset=offset)
        for view, p in got.items():
            oof.setdefault(view, np.zeros((len(scored), 3)))[va] = p
        for view, q in B.every_run(rows, held).items():
            refs[view][va] = q
        folds.append({"fold": n, "n_train_rows": len(rows), "n_scored_rows": len(held), **result})
        log.info("crossfit: fold %d/%d %s on %d rows, predicted %d (tta log loss %.4f)", n + 1, k,
                 _what_fold_did(result), len(rows), len(held), _log_loss(got["tta"], labels_of(held)))
    _save_mean(fold_weights, stage_artifacts / WEIGHTS, stage.model.base)
    if offsets:  # what `replicate predict` adds to the averaged model's logits
        B.save_params(offsets.saved(scored + extra), stage_artifacts / OFFSET_PARAMS)
    labels = labels_of(scored)
    preds = {**oof, "final": crossfit_postprocess(plugins, oof["tta"], scored, labels), **refs}
    write_valid_predictions(stage_artifacts / VALID_PREDICTIONS, scored, preds, labels)
    result = _summary(stage, info, folds, scored, extra, t_states, cache) | scores(preds, labels)
    return StageResult(result, preds, labels, scored)


def _summary(stage, info: dict, folds: list[dict], scored: list[dict], extra: list[dict], t_states: float,
             cache) -> dict:
    """What the stage reports besides its scores: rows, folds, steps, tokens, seconds, the model."""
    return {"n_train_rows": len(scored) + len(extra), "crossfit_folds": stage.train.crossfit, "folds": folds,
            "n_train_rows_augmented": sum(f.get("n_train_rows_augmented", 0) for f in folds),
            "optimizer_steps": sum(f.get("optimizer_steps", 0) for f in folds),
            "train_tokens": sum(f.get("train_tokens", 0) for f in folds),
            "train_label_prior": label_prior(scored + extra),
            "states_seconds": round(t_states, 1),
            "train_seconds": round(sum(f.get("train_seconds", 0) for f in folds if not f["reused"]), 1),
            "train_reused": all(f["reused"] for f in folds),
            "states_computed": cache.computed if cache is not None else None,
            "model": {k: v for k, v in info.items() if k != "aux_loss"} | {
                "freeze_layers": stage.model.freeze_layers, "cache_frozen": stage.model.cache_frozen}}


def _train_fold(stage, plugins, model, tokenizer, info, init: dict, encoder, cache, rows: list[dict],
                fold_dir: Path, seed: int, progress: bool, which: str, offset=None, probe_memo=None) -> dict:
    """One fold's model in ``model``: its saved weights when the fold finished before, else trained from
    ``init`` (the probe first, when the head asks for one) and saved; what the fold reports."""
    from safetensors.torch import load_file

    done = fold_dir / TRAIN_RESULT
    if done.exists() and (fold_dir / WEIGHTS).exists():
        try:
            result = json.loads(done.read_text())
            loading.load_trainable(model, load_file(str(fold_dir / WEIGHTS)), where=str(fold_dir / WEIGHTS))
        except (OSError, ValueError, ReplicatorError) as e:
            log.warning("crossfit: fold %s in %s not reused (%s): trained again", which, fold_dir, e)
        else:
            log.info("crossfit: fold %s reused from %s", which, fold_dir)
            return result | {"reused": True}
    t0 = time.time()
    _restore(model, init)
    precision.keep_masters(model, stage.train.optimizer)
    fold_dir.mkdir(parents=True, exist_ok=True)
    train_config = stage.train
    probe = None
    if cache is not None:  # every sequence the fold trains on (each epoch's augmented rows)
        epochs, _, _ = trainer.epoch_schedule(rows, stage, plugins, encoder, seed)
        cache.ensure(model, [s for r, _ in epochs for s in _sequences(encoder, r, train_config.max_length)],
                     stage.predict.batch_tokens, tokenizer.pad_token_id, progress,
                     desc="frozen layers (train)")
    with cached_bottom(model, cache) if cache is not None else contextlib.nullcontext():
        if wants_probe(model) and not (fold_dir / trainer.CHECKPOINT).exists():
            augmented = plugins.chain("augment", "rows", list(rows), epoch=0, seed=seed)
            probe = init_head_by_probe(model, tokenizer, encoder, augmented, train_config.max_length,
                                       stage.predict.batch_tokens, seed, progress, offset, probe_memo)
        if train_config.epochs:
            result = trainer.train_stage(stage, plugins, rows, model, tokenizer, info, fold_dir, seed,
                                         None, progress, offset=offset)
        else:  # LP alone: the fold's model is its probe (the adapters as initialised: LoRA's B is zero)
            log.info("crossfit: fold %s: train.epochs 0, the probe alone, no optimizer step", which)
            result = {"optimizer_steps": 0, "n_train_rows": len(rows), "train_tokens": 0}
    result = {k: v for k, v in result.items() if k != "train_loss_history"} | {
        "train_loss_history": result.get("train_loss_history"), "probe": probe,
        "train_seconds": round(time.time() - t0, 1)}
    atomic_save_safetensors(trainable_state(model), fold_dir / WEIGHTS, metadata={"base": stage.model.base})
    atomic_write_text(done, json.dumps(result, indent=2))
    (fold_dir / trainer.CHECKPOINT).unlink(missing_ok=True)  # the weights are saved: the optimizer state goes
    return result | {"reused": False}


def _save_mean(files: list[Path], out: Path, base: str) -> None:
    """The element-wise mean of the folds' trainable tensors (fp32), saved as the stage's weights."""
    from safetensors.torch import load_file

    total: dict = {}
    for f in files:
        for name, t in load_file(str(f)).items():
            total[name] = total.get(name, 0) + t.float()
    atomic_save_safetensors({n: (t / len(files)).contiguous() for n, t in total.items()}, out,
                            metadata={"base": base, "crossfit_mean_of": str(len(files))})


def _what_fold_did(result: dict) -> str:
    """``trained`` or ``probed`` (train.epochs 0), after ``reused,`` for a fold whose weights were saved."""
    done = "trained" if result.get("optimizer_steps", 1) else "probed"
    return f"reused, {done}" if result.get("reused") else done


def _log_loss(p: np.ndarray, y: np.ndarray) -> float:
    return float(-np.mean(np.sum(y * np.log(np.clip(p, 1e-15, 1)), axis=1)))
