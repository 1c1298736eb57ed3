"""Operations that never lie (issue 9): one process per run (a lock), no debris from failed runs,
every path checked before a model loads, NUL bytes repaired with a notice, and a run interrupted at
any write recovers to the numbers of an uninterrupted one. Tiny models, synthetic rows, tmp folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from replicator.core.config.recipe import resolve
from replicator.core.data.competition import read_competition_csv
from replicator.core.data.files import data_dir
from replicator.core.errors import DataError, ReplicatorError
from replicator.core.run import pipeline
from replicator.core.run.fingerprint import fingerprint
from replicator.core.run.pipeline import run_recipe
from replicator.core.run.submission import predict
from replicator.core.util import atomic as io
from replicator.core.util.layout import run_folders
from replicator.core.util.lock import lock_path, run_lock

from .conftest import RECIPES, TINY, synthetic_rows, write_csv

QUICK = TINY + ["train.epochs=1", "train.max_rows=48", "predict.max_rows=24"]
#: metrics that depend on the clock or on where a run restarted, not on what it computed
#: the clock and the reuse bookkeeping (which steps were recomputed): not results
CLOCK = ("seconds", "train_tokens_per_second", "resumed_at_step", "train_seconds", "train_reused",
         "views_reused")


def _resolved(overrides=()):
    return resolve(RECIPES / "smoke.yaml", [], QUICK + list(overrides), data_dir=data_dir())


def _run(overrides=(), force=False):
    return run_recipe(_resolved(overrides), data_dir(), force=force, progress=False)


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def _temp_files(*roots: Path) -> list[str]:
    return [str(p) for r in roots if r.exists() for p in r.rglob(".*") if io.is_temp_name(p.name)]


def _numbers(m: dict) -> dict:
    """metrics.json without the clock."""
    out = {k: v for k, v in m.items() if k not in CLOCK and k != "stages"}
    out["stages"] = {s: {k: v for k, v in r.items() if k not in CLOCK} for s, r in m["stages"].items()}
    return out


# ---------------------------------------------------------------- 1. one process per run


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


def test_a_held_lock_with_a_timeout_is_a_clear_error(isolated, monkeypatch):
    from typer.testing import CliRunner

    from replicator.core import cli

    r = _resolved()
    run_id = fingerprint(r, data_dir())["run_id"]
    run_dir, _ = run_folders(r.name, run_id)
    monkeypatch.setenv("REPLICATOR_LOCK_TIMEOUT", "0.5")
    with run_lock(run_dir, run_id):
        with pytest.raises(ReplicatorError,
                           match=f"run {run_id} is being computed by pid {os.getpid()}") as e:
            _run()
        assert str(lock_path(run_dir)) in str(e.value) and "gave up after" in str(e.value)
        out = CliRunner().invoke(cli.app, ["run", str(RECIPES / "smoke.yaml"), *QUICK])
        assert out.exit_code == 2 and "lock" in out.output and "Traceback" not in out.output
    assert not run_dir.exists() and not lock_path(run_dir).exists()
    monkeypatch.setenv("REPLICATOR_LOCK_TIMEOUT", "soon")
    with pytest.raises(ReplicatorError, match="REPLICATOR_LOCK_TIMEOUT='soon'"):
        _run()


def test_a_lock_file_left_by_a_killed_process_blocks_nothing(isolated):
    r = _resolved()
    run_id = fingerprint(r, data_dir())["run_id"]
    run_dir, _ = run_folders(r.name, run_id)
    lock_path(run_dir).parent.mkdir(parents=True)
    lock_path(run_dir).write_text("pid 1 on elsewhere\n")  # the file stays, its flock died with its process
    with run_lock(run_dir, run_id) as held:
        assert held == lock_path(run_dir) and f"pid {os.getpid()}" in held.read_text()
    assert not lock_path(run_dir).exists()


# ---------------------------------------------------------------- 2. no debris from failed runs


def test_bad_data_writes_nothing(isolated, monkeypatch, tmp_path):
    bad = tmp_path / "bad_data"
    rows = synthetic_rows(40)
    rows[3]["winner_tie"] = 1  # two labels
    write_csv(bad / "lmsys-chatbot-arena" / "train.csv", rows)
    monkeypatch.setenv("REPLICATOR_DATA_DIR", str(bad))
    with pytest.raises(DataError, match="row 1003"):
        _run()
    assert _files(isolated / "reports") == [] and _files(isolated / "artifacts") == []


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


def test_remove_temp_files_keeps_everything_else(tmp_path):
    for name in ("a.txt", ".hidden", ".x.tmp.keep", "d/.w.safetensors.k.tmp", "d/e/.f.1.old/inner"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("1")
    removed = io.remove_temp_files(tmp_path)
    assert sorted(p.name for p in removed) == [".f.1.old", ".w.safetensors.k.tmp"]
    assert _files(tmp_path) == [".hidden", ".x.tmp.keep", "a.txt"]
    assert io.remove_temp_files(tmp_path / "nothing") == []


# ---------------------------------------------------------------- 3. paths checked before a model loads


@pytest.fixture()
def no_model(monkeypatch):
    """Loading a model fails the test: every check must come before it."""
    from replicator.core.model import inference, loading

    def refuse(*a, **k):
        raise AssertionError("a model was loaded before the paths were checked")

    monkeypatch.setattr(inference, "load_for_inference", refuse)
    monkeypatch.setattr(loading, "load_model", refuse)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])


PREDICT_CASES = {
    # case: (what to break, words of the error)
    "test file missing": (lambda run, art, t, o: t.unlink(), ["test file", "no such file"]),
    "test file is a folder": (lambda run, art, t, o: (t.unlink(), t.mkdir()), ["test file", "is a folder"]),
    "test file invalid": (lambda run, art, t, o: t.write_text("id,prompt\n1,x\n"),
                          ["test.csv", "missing required column(s) response_a, response_b"]),
    "output is a folder": (lambda run, art, t, o: o.mkdir(), ["submission file (--out)", "is a folder"]),
    "output folder is a file": (lambda run, art, t, o: o.parent.rmdir() or o.parent.write_text("x"),
                                ["is a file, not a folder"]),
    "weights truncated": (lambda run, art, t, o: _truncate(art / "final.safetensors"),
                          ["final.safetensors", "truncated or damaged"]),
    "weights not safetensors": (lambda run, art, t, o: (art / "final.safetensors").write_bytes(b"\x05" * 64),
                                ["final.safetensors", "truncated or not a safetensors file"]),
    "weights missing": (lambda run, art, t, o: (art / "final.safetensors").unlink(),
                        ["final.safetensors is missing", "replicate run"]),
    "validation predictions missing": (lambda run, art, t, o: (art / "valid_predictions.json").unlink(),
                                       ["valid_predictions.json is missing"]),
    "validation predictions unreadable": (lambda run, art, t, o:
                                          (art / "valid_predictions.json").write_text("{"),
                                          ["valid_predictions.json: unreadable"]),
    "run not finished": (lambda run, art, t, o: (run / "metrics.json").unlink(),
                         ["not finished (no metrics.json)"]),
    "run failed": (lambda run, art, t, o: (run / "failed.json").write_text('{"stage": "main", "error": "E"}'),
                   ["last attempt failed", "stage main: E"]),
    "resolved recipe missing": (lambda run, art, t, o: (run / "resolved.yaml").unlink(),
                                ["resolved recipe", "no such file"]),
}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, synthetic_data_dir):
    """A finished tiny run, copied by each test that breaks something in it."""
    root = tmp_path_factory.mktemp("finished")
    mp = pytest.MonkeyPatch()
    for k, v in (("REPLICATOR_REPORTS", root / "reports"), ("REPLICATOR_ARTIFACTS", root / "artifacts"),
                 ("REPLICATOR_DATA_DIR", synthetic_data_dir), ("HF_HUB_OFFLINE", "1")):
        mp.setenv(k, str(v))
    try:
        run_dir, _, _ = _run()
    finally:
        mp.undo()
    return root, run_dir.relative_to(root)


@pytest.mark.parametrize("case", list(PREDICT_CASES))
def test_predict_checks_every_path_before_loading_a_model(case, finished_run, isolated, synthetic_data_dir,
                                                          no_model):
    import shutil

    root, rel = finished_run
    for sub in ("reports", "artifacts"):
        shutil.rmtree(isolated / sub, ignore_errors=True)
        shutil.copytree(root / sub, isolated / sub)
    run_dir = isolated / rel
    art = isolated / "artifacts" / "smoke" / run_dir.name / "main"
    test = isolated / "test.csv"
    shutil.copy(synthetic_data_dir / "lmsys-chatbot-arena" / "test.csv", test)
    out = isolated / "out" / "submission.csv"
    out.parent.mkdir()
    breaks, words = PREDICT_CASES[case]
    breaks(run_dir, art, test, out)
    with pytest.raises(ReplicatorError) as e:
        predict(str(run_dir), test, out, progress=False)
    for w in words:
        assert w in str(e.value), (w, str(e.value))
    assert not out.is_file()


def test_predict_errors_reach_the_command_line_without_a_traceback(finished_run, isolated, synthetic_data_dir,
                                                                    no_model):
    from typer.testing import CliRunner

    from replicator.core import cli

    root, rel = finished_run
    test = synthetic_data_dir / "lmsys-chatbot-arena" / "test.csv"
    out = CliRunner().invoke(cli.app, ["predict", str(root / rel), str(test), "-o", str(isolated)])
    assert (out.exit_code == 2 and "is a folder; give a file name" in out.output
            and "Traceback" not in out.output)


def test_run_checks_its_folders_before_anything_else(isolated, monkeypatch):
    (isolated / "reports").write_text("a file where the reports folder should be")
    with pytest.raises(ReplicatorError, match="reports folder .*is a file, not a folder"):
        _run()
    monkeypatch.setenv("REPLICATOR_REPORTS", str(isolated / "r"))
    monkeypatch.setenv("REPLICATOR_ARTIFACTS", str(isolated / "reports" / "under_a_file"))
    with pytest.raises(ReplicatorError, match="artifacts folder .*is a file, not a folder"):
        _run()
    assert _files(isolated / "r") == []


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc (read-only, even for root)")
def test_a_read_only_reports_folder_is_a_clear_error_even_for_root(isolated, monkeypatch):
    from typer.testing import CliRunner

    from replicator.core import cli

    monkeypatch.setenv("REPLICATOR_REPORTS", "/proc/replicator-reports")
    out = CliRunner().invoke(cli.app, ["run", str(RECIPES / "smoke.yaml"), *QUICK])
    assert out.exit_code == 2 and "Traceback" not in out.output
    assert ("reports folder (REPLICATOR_REPORTS) /proc/replicator-reports" in out.output
            and "cannot write" in out.output)


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


def test_a_file_error_anywhere_in_run_is_named_without_a_traceback(isolated, monkeypatch):
    from typer.testing import CliRunner

    from replicator.core import cli

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied", "/somewhere/metrics.json")

    monkeypatch.setattr(cli, "run_recipe", denied)  # the command calls the runner it imported
    out = CliRunner().invoke(cli.app, ["run", str(RECIPES / "smoke.yaml"), *QUICK])
    assert out.exit_code == 2 and "Traceback" not in out.output
    assert "error: /somewhere/metrics.json: Permission denied" in out.output


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


# ---------------------------------------------------------------- 4. NUL bytes


def test_nul_bytes_are_removed_with_a_notice_naming_file_row_and_field(tmp_path, caplog):
    rows = synthetic_rows(6)
    rows[1]["response_a"] = json.dumps(["bad\x00 text"])  # a raw NUL
    rows[4]["prompt"] = json.dumps(["escaped\u0000 too", "Can you say more?"])  # the \u0000 escape
    path = write_csv(tmp_path / "train.csv", rows)
    with caplog.at_level("INFO", logger="replicator"):
        got = read_competition_csv(path, require_labels=True)
    assert got[1]["response_a"] == ["bad text"] and got[4]["prompt"][0] == "escaped too"
    assert not any("\x00" in t for r in got for f in ("prompt", "response_a", "response_b") for t in r[f])
    notice = [r.getMessage() for r in caplog.records if "NUL" in r.getMessage()]
    assert len(notice) == 1 and str(path) in notice[0] and "2 field(s)" in notice[0]
    assert "1001 response_a" in notice[0] and "1004 prompt" in notice[0]


def test_nul_bytes_from_any_source_are_removed_with_a_notice(caplog):
    from replicator.core.data.collect import _repair_nul
    from replicator.core.rows import make_row, prompt_group

    rows = [make_row("u1", ["hi\x00"], ["a"], ["b\x00"], source="extra_x"),
            make_row("u2", ["ok"], ["a"], ["b"])]
    with caplog.at_level("INFO", logger="replicator"):
        _repair_nul(rows)
    assert (rows[0]["prompt"] == ["hi"] and rows[0]["response_b"] == ["b"]
            and rows[0]["group"] == prompt_group(["hi"]))
    notice = [r.getMessage() for r in caplog.records if "NUL" in r.getMessage()]
    assert notice == ["extra_x: 2 field(s): NUL character(s) (\\x00) removed from the text of the named "
                      "field(s) (e.g. id u1 prompt, u1 response_b)"]


# ---------------------------------------------------------------- 6. a failure at any write


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


# ---------------------------------------------------------------- 5. several processes


def test_share_gives_every_process_the_same_number_of_passes():
    from replicator.core.train.trainer import share

    step = ["m0", "m1", "m2"]
    parts = [share(step, r, 2) for r in range(2)]
    assert [len(p) for p in parts] == [2, 2]
    real = sorted(k for p in parts for k, _, w in p if w == 1.0)
    assert real == [0, 1, 2] and [w for _, _, w in parts[1]] == [1.0, 0.0]
    assert share(step, 0, 1) == [(0, "m0", 1.0), (1, "m1", 1.0), (2, "m2", 1.0)]
    assert [w for _, _, w in share(["m0"], 1, 2)] == [0.0]  # a process with nothing real still takes part


def test_gather_rows_puts_one_process_rows_back_in_order():
    import numpy as np

    from replicator.core.util.distributed import gather_rows

    vals = np.array([[0.2, 0.3, 0.5], [0.1, 0.1, 0.8], [0.6, 0.2, 0.2]])
    assert (gather_rows([2, 0, 1], vals, 3) == vals[[1, 2, 0]]).all()
    with pytest.raises(RuntimeError, match="1 row\\(s\\) predicted by no process"):
        gather_rows([0, 1], vals[:2], 3)


@pytest.mark.parametrize("budget", [[], ["train.batch_tokens=300", "train.max_grad_norm=0.01"]],
                         ids=["rows", "token_budget_clipped"])
def test_two_processes_give_the_numbers_of_one_with_the_same_global_batch(isolated, tmp_path, budget):
    """torchrun --nproc_per_node 2 (gloo) with grad_accum 1 against one process with grad_accum 2: the
    same optimizer steps, loss history, validation metrics and per-row predictions (within 1e-5),
    one set of files, the process count in the run id; with row batches and with token-budget batches
    (micro-batches of varying row counts: each weighted by its rows in the step) with every step clipped
    (the norm of the synchronised gradients)."""
    import numpy as np

    from replicator.core.scoring.row_predictions import read_row_predictions

    one_dir, one, _ = _run(["train.grad_accum=2", *budget])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "replicator.core.cli", "run", str(RECIPES / "smoke.yaml"), *QUICK, "train.grad_accum=1",
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
