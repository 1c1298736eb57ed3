"""Input and output folders checked before anything else (core/util/path_checks.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from replicator.core.errors import ReplicatorError

from ..conftest import QUICK, RECIPES
from ..smoke_runs import _files, _run


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
