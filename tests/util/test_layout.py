"""Where a run's files live (core/util/layout.py): the roots from the environment, a run's two folders
and the name of the per-row predictions file of each stage."""

from __future__ import annotations

from pathlib import Path

from replicator.core.util import layout


def test_roots_follow_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("REPLICATOR_REPORTS", str(tmp_path / "rep"))
    monkeypatch.setenv("REPLICATOR_ARTIFACTS", str(tmp_path / "art"))
    monkeypatch.setenv("REPLICATOR_CACHE", str(tmp_path / "cache"))
    assert layout.reports_root() == tmp_path / "rep"
    assert layout.artifacts_root() == tmp_path / "art"
    assert layout.cache_root() == tmp_path / "cache"
    # read at each call, not once at import
    monkeypatch.setenv("REPLICATOR_REPORTS", str(tmp_path / "other"))
    assert layout.reports_root() == tmp_path / "other"


def test_roots_default_without_the_environment(tmp_path, monkeypatch):
    for var in ("REPLICATOR_REPORTS", "REPLICATOR_ARTIFACTS", "REPLICATOR_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert layout.reports_root() == Path("reports")
    assert layout.artifacts_root() == Path("artifacts")
    assert layout.cache_root() == tmp_path / ".cache" / "arena-replicator"


def test_run_folders_put_recipe_then_run_id_under_each_root(tmp_path, monkeypatch):
    monkeypatch.setenv("REPLICATOR_REPORTS", str(tmp_path / "rep"))
    monkeypatch.setenv("REPLICATOR_ARTIFACTS", str(tmp_path / "art"))
    reports, artifacts = layout.run_folders("smoke", "smoke-0123abcd-s7")
    assert reports == tmp_path / "rep" / "smoke" / "smoke-0123abcd-s7"
    assert artifacts == tmp_path / "art" / "smoke" / "smoke-0123abcd-s7"
    assert layout.run_folders("other", "smoke-0123abcd-s7")[0] != reports


def test_row_predictions_path_final_stage_versus_earlier_stage(tmp_path):
    run_dir = tmp_path / "reports" / "r" / "id"
    final = layout.row_predictions_path(run_dir, "main", final="main")
    earlier = layout.row_predictions_path(run_dir, "pretrain", final="main")
    assert final == run_dir / layout.ROW_PREDICTIONS == run_dir / "valid_predictions.csv.gz"
    assert earlier == run_dir / "valid_predictions.pretrain.csv.gz"
    assert final.parent == earlier.parent == run_dir


def test_file_names_are_distinct():
    names = [layout.RESOLVED, layout.FINGERPRINT, layout.METRICS, layout.FAILED, layout.ROW_PREDICTIONS,
             layout.DONE, layout.WEIGHTS, layout.HEAD_FILE, layout.BASELINE_PARAMS, layout.VALID_PREDICTIONS,
             layout.OUTPUTS, layout.TRAIN_RESULT]
    assert len(set(names)) == len(names)
    assert layout.METRICS == "metrics.json" and layout.DONE == "done.json"
    assert layout.WEIGHTS.endswith(".safetensors")
