"""The documented commands work from a folder outside the checkout (the recipes ship with the package)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def _replicate(args: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    exe = shutil.which("replicate") or str(Path(sys.executable).parent / "replicate")
    return subprocess.run([exe, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture
def elsewhere(tmp_path, rich_data_dir):
    env = {**os.environ, "REPLICATOR_DATA_DIR": str(rich_data_dir),
           "REPLICATOR_REPORTS": str(tmp_path / "reports"),
           "REPLICATOR_ARTIFACTS": str(tmp_path / "artifacts")}
    folder = tmp_path / "somewhere"
    folder.mkdir()
    return folder, env


def test_ablate_default_recipe_dry_run_from_another_folder(elsewhere):
    folder, env = elsewhere
    done = _replicate(["ablate", "--toggle", "swap", "--dry-run"], folder, env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "swap" in done.stdout and "smoke" in done.stdout


def test_run_a_shipped_recipe_by_name_from_another_folder(elsewhere):
    folder, env = elsewhere
    done = _replicate(["-q", "run", "2nd", "-t", "tiny"], folder, env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ensemble" in done.stdout and not (folder / "reports").exists()
