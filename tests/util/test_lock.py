"""One process at a time per run (core/util/lock.py)."""

from __future__ import annotations

import os

import pytest

from replicator.core.data.files import data_dir
from replicator.core.errors import ReplicatorError
from replicator.core.run.fingerprint import fingerprint
from replicator.core.util.layout import run_folders
from replicator.core.util.lock import lock_path, run_lock

from ..conftest import QUICK, RECIPES
from ..smoke_runs import _resolved, _run


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
