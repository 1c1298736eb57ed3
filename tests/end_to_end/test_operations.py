"""Operations that never lie (issue 9), on whole runs: one process per run (a lock), no debris from failed
runs, and a run interrupted at any write recovers to the numbers of an uninterrupted one; two processes
give the numbers of one. Tiny models, synthetic rows, tmp folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from replicator.core.data.files import data_dir
from replicator.core.errors import DataError, ReplicatorError
from replicator.core.run import pipeline
from replicator.core.run.fingerprint import fingerprint
from replicator.core.run.submission import predict
from replicator.core.util import atomic as io
from replicator.core.util.layout import run_folders
from replicator.core.util.lock import lock_path, run_lock

from ..conftest import QUICK, RECIPES
from ..smoke_runs import _files, _resolved, _run, _truncate

#: metrics that depend on the clock or on where a run restarted, not on what it computed
#: the clock and the reuse bookkeeping (which steps were recomputed): not results
CLOCK = ("seconds", "train_tokens_per_second", "resumed_at_step", "train_seconds", "train_reused",
         "views_reused")


def _temp_files(*roots: Path) -> list[str]:
    return [str(p) for r in roots if r.exists() for p in r.rglob(".*") if io.is_temp_name(p.name)]


def _numbers(m: dict) -> dict:
    """metrics.json without the clock."""
    out = {k: v for k, v in m.items() if k not in CLOCK and k != "stages"}
    out["stages"] = {s: {k: v for k, v in r.items() if k not in CLOCK} for s, r in m["stages"].items()}
    return out


def _cli(env: dict, *args: str, stderr=subprocess.PIPE) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "replicator.core.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=stderr, text=True)


def _env(isolated: Path) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def test_two_identical_runs_at_once_one_computes_the_other_waits_and_reuses(isolated, tmp_path):
    """Two `replicate run` processes of the same run while a third holds its lock: both wait (saying
    so, naming the run and the lock), then one computes and the other reuses: one result."""
    r = _resolved()
    run_id = fingerprint(r, data_dir())["run_id"]
    run_dir, _ = run_folders(r.name, run_id)
    cmd = ["run", str(RECIPES / "smoke.yaml"), *QUICK]
    logs = [tmp_path / "a.err", tmp_path / "b.err"]
    with run_lock(run_dir, run_id):
        procs = [_cli(_env(isolated), *cmd, stderr=open(f, "w")) for f in logs]  # noqa: SIM115
        deadline = time.time() + 240
        while not all("waiting" in f.read_text() for f in logs):
            assert time.time() < deadline, [f.read_text()[-2000:] for f in logs]
            assert all(p.poll() is None for p in procs), [f.read_text()[-2000:] for f in logs]
            time.sleep(0.5)
    outs = [p.communicate(timeout=600)[0] for p in procs]
    errs = [f.read_text() for f in logs]
    assert [p.returncode for p in procs] == [0, 0], errs
    for err in errs:
        assert "Traceback" not in err
        assert f"run {run_id} is being computed by pid" in err and str(lock_path(run_dir)) in err
    assert sorted(o.split(":")[0] for o in outs) == ["finished", "reused"], outs
    assert [p.name for p in run_dir.parent.iterdir()] == [run_id]  # one run folder, the lock file gone
    assert json.loads((run_dir / "metrics.json").read_text())["run_id"] == run_id
    assert not _temp_files(isolated)


def test_a_failed_run_is_marked_never_taken_for_a_result_and_recomputed(isolated, monkeypatch,
                                                                        synthetic_data_dir):
    monkeypatch.setenv("REPLICATOR_CRASH_AFTER_STEP", "4")  # checkpoint_every=3
    with pytest.raises(RuntimeError, match="simulated crash"):
        _run()
    run_dir = next((isolated / "reports" / "smoke").iterdir())
    failed = json.loads((run_dir / "failed.json").read_text())
    assert (failed["stage"] == "main" and failed["error"] == "RuntimeError"
            and "simulated crash" in failed["message"])
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "fingerprint.json").exists()
    assert not _temp_files(isolated)
    with pytest.raises(ReplicatorError, match="last attempt failed .*simulated crash"):
        predict(str(run_dir), synthetic_data_dir / "lmsys-chatbot-arena" / "test.csv", isolated / "s.csv")
    from replicator.core.report.runs import discover_runs

    with pytest.raises(ReplicatorError, match="no run folders"):  # a report never picks it up
        discover_runs([isolated / "reports" / "smoke"])
    monkeypatch.delenv("REPLICATOR_CRASH_AFTER_STEP")
    again_dir, m, reused = _run()
    assert again_dir == run_dir and not reused and m["resumed_at_step"] == 3
    assert not (run_dir / "failed.json").exists() and (run_dir / "metrics.json").exists()
    assert _run()[2]


def test_force_keeps_the_previous_run_when_the_new_attempt_fails_its_checks(isolated, monkeypatch):
    run_dir, m, _ = _run()
    before = _files(isolated)

    def bad_rows(*a, **k):
        raise DataError("train.csv", [("7", "prompt", "broken")])

    real = pipeline.stage_rows
    monkeypatch.setattr(pipeline, "stage_rows", bad_rows)
    with pytest.raises(DataError, match="broken"):
        _run(force=True)
    assert _files(isolated) == before and not (run_dir / "failed.json").exists()
    monkeypatch.setattr(pipeline, "stage_rows", real)
    assert _run()[1] == m


def test_temp_files_of_a_killed_writer_are_removed_by_the_next_attempt(isolated):
    r = _resolved()
    run_dir, art = run_folders(r.name, fingerprint(r, data_dir())["run_id"])
    stale = [art / "main" / ".final.safetensors.x1y2.tmp", run_dir / ".metrics.json.abcd.tmp"]
    for f in stale:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("half")
    (art / "main" / ".tiny.abc.old").mkdir()
    _run()
    assert not _temp_files(isolated)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root writes into read-only folders; the /proc test covers root")
def test_force_on_a_read_only_reports_folder_deletes_nothing(isolated):
    run_dir, _, _ = _run()
    before = _files(isolated)
    os.chmod(run_dir.parent, 0o555)
    try:
        with pytest.raises(ReplicatorError, match="not writable"):
            _run(force=True)
    finally:
        os.chmod(run_dir.parent, 0o755)
    assert _files(isolated) == before


def test_a_truncated_weights_file_is_not_a_finished_stage(isolated):
    run_dir, m, _ = _run()
    weights = isolated / "artifacts" / "smoke" / run_dir.name / "main" / "final.safetensors"
    _truncate(weights)
    stage = _resolved().final
    assert any("truncated" in x for x in pipeline.stage_missing(stage, weights.parent))
    _, again, reused = _run()
    assert not reused and _numbers(again) == _numbers(m)


def test_a_deleted_report_folder_is_recomputed_not_reused_without_its_row_predictions(isolated):
    """The stage's artifacts are intact but the report folder is gone: the run comes back with its
    per-row predictions (what reports pair on), never as a folder of metrics alone."""
    import shutil

    run_dir, m, _ = _run()
    shutil.rmtree(run_dir)
    again_dir, again, reused = _run()
    assert not reused and again_dir == run_dir and _numbers(again) == _numbers(m)
    assert (run_dir / "valid_predictions.csv.gz").is_file()


def test_a_failure_at_any_write_recovers_to_the_uninterrupted_numbers(isolated, monkeypatch):
    """Every atomic write of a run made to fail in turn: the run fails (failed.json once it had
    written), leaves no temp file, is never reused with missing outputs, and the rerun gives the
    numbers of the uninterrupted run."""
    real, calls = io.atomic_path, []

    def counting(path):
        calls.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(io, "atomic_path", counting)
    straight_dir, straight, _ = _run()
    writes = list(calls)
    assert {"resolved.yaml", "checkpoint.pt", "final.safetensors", "done.json", "metrics.json"} <= set(writes)
    for k in range(1, len(writes) + 1):
        for root in (isolated / "reports" / "smoke", isolated / "artifacts" / "smoke",
                     isolated / "artifacts" / "cache"):  # the token cache too: the same writes each time
            if root.exists():
                import shutil

                shutil.rmtree(root)
        calls.clear()

        def failing(path, k=k):
            calls.append(Path(path).name)
            if len(calls) == k:
                raise OSError(28, "No space left on device (injected)", str(path))
            return real(path)

        monkeypatch.setattr(io, "atomic_path", failing)
        with pytest.raises(OSError, match="injected"):
            _run()
        assert not _temp_files(isolated), (k, writes[k - 1])
        assert not (straight_dir / "metrics.json").exists(), (k, writes[k - 1])
        assert (straight_dir / "failed.json").exists() == (k > 1), (k, writes[k - 1])
        monkeypatch.setattr(io, "atomic_path", real)
        again_dir, again, reused = _run()
        assert again_dir == straight_dir and not reused, (k, writes[k - 1])
        assert _numbers(again) == _numbers(straight), (k, writes[k - 1])
        assert not pipeline.stage_missing(_resolved().final,
                                          isolated / "artifacts" / "smoke" / again_dir.name / "main")
        assert _run()[2] and not (again_dir / "failed.json").exists()


@pytest.mark.parametrize("budget", [[], ["train.batch_tokens=300", "train.max_grad_norm=0.01"]],
                         ids=["rows", "token_budget_clipped"])
def test_two_processes_give_the_numbers_of_one_with_the_same_global_batch(isolated, tmp_path, budget):
    """torchrun --nproc_per_node 2 (gloo) against one process, 16 rows per step (accumulation 1 against 2,
    derived from global_batch): the same optimizer steps, loss history, validation metrics and per-row
    predictions (within 1e-5), one set of files, the process count in the run id; with row batches and
    with token-budget batches (micro-batches of varying row counts: each weighted by its rows in the step)
    with every step clipped (the norm of the synchronised gradients)."""
    import numpy as np

    from replicator.core.scoring.row_predictions import read_row_predictions

    one_dir, one, _ = _run(["train.global_batch=16", *budget])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "replicator.core.cli", "run", str(RECIPES / "smoke.yaml"), *QUICK, "train.global_batch=16",
           *budget]
    p = subprocess.run(cmd, env=_env(isolated), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr[-3000:]
    assert p.stdout.count("finished:") == 1, p.stdout  # the main process reports
    two_dir = Path(p.stdout.split("finished:")[1].split()[0])
    two = json.loads((two_dir / "metrics.json").read_text())
    assert (one["n_processes"], two["n_processes"]) == (1, 2) and one_dir != two_dir
    s1, s2 = one["stages"]["main"], two["stages"]["main"]
    assert s1["optimizer_steps"] == s2["optimizer_steps"] and s1["train_tokens"] == s2["train_tokens"]
    assert np.allclose(s1["train_loss_history"], s2["train_loss_history"], atol=1e-5, rtol=0)
    for k in ("log_loss", "tta_log_loss", "final_log_loss", "accuracy", "tta_accuracy", "n_valid_rows"):
        assert abs(one[k] - two[k]) <= 1e-5, (k, one[k], two[k])
    r1 = read_row_predictions(one_dir / "valid_predictions.csv.gz")
    r2 = read_row_predictions(two_dir / "valid_predictions.csv.gz")
    assert r1.ids == r2.ids and len(set(r2.ids)) == len(r2.ids)
    for v in ("identity", "swap_ab", "tta", "final"):
        assert np.abs(np.asarray(r1.views[v]) - np.asarray(r2.views[v])).max() <= 1e-5, v
    assert not _temp_files(isolated) and not list((isolated / "reports" / "smoke").glob(".*.lock"))
