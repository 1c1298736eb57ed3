"""The embedded real model (Gemma-3-270M) on the real competition rows, through the CLI.

A cut-down smoke (a few optimizer steps on a few real rows) so CI proves the whole real path:
GGUF conversion, tokenizer, cached frozen layers, linear-probe head, cross-fitted LoRA training, TTA
prediction, run folder, reuse, and a submission from ``replicate predict`` on unseen rows. The full smoke
is ``replicate run recipes/smoke.yaml``.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from ..conftest import RECIPES

pytestmark = [pytest.mark.smoke, pytest.mark.real_data]

CUT = ["train.max_rows=48", "predict.max_rows=24", "train.max_steps=4",
       "train.checkpoint_every=2"]


def _cli(args, env, cwd):
    return subprocess.run([sys.executable, "-c", "from replicator.core.cli import app; app()", *args],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=1800)


@pytest.fixture()
def real_env(tmp_path):
    ddir = os.environ.get("REPLICATOR_DATA_DIR")
    if not ddir or not (Path(ddir) / "lmsys-chatbot-arena" / "train.csv").exists():
        pytest.skip("REPLICATOR_DATA_DIR with lmsys-chatbot-arena/train.csv is not set")
    # the CLI runs in tmp_path: a relative data dir (the README's ../shared/data) must keep meaning
    # the folder it meant where pytest was started
    env = dict(os.environ, REPLICATOR_DATA_DIR=str(Path(ddir).resolve()),
               REPLICATOR_REPORTS=str(tmp_path / "reports"), REPLICATOR_ARTIFACTS=str(tmp_path / "artifacts"),
               HF_HUB_OFFLINE="1")
    env.pop("REPLICATOR_CRASH_AFTER_STEP", None)
    return env


def _predict_checked(run_dir: Path, env: dict, tmp_path: Path, n: int) -> None:
    """`replicate predict` on the last ``n`` real rows in the Kaggle test format (no labels, no model
    names): one row per id in order, probabilities in [0, 1] summing to 1 at 6 decimals."""
    src = Path(env["REPLICATOR_DATA_DIR"]) / "lmsys-chatbot-arena" / "train.csv"
    df = pd.read_csv(src, dtype=str, keep_default_na=False).tail(n)
    test = tmp_path / "test.csv"
    df[["id", "prompt", "response_a", "response_b"]].to_csv(test, index=False, quoting=csv.QUOTE_MINIMAL)
    out = tmp_path / "submission.csv"
    p = _cli(["predict", str(run_dir), str(test), "-o", str(out), "-q"], env, tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    sub = pd.read_csv(out)
    assert sub["id"].astype(str).tolist() == df["id"].tolist()
    probs = sub[["winner_model_a", "winner_model_b", "winner_tie"]].to_numpy()
    assert ((probs >= 0) & (probs <= 1)).all() and (probs.sum(1).round(6) == 1).all()


def test_smoke_recipe_cut_down_on_the_real_model(real_env, tmp_path):
    r = _cli(["run", str(RECIPES / "smoke.yaml"), "-q", *CUT], real_env, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "finished:" in r.stdout
    run_dir = Path(r.stdout.split("finished:")[1].split()[0])
    if not run_dir.is_absolute():
        run_dir = tmp_path / run_dir
    metrics = json.loads((run_dir / "metrics.json").read_text())
    model = metrics["stages"]["main"]["model"]
    assert model["path"].endswith("gemma-3-270m") and 0 < model["trainable_params"] < model["all_params"]
    # cross-fitted (issue 22): the 48 training and 24 validation rows are all scored out of fold, the first
    # 16 layers' states computed once for the 72 rows' two views and read by every fold
    assert 0 < metrics["tta_log_loss"] < 5 and metrics["n_valid_rows"] == 72
    stage = metrics["stages"]["main"]
    # (states_computed: 0 where an earlier run filled REPLICATOR_CACHE/states with these rows' sequences)
    assert stage["crossfit_folds"] == 5 and stage["model"]["cache_frozen"] and stage["states_computed"] >= 0
    assert all(f["optimizer_steps"] == 4 for f in stage["folds"]) and stage["model"]["freeze_layers"] == 16

    t0 = time.time()
    again = _cli(["run", str(RECIPES / "smoke.yaml"), "-q", *CUT], real_env, tmp_path)
    assert again.returncode == 0 and "reused:" in again.stdout
    assert time.time() - t0 < 60

    _predict_checked(run_dir, real_env, tmp_path, 10)  # unseen rows in the Kaggle test format


def test_cpu_recipe_cut_down_on_the_real_model(real_env, tmp_path):
    """recipes/cpu.yaml on 120 real training rows and 40 validation rows: the frozen Gemma-3-270M
    encodes each response once (cached), the head is cross-fitted over all 160 rows, and `replicate
    predict` scores unseen rows."""
    real_env = dict(real_env, REPLICATOR_CACHE=str(tmp_path / "cache"))
    models = Path(os.environ.get("REPLICATOR_CACHE", Path.home() / ".cache" / "arena-replicator")) / "models"
    if models.exists():  # the converted model is reused; only the feature cache is fresh
        (tmp_path / "cache").mkdir()
        (tmp_path / "cache" / "models").symlink_to(models)
    cut = ["train.max_rows=120", "predict.max_rows=40", "model.features.max_length=96",
           "model.features.cv_folds=3", "model.features.c_grid=[0.002,0.01]"]
    r = _cli(["run", str(RECIPES / "cpu.yaml"), "-q", *cut], real_env, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    run_dir = Path(r.stdout.split("finished:")[1].split()[0])
    run_dir = run_dir if run_dir.is_absolute() else tmp_path / run_dir
    m = json.loads((run_dir / "metrics.json").read_text())
    # all rows scored
    assert m["n_valid_rows"] == 160 and m["crossfit_folds"] == 5 and m["head_C"] in (0.002, 0.01)
    assert 0 < m["final_log_loss"] < 1.5 and "baseline_length_log_loss" in m
    assert m["stages"]["main"]["model"]["kind"] == "frozen_features"
    shards = {p: p.stat().st_mtime_ns for p in (tmp_path / "cache" / "features").glob("*/*.npz")}
    assert shards  # the vectors are cached: an ablation of the head encodes nothing again
    again = _cli(["run", str(RECIPES / "cpu.yaml"), "-q", *cut, "model.features.text=false"], real_env,
                 tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "cache" / "features").glob("*/*.npz")} == shards
    _predict_checked(run_dir, real_env, tmp_path, 6)
