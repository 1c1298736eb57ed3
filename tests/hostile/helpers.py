"""What every hostile case asserts: the command's exit code 2 and one ``error: FILE: ...`` line naming the
key, no traceback, and no run output written (issue 24)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from typer.testing import CliRunner

from replicator.core.cli import app


def invoke(args: list[str]):
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_refused(out, *words: str) -> str:
    """Exit 2 through the command's error path (not an exception), an ``error:`` line holding every word;
    returns that line."""
    assert out.exit_code == 2, out.output
    assert out.exception is None or isinstance(out.exception, SystemExit), repr(out.exception)
    assert "Traceback" not in out.output, out.output
    lines = [line for line in out.output.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, out.output
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


def tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` (links not followed) -> sha256 of its bytes: what a case must not change."""
    out = {}
    for p in sorted(Path(root).rglob("*")):
        if p.is_file() and not p.is_symlink():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
        elif p.is_symlink():
            out[str(p.relative_to(root))] = f"-> {p.readlink()}"
    return out


def run_outputs(root: Path) -> list[str]:
    """Files a run leaves under ``root``'s reports and artifacts folders (a released lock file aside)."""
    return [k for k in tree(root) if k.split("/")[0] in ("reports", "artifacts") and not k.endswith(".lock")]


def outside(root: Path) -> dict[str, str]:
    """:func:`tree` of ``root`` without the run's reports and artifacts folders: what a case that may
    (re)compute a run must leave as it was."""
    return {k: v for k, v in tree(root).items() if k.split("/")[0] not in ("reports", "artifacts")}
