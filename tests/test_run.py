"""End-to-end runs on a tiny random model and synthetic rows: training, reuse, resume, predict; and the
core's utilities that exist once (atomic writes, log loss, logging) and its size rule."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from replicator.core.config.recipe import resolve
from replicator.core.data.files import data_dir
from replicator.core.errors import ReplicatorError
from replicator.core.run import pipeline
from replicator.core.run.pipeline import run_recipe as run
from replicator.core.run.submission import predict

from .conftest import RECIPES, TINY


def _run(overrides=(), toggles=(), force=False):
    r = resolve(RECIPES / "smoke.yaml", list(toggles), TINY + list(overrides), data_dir=data_dir())
    return run(r, data_dir(), force=force, progress=False)


def test_run_writes_folder_learns_and_is_reused(isolated):
    run_dir, m, reused = _run()
    assert not reused
    assert (run_dir.parent.name == "smoke" and run_dir.name.startswith("smoke-")
            and run_dir.name.endswith("-s7"))
    for f in ("resolved.yaml", "fingerprint.json", "metrics.json"):
        assert (run_dir / f).exists()
    fp = json.loads((run_dir / "fingerprint.json").read_text())
    assert (fp["run_id"] == run_dir.name and fp["data_files"]
            and fp["environment"]["device"] in ("cpu", "cuda"))
    for k in ("log_loss", "tta_log_loss", "final_log_loss", "accuracy", "tta_accuracy"):
        assert np.isfinite(m[k])
    # the synthetic rows carry a clear signal (a refusal loses): the tiny model must beat uniform
    assert m["tta_log_loss"] < m["uniform_log_loss"]
    assert m["train_loss_last"] < m["train_loss_first"]
    assert (isolated / "artifacts" / "smoke" / run_dir.name / "main" / "final.safetensors").exists()
    # what reports need: loss curves, time, tokens, process count, the training label prior
    stage = m["stages"]["main"]
    assert len(stage["train_loss_history"]) == stage["optimizer_steps"] and "train_loss_history" not in m
    assert stage["seconds"] > 0 and stage["train_tokens"] > 0 and m["n_processes"] == 1
    prior = m["train_label_prior"]
    assert len(prior) == 3 and sum(prior) == pytest.approx(1, abs=1e-5) and all(0 < x < 1 for x in prior)
    from replicator.core.scoring.row_predictions import read_row_predictions

    rows = read_row_predictions(run_dir / "valid_predictions.csv.gz")
    assert len(rows) == m["n_valid_rows"] and list(rows.views) == ["identity", "swap_ab", "tta", "final",
                                                                  "baseline_prior", "baseline_length"]
    assert read_row_predictions(run_dir / "valid_predictions.csv.gz").labels.sum() == pytest.approx(len(rows))
    again_dir, again, reused = _run()
    assert reused and again_dir == run_dir and again == m
    # a report without its artifacts (e.g. committed, then a fresh clone) is recomputed, not reused
    import shutil

    shutil.rmtree(isolated / "artifacts")
    rebuilt_dir, rebuilt, reused = _run()
    assert not reused and rebuilt_dir == run_dir and rebuilt["tta_log_loss"] == m["tta_log_loss"]
    forced_dir, forced, reused = _run(force=True)
    assert not reused and forced["tta_log_loss"] == pytest.approx(m["tta_log_loss"], abs=1e-9)


def test_resume_after_a_crash_gives_the_same_metrics(isolated, monkeypatch):
    _, straight, _ = _run(["seed=11"])
    reports, arts = isolated / "r2", isolated / "a2"
    monkeypatch.setenv("REPLICATOR_REPORTS", str(reports))
    monkeypatch.setenv("REPLICATOR_ARTIFACTS", str(arts))
    monkeypatch.setenv("REPLICATOR_CRASH_AFTER_STEP", "4")  # checkpoint_every=3: steps 4.. redone
    with pytest.raises(RuntimeError, match="simulated crash"):
        _run(["seed=11"])
    # the train step's folder (core/steps.py)
    ckpt = next(arts.glob("smoke/steps/main-train-*/checkpoint.pt"))
    assert torch.load(ckpt, weights_only=False)["step"] == 3
    monkeypatch.delenv("REPLICATOR_CRASH_AFTER_STEP")
    _, resumed, reused = _run(["seed=11"])
    assert not reused and resumed["resumed_at_step"] == 3
    for k in ("log_loss", "tta_log_loss", "final_log_loss", "accuracy", "train_loss_last"):
        assert resumed[k] == straight[k], k


def test_trainable_parameters_change(isolated):
    from safetensors.torch import load_file

    from replicator.core.config.catalogue import build_plugins
    from replicator.core.model.loading import load_model
    from replicator.core.model.tensors import trainable_state

    run_dir, _, _ = _run()
    r = resolve(run_dir / "resolved.yaml", check_plugins=False)
    torch.manual_seed(r.seed)
    model, _, _ = load_model(r.final.model, build_plugins(r.final.plugins, "x"), train=True)
    before = trainable_state(model)
    after = load_file(str(next(isolated.glob("artifacts/smoke/*/main/final.safetensors"))))
    assert set(before) == set(after)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert any("lora_B" in k for k in changed) and any("score" in k for k in changed)


def test_predict_writes_a_valid_submission(isolated, synthetic_data_dir):
    run_dir, _, _ = _run()
    out = isolated / "submission.csv"
    info = predict(str(run_dir), synthetic_data_dir / "lmsys-chatbot-arena" / "test.csv", out, progress=False)
    sub = pd.read_csv(out)
    test = pd.read_csv(synthetic_data_dir / "lmsys-chatbot-arena" / "test.csv")
    assert list(sub.columns) == ["id", "winner_model_a", "winner_model_b", "winner_tie"]
    assert info["rows"] == len(test) and sub["id"].tolist() == test["id"].tolist()
    probs = sub[["winner_model_a", "winner_model_b", "winner_tie"]].to_numpy()
    assert ((probs >= 0) & (probs <= 1)).all()
    assert (probs.sum(axis=1).round(6) == 1).all()
    # also by run id, and a clear error for an unknown run
    predict(run_dir.name, synthetic_data_dir / "lmsys-chatbot-arena" / "test.csv", out, progress=False)
    with pytest.raises(ReplicatorError, match="no run folder"):
        predict("nope", synthetic_data_dir / "lmsys-chatbot-arena" / "test.csv", out)


def test_two_stage_recipe_starts_from_earlier_weights(isolated, tmp_path):
    recipe = Path(tmp_path / "two.yaml")
    recipe.write_text((RECIPES / "smoke.yaml").read_text() + """
stages:
  pretrain: {train: {lr: 1.0e-3}}
  finetune: {from: pretrain, reinit_head: true}
""")
    r = resolve(recipe, [], TINY + ["train.epochs=1"], data_dir=data_dir())
    run_dir, m, _ = run(r, data_dir(), progress=False)
    assert set(m["stages"]) == {"pretrain", "finetune"} and m["final_stage"] == "finetune"
    art = isolated / "artifacts" / r.name / run_dir.name
    pre = torch.load(next(art.parent.glob("steps/pretrain-train-*/checkpoint.pt")),
                     weights_only=False)["trainable"]
    from safetensors.torch import load_file

    fin = load_file(str(art / "finetune" / "final.safetensors"))
    assert set(pre) == set(fin)
    # per-row predictions of every stage: the final one under the plain name
    assert ((run_dir / "valid_predictions.pretrain.csv.gz").exists()
            and (run_dir / "valid_predictions.csv.gz").exists())
    assert len(m["stages"]["pretrain"]["train_loss_history"]) == m["stages"]["pretrain"]["optimizer_steps"]


QUICK = ["train.epochs=1"]


def test_reuse_needs_the_outputs_the_run_vouches_for(isolated):
    run_dir, m, _ = _run(QUICK)
    art = isolated / "artifacts" / "smoke" / run_dir.name / "main"
    preds = art / "valid_predictions.json"
    preds.write_text("{not json")  # an interrupted copy, say
    _, again, reused = _run(QUICK)
    assert not reused and again["tta_log_loss"] == m["tta_log_loss"]
    (art / "done.json").unlink()  # no done marker: the stage is not finished, even with metrics.json
    assert not _run(QUICK)[2]
    assert _run(QUICK)[2]


def test_force_removes_the_old_metrics_before_anything_else(isolated, monkeypatch):
    run_dir, _, _ = _run(QUICK)

    def boom(*a, **k):
        raise RuntimeError("killed")

    monkeypatch.setattr(pipeline, "_train_and_evaluate", boom)  # after the data checks, before training
    with pytest.raises(RuntimeError, match="killed"):
        _run(QUICK, force=True)
    assert not (run_dir / "metrics.json").exists() and (run_dir / "failed.json").exists()
    assert not (isolated / "artifacts" / "smoke" / run_dir.name / "main" / "final.safetensors").exists()


def test_stage_rows_are_sampled_in_their_original_order(isolated):
    from replicator.core.config.catalogue import build_plugins
    from replicator.core.rows import DataContext

    r = resolve(RECIPES / "smoke.yaml", [], TINY + ["train.max_rows=20", "predict.max_rows=7"])
    stage = r.final
    plugins = build_plugins(stage.plugins, r.file)

    def ctx():
        return DataContext(data_dir=data_dir(), seed=r.seed, stage=stage.name)

    full_train, full_valid = pipeline.collect_rows(plugins, ctx())
    train, valid = pipeline.stage_rows(r, stage, plugins, ctx())
    assert len(train) == 20 and len(valid) == 7
    position = {row["id"]: i for i, row in enumerate(full_train)}
    assert [position[row["id"]] for row in train] == sorted(position[row["id"]] for row in train)
    position = {row["id"]: i for i, row in enumerate(full_valid)}
    assert [position[row["id"]] for row in valid] == sorted(position[row["id"]] for row in valid)


# ---------------------------------------------------------------- one of each utility


def test_atomic_writes_are_readable_unique_and_clean_up(tmp_path):
    import os

    from replicator.core.util.atomic import (
        atomic_folder,
        atomic_path,
        atomic_save_safetensors,
        atomic_torch_save,
        atomic_write_bytes,
        atomic_write_text,
    )

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a" / "x.txt", "hello")
        atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
        atomic_torch_save({"t": torch.ones(2)}, tmp_path / "c.pt")
        atomic_save_safetensors({"w": torch.zeros(3)}, tmp_path / "w.safetensors", metadata={"k": "v"})
        atomic_folder(tmp_path / "folder", lambda d: (d / "f.txt").write_text("1"))
    finally:
        os.umask(old)
    assert (tmp_path / "a" / "x.txt").read_text() == "hello"
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    for f in (tmp_path / "a" / "x.txt", tmp_path / "b.bin", tmp_path / "c.pt", tmp_path / "w.safetensors"):
        assert f.stat().st_mode & 0o777 == 0o644, f
    assert (tmp_path / "folder").stat().st_mode & 0o777 == 0o755
    assert torch.load(tmp_path / "c.pt")["t"].sum() == 2
    # two writers of the same file at once get two temp files
    with atomic_path(tmp_path / "same.txt") as t1, atomic_path(tmp_path / "same.txt") as t2:
        assert t1 != t2 and t1.parent == t2.parent == tmp_path
        t1.write_text("1")
        t2.write_text("2")
    assert (tmp_path / "same.txt").read_text() == "1"  # the last writer to finish wins, whole
    atomic_write_text(tmp_path / "same.txt", "2")
    # a failed write leaves the old file and no temp file behind
    with pytest.raises(ZeroDivisionError):
        with atomic_path(tmp_path / "same.txt") as t:
            t.write_text("half")
            raise ZeroDivisionError
    assert (tmp_path / "same.txt").read_text() == "2"
    def fail(d):
        raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        atomic_folder(tmp_path / "folder", fail)
    assert (tmp_path / "folder" / "f.txt").read_text() == "1"
    # a folder build replaces the old folder, unless the existing one is kept (a race won elsewhere)
    atomic_folder(tmp_path / "folder", lambda d: (d / "g.txt").write_text("2"))
    assert [p.name for p in (tmp_path / "folder").iterdir()] == ["g.txt"]
    atomic_folder(tmp_path / "folder", lambda d: (d / "h.txt").write_text("3"), keep_existing=True)
    assert [p.name for p in (tmp_path / "folder").iterdir()] == ["g.txt"]
    leftovers = sorted(p.name for p in tmp_path.rglob("*") if p.name.startswith("."))
    assert leftovers == [], leftovers


def test_log_loss_matches_sklearn_on_hard_soft_and_extreme_probabilities():
    from sklearn.metrics import log_loss as sk_log_loss

    from replicator.core.scoring.metrics import log_loss

    rng = np.random.default_rng(0)
    p = rng.dirichlet([1, 1, 1], size=50)
    p[:5] = [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1e-20, 1 - 1e-20, 0], [0.5, 0.5, 0]]  # extremes, exact 0 and 1
    y = rng.integers(0, 3, size=50)
    y[:5] = [1, 1, 2, 0, 2]  # confidently wrong rows included
    assert log_loss(p, np.eye(3)[y]) == pytest.approx(sk_log_loss(y, p, labels=[0, 1, 2]), rel=1e-12)
    # soft labels: sklearn with each row expanded into its three classes, weighted by the label
    soft = rng.dirichlet([2, 2, 1], size=50)
    want = sk_log_loss(np.tile([0, 1, 2], 50), np.repeat(p, 3, axis=0), sample_weight=soft.ravel(),
                       labels=[0, 1, 2])
    assert log_loss(p, soft) == pytest.approx(want, rel=1e-12)


def test_transformers_verbosity_is_restored_after_loading():
    from transformers.utils import logging as hf_logging

    from replicator.core.config.catalogue import build_plugins
    from replicator.core.model.loading import load_model

    r = resolve(RECIPES / "smoke.yaml", [], TINY)
    before = hf_logging.get_verbosity()
    hf_logging.set_verbosity_info()
    try:
        load_model(r.final.model, build_plugins(r.final.plugins, r.file), train=False)
        assert hf_logging.get_verbosity() == hf_logging.INFO and hf_logging.is_progress_bar_enabled()
    finally:
        hf_logging.set_verbosity(before)


def test_cli_verbosity_options(monkeypatch, tmp_path):
    import logging
    import os

    from typer.testing import CliRunner

    from replicator.core import cli

    logger = logging.getLogger("replicator")
    monkeypatch.setattr(logger, "handlers", [])
    monkeypatch.setattr(logger, "level", logger.level)
    monkeypatch.setenv("REPLICATOR_TRACE", "0")  # restored (to unset) after the test
    monkeypatch.delenv("REPLICATOR_TRACE")
    out = CliRunner().invoke(cli.app, ["show", str(RECIPES / "smoke.yaml"), "-q"])
    assert out.exit_code == 0 and logger.level == logging.WARNING and "REPLICATOR_TRACE" not in os.environ
    assert "checkpoint_every: 10" in out.output and "hub_id:" in out.output  # every default shown
    out = CliRunner().invoke(cli.app, ["-v", "show", str(RECIPES / "smoke.yaml")])
    assert out.exit_code == 0 and logger.level == logging.DEBUG and os.environ["REPLICATOR_TRACE"] == "1"
    assert len([h for h in logger.handlers if getattr(h, "_replicator_handler", False)]) == 1
    out = CliRunner().invoke(cli.app, ["show", str(RECIPES / "smoke.yaml"), "-q", "-v"])
    assert out.exit_code == 2 and "exclude each other" in out.output
    assert cli.logging_setup(quiet=True) is False and cli.logging_setup() is True


# ---------------------------------------------------------------- the shape of core/


CORE = Path(__file__).resolve().parents[1] / "core"
MAX_FUNCTION_LINES = 60


def _functions():
    import ast

    for f in sorted(CORE.rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield f"{f.relative_to(CORE).as_posix()}:{node.name}", node.end_lineno - node.lineno + 1, node


def test_no_function_in_core_is_over_60_lines():
    over = {name: n for name, n, _ in _functions() if n > MAX_FUNCTION_LINES}
    assert not over, "functions over 60 lines in core/: " + ", ".join(f"{k} ({v})"
                                                                      for k, v in sorted(over.items()))


def test_core_logs_instead_of_printing():
    import ast

    prints = [f"{f.name}:{node.lineno}" for f in sorted(CORE.rglob("*.py"))
              for node in ast.walk(ast.parse(f.read_text()))
              if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print"]
    assert not prints, f"print() in core/ (use logging.getLogger(__name__)): {prints}"
