"""Cross-fitted fine-tuning with cached frozen layers (recipes/smoke.yaml at tiny size, issue 22): every row
scored out of fold with the baselines alike; the saved weights are the folds' mean; a rerun reuses the
folds; a variant that changes only the loss reuses the cached frozen part (no state computed); a killed
fold resumes to the numbers of an uninterrupted run; what cannot be combined is a resolve-time error."""

from __future__ import annotations

import json
import logging
import re

import numpy as np
import pandas as pd
import pytest
from safetensors.torch import load_file

from replicator.core.config.recipe import resolve
from replicator.core.errors import RecipeError
from replicator.core.run.pipeline import run_recipe as run
from replicator.core.run.submission import predict

from ..conftest import SMOKE, synthetic_rows, write_csv

#: the smoke recipe's tiny toggle in fp32, all 160 synthetic rows, short texts
FP32 = ["model.dtype=float32", "train.max_rows=0", "predict.max_rows=0", "train.max_length=64",
        "predict.max_length=64", "train.lr=3e-3", "model.lora.dropout=0.0"]


def _folds(isolated) -> list:
    """The fold folders of every crossfit training under the smoke recipe's steps (one per training key)."""
    return sorted((isolated / "artifacts" / "smoke" / "steps").glob("main-train-*/crossfit-*/fold-*"))


def _run(isolated, *overrides, force=False):
    from replicator.core.data.files import data_dir

    resolved = resolve(SMOKE, ["tiny"], [*FP32, *overrides], data_dir=data_dir())
    return run(resolved, data_dir(), force=force, progress=False)


@pytest.fixture()
def states(isolated, monkeypatch):
    monkeypatch.setenv("REPLICATOR_CACHE", str(isolated / "cache"))
    return isolated / "cache" / "states"


def test_every_row_out_of_fold_mean_weights_reuse_and_predict(isolated, states, caplog):
    from replicator.core.scoring.row_predictions import read_row_predictions

    caplog.set_level(logging.INFO, logger="replicator")
    run_dir, m, reused = _run(isolated)
    # the log says what the stage scores, not only the stage's train / validation split
    assert "scores all 160 rows out of fold in 3 folds grouped by prompt" in caplog.text
    stage = m["stages"]["main"]
    assert not reused and m["crossfit_folds"] == 3 and len(stage["folds"]) == 3
    # every row of the competition source is scored once, out of fold (160 synthetic rows)
    assert m["n_valid_rows"] == 160 == sum(f["n_scored_rows"] for f in stage["folds"])
    assert all(f["probe"] is None for f in stage["folds"])  # a zero head on the style offset
    assert stage["states_computed"] > 0 and list(states.glob("*/*.safetensors"))
    rp = read_row_predictions(run_dir / "valid_predictions.csv.gz")
    assert len(rp) == 160 and {"baseline_length", "baseline_style", "swap_ab"} <= set(rp.views)
    # the saved weights are the mean of the folds'
    art = isolated / "artifacts" / "smoke" / run_dir.name / "main"
    assert [p.name for p in _folds(isolated)] == ["fold-0", "fold-1", "fold-2"]  # under the training key
    folds = [load_file(str(p / "final.safetensors")) for p in _folds(isolated)]
    mean = load_file(str(art / "final.safetensors"))
    name = next(k for k in mean if "lora_B" in k)
    folds_mean = np.mean([f[name].float().numpy() for f in folds], axis=0)
    assert np.allclose(mean[name].numpy(), folds_mean, atol=1e-6)
    # the same command again: the run is reused; forced: every fold recomputed from the cached states, the
    # same numbers (fp32, one process)
    assert _run(isolated)[2]
    _, again, _ = _run(isolated, force=True)
    assert again["stages"]["main"]["states_computed"] == 0
    assert again["final_log_loss"] == pytest.approx(m["final_log_loss"], abs=1e-6)
    # the LM alone (offset_off): the cached states serve it; each fold's head starts from its own probe
    _, alone, _ = _run(isolated, "model.offset=null", "plugins.head={use: default_head, init: lp}")
    assert alone["stages"]["main"]["states_computed"] == 0
    assert all(f["probe"]["C"] > 0 for f in alone["stages"]["main"]["folds"])
    # predict loads the averaged weights into the whole model
    test_csv = write_csv(isolated / "test.csv", synthetic_rows(5, seed=3, with_labels=False))
    predict(str(run_dir), test_csv, isolated / "sub.csv", progress=False)
    sub = pd.read_csv(isolated / "sub.csv")
    assert len(sub) == 5 and np.allclose(sub.iloc[:, 1:].sum(axis=1), 1, atol=1e-6)


def test_a_variant_that_changes_only_the_loss_computes_no_state(isolated, states):
    # without the offset: on synthetic rows the style baseline alone is all but perfect
    _, base, _ = _run(isolated, "model.offset=null")
    assert base["stages"]["main"]["states_computed"] > 0
    shards = {p: p.stat().st_mtime_ns for p in states.glob("*/*.safetensors")}
    _, focal, _ = _run(isolated, "model.offset=null", "plugins.loss={use: focal_loss, gamma: 2.0}")
    assert focal["stages"]["main"]["states_computed"] == 0  # no encoding: every state came from the cache
    assert {p: p.stat().st_mtime_ns for p in states.glob("*/*.safetensors")} == shards
    assert focal["final_log_loss"] != base["final_log_loss"]  # a different model all the same


def test_a_variant_that_changes_only_the_prediction_reuses_the_folds_weights(isolated, states):
    from replicator.core.scoring.row_predictions import read_row_predictions

    # without the offset: on synthetic rows the style baseline alone is all but perfect
    base_dir, base, _ = _run(isolated, "model.offset=null")
    folds = {p: (p / "final.safetensors").stat().st_mtime_ns for p in _folds(isolated)}
    assert len(folds) == 3
    for change in ("plugins.swap.test_time=false", "plugins.temp=null"):
        run_dir, variant, _ = _run(isolated, "model.offset=null", change)
        stage = variant["stages"]["main"]
        assert run_dir != base_dir and stage["train_reused"], change
        assert all(f["reused"] for f in stage["folds"]) and stage["train_seconds"] == 0, change
        assert {p: (p / "final.safetensors").stat().st_mtime_ns for p in _folds(isolated)} == folds, change
        # the same weights predict the same rows: the identity view is the base's, the final one differs
        ours = read_row_predictions(run_dir / "valid_predictions.csv.gz").views
        theirs = read_row_predictions(base_dir / "valid_predictions.csv.gz").views
        assert np.allclose(ours["identity"], theirs["identity"], atol=1e-6), change
        assert variant["final_log_loss"] != base["final_log_loss"], change
    # a change of the training (the loss) trains new folds under another training key
    _run(isolated, "model.offset=null", "plugins.loss={use: focal_loss, gamma: 2.0}")
    assert len(_folds(isolated)) == 6


def test_a_killed_fold_resumes_to_the_numbers_of_an_uninterrupted_run(isolated, states, monkeypatch):
    _, whole, _ = _run(isolated, "train.checkpoint_every=2")
    monkeypatch.setenv("REPLICATOR_CRASH_AFTER_STEP", "3")
    with pytest.raises(RuntimeError, match="simulated crash"):
        _run(isolated, "train.checkpoint_every=2", force=True)
    monkeypatch.delenv("REPLICATOR_CRASH_AFTER_STEP")
    run_dir, resumed, _ = _run(isolated, "train.checkpoint_every=2")
    assert resumed["final_log_loss"] == pytest.approx(whole["final_log_loss"], abs=1e-6)
    fold0 = json.loads((_folds(isolated)[0] / "train.json").read_text())
    assert fold0["resumed_at_step"] == 2


@pytest.mark.parametrize(("overrides", "key"), [
    (["train.crossfit=null"], "model.offset"),
    (["train.crossfit=null", "model.offset=null"], "model.cache_frozen"),
    (["train.eval_every=5"], "train.eval_every"),
    (["train.packed=true"], "train.packed"),
    (["model.freeze_layers=0"], "model.cache_frozen"),
    (["predict.load_in_8bit=true"], "predict.load_in_8bit"),
])
def test_what_a_crossfit_stage_cannot_do_is_a_resolve_time_error(overrides, key):
    with pytest.raises(RecipeError, match=key.replace(".", r"\.")):
        resolve(SMOKE, ["tiny"], overrides, check_plugins=False)


def test_an_offset_model_with_a_zero_head_starts_from_the_baseline_and_predict_adds_it(isolated, states,
                                                                                       caplog):
    """``model.offset: style_lr`` (the smoke recipe's): the baseline's log-probabilities are added to the
    logits in training and prediction; a zero head that does not move (lr ~ 0) predicts exactly the
    cross-fitted style baseline."""
    from replicator.core.scoring.row_predictions import read_row_predictions
    from replicator.core.stages import baseline as B

    run_dir, m, _ = _run(isolated, "train.lr=1e-12", "train.warmup_steps=0")
    rp = read_row_predictions(run_dir / "valid_predictions.csv.gz")
    assert np.allclose(rp.views["identity"], rp.views["baseline_style"], atol=1e-5)
    assert m["log_loss"] == pytest.approx(m["baseline_style_log_loss"], abs=1e-5)
    # predict: the averaged model plus the offset fitted on every scored row
    from replicator.core.data.competition import read_competition_csv

    test_csv = write_csv(isolated / "test.csv", synthetic_rows(6, seed=3, with_labels=False))
    predict(str(run_dir), test_csv, isolated / "sub.csv", progress=False)
    sub = pd.read_csv(isolated / "sub.csv").iloc[:, 1:].to_numpy()
    art = isolated / "artifacts" / "smoke" / run_dir.name / "main"
    test_rows = read_competition_csv(test_csv, require_labels=False)
    style = B.predict(B.load_params(art / "offset.json"), test_rows)
    assert sub.shape == (6, 3) and (sub.argmax(1) == style.argmax(1)).all()  # temperature scaled after
    # a last-token probe cannot start from an offset it was not fitted with
    with pytest.raises(Exception, match="head init lp with model.offset"):
        _run(isolated, "plugins.head={use: default_head, init: lp}")
    # the pooled head's probe (smoke's head_lp, LP-FT) is fitted with it, from the cached states: each fold's
    # probe fits its training rows better than the offset alone (the synthetic rows' texts say the label)
    _, lp, _ = _run(isolated, "train.lr=1e-12", "train.warmup_steps=0", "plugins.head={init: lp}")
    folds = lp["stages"]["main"]["folds"]
    assert lp["stages"]["main"]["states_computed"] == 0 and all(f["probe"]["rows"] > 0 for f in folds)
    assert lp["log_loss"] < m["log_loss"]
    # the probe alone (smoke's probe_only, train.epochs 0): no optimizer step, each fold predicts with it
    caplog.set_level(logging.INFO, logger="replicator")
    caplog.clear()  # only this run's records (the LP-FT run above may have logged its own)
    _, alone, _ = _run(isolated, "plugins.head={init: lp}", "train.epochs=0")
    assert "fold 1/3 probed on" in caplog.text and "fold 1/3: train.epochs 0, the probe alone" in caplog.text
    # every fold probes from the same weights: the later folds reuse the features of the rows probed before
    reused = [int(x) for x in re.findall(r"computed, (\d+) from earlier folds", caplog.text)]
    assert len(reused) == 3 and reused[0] == 0 and min(reused[1:]) > 0
    folds = alone["stages"]["main"]["folds"]
    assert all(f["optimizer_steps"] == 0 and f["probe"]["rows"] > 0 for f in folds)
    assert alone["stages"]["main"]["states_computed"] == 0 and alone["log_loss"] < m["log_loss"]
    # without a probe, epochs 0 would predict with an untrained head: refused before any work
    with pytest.raises(Exception, match="train.epochs 0 trains nothing"):
        _run(isolated, "train.epochs=0")


#: the smoke recipe's offset_features toggle at tiny size: the frozen-feature head of the tiny model's last
#: layer
FEATURE_OFFSET = ["model.offset=features",
                  "model.offset_features={layers: [-1], pca: 4, max_length: 64, c_grid: [0.01, 1.0], "
                  "cv_folds: 3, crossfit: 3}"]


def test_a_features_offset_is_what_a_zero_head_predicts_and_predict_adds_the_saved_head(isolated, states,
                                                                                         monkeypatch):
    """``model.offset: features`` (smoke's ``offset_features``): a zero head that does not move predicts each
    fold's stacked offset on its held rows; the features are encoded once and cached; ``predict`` adds the
    saved head's offset to the averaged model's logits."""
    from replicator.core.data.competition import read_competition_csv
    from replicator.core.scoring.row_predictions import read_row_predictions
    from replicator.core.stages import offsets as O

    seen = {}
    real = O.FeatureOffsets.fold

    def fold(self, rows, held, tr, va):
        offset = real(self, rows, held, tr, va)
        seen.update(zip([r["id"] for r in held], np.exp(offset(held)), strict=True))
        return offset

    monkeypatch.setattr(O.FeatureOffsets, "fold", fold)
    run_dir, m, _ = _run(isolated, "train.lr=1e-12", "train.warmup_steps=0", *FEATURE_OFFSET)
    rp = read_row_predictions(run_dir / "valid_predictions.csv.gz")
    assert len(seen) == 160 == len(rp.ids)
    expected = np.array([seen[i] for i in rp.ids])
    assert np.allclose(rp.views["identity"], expected / expected.sum(1, keepdims=True), atol=1e-5)
    assert not np.allclose(rp.views["identity"], rp.views["baseline_style"], atol=1e-3)
    assert list((isolated / "cache" / "features").glob("*/*.npz"))
    art = isolated / "artifacts" / "smoke" / run_dir.name / "main"
    saved = json.loads((art / "offset.json").read_text())
    assert saved["kind"] == O.FEATURES_KIND and saved["features"]["pca"] == 4
    # predict: the averaged (unmoved) model plus the saved head's offset
    test_csv = write_csv(isolated / "test.csv", synthetic_rows(6, seed=3, with_labels=False))
    predict(str(run_dir), test_csv, isolated / "sub.csv", progress=False)
    sub = pd.read_csv(isolated / "sub.csv").iloc[:, 1:].to_numpy()
    test_rows = read_competition_csv(test_csv, require_labels=False)
    head = np.exp(O.saved_offset(resolve(SMOKE, ["tiny"]).final.model, saved, test_rows, False)(test_rows))
    assert sub.shape == (6, 3) and (sub.argmax(1) == head.argmax(1)).all()  # temperature scaled after
