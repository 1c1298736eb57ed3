"""A frozen-feature run end to end (recipes/cpu.yaml at tiny size): the cache, reuse, cross-fitting and
``replicate predict``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from replicator.core.config.recipe import resolve
from replicator.core.errors import RecipeError
from replicator.core.run.pipeline import run_recipe as run
from replicator.core.run.submission import predict

from ..conftest import CPU, synthetic_rows, write_csv

#: the cpu recipe's tiny toggle on every synthetic row, with a short budget and a small C grid
TINY_FEATURES = ["train.max_rows=0", "predict.max_rows=0", "model.features.max_length=64",
                 "model.features.prompt_tokens=16", "model.features.c_grid=[0.01,1.0]",
                 "model.features.cv_folds=3"]


def test_features_run_end_to_end_cache_reuse_and_predict(isolated, monkeypatch):
    monkeypatch.setenv("REPLICATOR_CACHE", str(isolated / "cache"))
    from replicator.core.data.files import data_dir

    resolved = resolve(CPU, ["tiny"], TINY_FEATURES, data_dir=data_dir())
    run_dir, m, reused = run(resolved, data_dir(), progress=False)
    assert (not reused and m["stages"]["main"]["model"]["kind"] == "frozen_features"
            and m["head_C"] in (0.01, 1.0))
    assert set(m["head_cv_log_loss"]) == {"0.01", "1.0"}
    assert m["tta_log_loss"] == m["log_loss"]  # the head is swap-symmetric by construction
    assert "baseline_length_log_loss" in m and m["n_valid_rows"] > 0
    shards = list((isolated / "cache" / "features").glob("*/*.npz"))
    assert shards
    # the cache is used: a forced rerun encodes nothing and ends with the same numbers
    before = {p: p.stat().st_mtime_ns for p in shards}
    _, again, _ = run(resolved, data_dir(), force=True, progress=False)
    assert again["final_log_loss"] == m["final_log_loss"]
    assert {p: p.stat().st_mtime_ns for p in (isolated / "cache" / "features").glob("*/*.npz")} == before
    # predict on a Kaggle-format test file
    test_csv = write_csv(isolated / "test.csv", synthetic_rows(5, seed=3, with_labels=False))
    predict(str(run_dir), test_csv, isolated / "sub.csv", progress=False)
    sub = pd.read_csv(isolated / "sub.csv")
    assert list(sub.columns) == ["id", "winner_model_a", "winner_model_b", "winner_tie"] and len(sub) == 5
    assert np.allclose(sub.iloc[:, 1:].sum(axis=1), 1, atol=1e-6)


def test_predict_reads_the_inputs_the_head_was_fitted_on(isolated, monkeypatch):
    """A head fitted with the raw count differences predicts with them, and one saved before the
    `raw_diffs` key existed (no key in its JSON: every such head had them) too."""
    import json

    from replicator.core.data.competition import read_competition_csv
    from replicator.core.data.files import data_dir
    from replicator.core.stages import frozen_features as F

    monkeypatch.setenv("REPLICATOR_CACHE", str(isolated / "cache"))
    resolved = resolve(CPU, ["tiny"], [*TINY_FEATURES, "model.features.raw_diffs=true"], data_dir=data_dir())
    run(resolved, data_dir(), progress=False)
    [head] = (isolated / "artifacts").rglob(F.HEAD_FILE)
    params = json.loads(head.read_text())
    assert params["raw_diffs"] is True and "clip" in params
    test_csv = write_csv(isolated / "test.csv", synthetic_rows(6, seed=4, with_labels=False))
    rows = read_competition_csv(test_csv, require_labels=False)
    fitted_with = F.predict_rows(resolved.stages[-1], head.parent, rows, progress=False)
    # a run folder written before the key existed resolves to today's default (no raw differences)
    plain = resolve(CPU, ["tiny"], TINY_FEATURES, data_dir=data_dir()).stages[-1]
    assert plain.model.features.raw_diffs is False
    assert np.allclose(F.predict_rows(plain, head.parent, rows, progress=False), fitted_with)
    old = isolated / "old_head"
    old.mkdir()
    (old / F.HEAD_FILE).write_text(json.dumps({k: v for k, v in params.items() if k != "raw_diffs"}))
    assert np.allclose(F.predict_rows(plain, old, rows, progress=False), fitted_with)
    assert np.allclose(fitted_with.sum(axis=1), 1)


def test_crossfit_scores_every_row_out_of_fold_with_baselines_alike(isolated, monkeypatch):
    from replicator.core.data.files import data_dir
    from replicator.core.scoring.row_predictions import read_row_predictions

    monkeypatch.setenv("REPLICATOR_CACHE", str(isolated / "cache"))
    plain = resolve(CPU, ["tiny"], [*TINY_FEATURES, "model.features.crossfit=0"], data_dir=data_dir())
    _, m0, _ = run(plain, data_dir(), progress=False)
    resolved = resolve(CPU, ["tiny"], [*TINY_FEATURES, "model.features.crossfit=3"], data_dir=data_dir())
    run_dir, m, _ = run(resolved, data_dir(), progress=False)
    assert m["crossfit_folds"] == 3 and m["n_valid_rows"] == m0["n_valid_rows"] + m0["n_train_rows"]
    rp = read_row_predictions(run_dir / "valid_predictions.csv.gz")
    assert {"baseline_length", "baseline_prior"} <= set(rp.views) and len(rp) == m["n_valid_rows"]
    assert np.allclose(rp.views["final"].sum(1), 1, atol=1e-5)
    # the same seed gives the same folds: a rerun is identical
    _, again, _ = run(resolved, data_dir(), force=True, progress=False)
    assert again["final_log_loss"] == m["final_log_loss"]
    with pytest.raises(RecipeError, match="crossfit"):
        resolve(CPU, [], ["model.features.crossfit=1"])
