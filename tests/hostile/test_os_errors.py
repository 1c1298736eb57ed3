"""One error path for the operating system (issue 24): a file that cannot be written, whichever command
writes it, ends as ``error: FILE: reason`` (exit 2) naming the file, with no traceback, and leaves nothing
half-written (every write is a temp file renamed; a report's three files land together or not at all).
Output folders are checked before any work: ``report -o`` and ``ablate -o`` onto a file or a read-only folder
fail before a run is computed or a report is built.

A full disk is simulated by making the write of one temp file raise ``OSError(ENOSPC)`` with no file name,
as ``write()`` does; a read-only folder by making the creation of a file in it raise ``PermissionError``
(tests run as root too, where permissions do not stop writes)."""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path

import pytest

from .helpers import assert_refused, invoke, outside, run_outputs, tree

NO_SPACE = os.strerror(errno.ENOSPC)  # "No space left on device"


def _disk_full_for(monkeypatch, name: str) -> None:
    """Writing the temp file of ``name`` (``.<name>.<random>.tmp``) fails as on a full disk: ENOSPC, no file
    name in the error (what ``write()`` raises)."""
    for method in ("write_text", "write_bytes"):
        write = getattr(Path, method)

        def full(self, *a, _write=write, **k):
            if self.name.startswith(f".{name}.") and self.name.endswith(".tmp"):
                raise OSError(errno.ENOSPC, NO_SPACE)
            return _write(self, *a, **k)

        monkeypatch.setattr(Path, method, full)


def _read_only(monkeypatch, folder: Path) -> None:
    """``folder`` read-only: its mode, and for root (whom the mode does not stop) any file created in it
    raises ``PermissionError`` as a read-only mount would."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o555)
    mkstemp = tempfile.mkstemp

    def refuse(*a, dir=None, **k):
        if dir is not None and Path(dir).resolve() == folder.resolve():
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(Path(dir) / "x.tmp"))
        return mkstemp(*a, dir=dir, **k)

    monkeypatch.setattr(tempfile, "mkstemp", refuse)


@pytest.fixture()
def finished(tiny_copy):
    recipe, run_dir, _, _ = tiny_copy
    return recipe, run_dir


# ---------------------------------------------------------------- report -o


def test_report_onto_an_existing_file_is_refused_before_the_report_is_built(finished, isolated):
    _, run_dir = finished
    target = isolated / "notes.txt"
    target.write_text("mine\n")
    for out in (target, target / "sub"):  # the file itself, or a folder inside it
        before = tree(isolated)
        assert_refused(invoke(["report", run_dir, "-o", out]), f"{out}: {target} is a file, not a folder")
        assert tree(isolated) == before


def test_report_into_a_read_only_folder_is_refused_before_the_report_is_built(finished, isolated,
                                                                             monkeypatch):
    _, run_dir = finished
    folder = isolated / "ro"
    _read_only(monkeypatch, folder)
    before = tree(isolated)
    line = assert_refused(invoke(["report", run_dir, "-o", folder]), f"report folder (-o) {folder}:")
    assert "ermission denied" in line, line
    assert tree(isolated) == before and list(folder.iterdir()) == []


@pytest.mark.parametrize("earlier", [False, True], ids=["new folder", "over an earlier report"])
def test_report_on_a_full_disk_names_the_file_and_leaves_no_half_report(earlier, finished, isolated,
                                                                       monkeypatch):
    _, run_dir = finished
    folder = isolated / "cmp"
    if earlier:
        assert invoke(["report", run_dir, "-o", folder]).exit_code == 0
        (folder / "report.md").write_text("the earlier report\n")  # to tell it from a new one
    before = tree(isolated)
    _disk_full_for(monkeypatch, "report.md")
    assert_refused(invoke(["report", run_dir, "-o", folder]), f"{folder / 'report.md'}: {NO_SPACE}")
    assert tree(isolated) == before  # the earlier report whole (no new report.json beside it), no temp file
    assert sorted(p.name for p in folder.iterdir()) == (["report.html", "report.json", "report.md"]
                                                         if earlier else [])


# ---------------------------------------------------------------- ablate -o


@pytest.mark.parametrize("what", ["a file", "a folder inside a file", "a read-only folder"])
def test_ablate_with_an_output_it_cannot_write_fails_before_any_run(what, tmp_path, isolated, monkeypatch,
                                                                   no_model):
    from .conftest import HOSTILE_RECIPE

    recipe = tmp_path / "hostile.yaml"
    recipe.write_text(HOSTILE_RECIPE, encoding="utf-8")
    note = tmp_path / "notes.txt"
    note.write_text("mine\n")
    out = {"a file": note, "a folder inside a file": note / "sub",
           "a read-only folder": tmp_path / "ro"}[what]
    if what == "a read-only folder":
        _read_only(monkeypatch, out)
    before = tree(tmp_path)
    line = assert_refused(invoke(["ablate", recipe, "-t", "tta", "-o", out]), f"report folder (-o) {out}:")
    assert ("is a file, not a folder" if what != "a read-only folder" else "ermission denied") in line, line
    assert run_outputs(tmp_path) == [] and tree(tmp_path) == before


# ---------------------------------------------------------------- run and predict on a full disk


def test_a_run_on_a_full_disk_names_the_file_and_the_rerun_finishes_it(finished, isolated, monkeypatch):
    recipe, run_dir = finished
    metrics = json.loads((run_dir / "metrics.json").read_text())
    (run_dir / "metrics.json").unlink()  # the run must write it again
    keep = outside(isolated)
    with monkeypatch.context() as m:
        _disk_full_for(m, "metrics.json")
        out = invoke(["run", recipe])
    assert_refused(out, f"{run_dir / 'metrics.json'}: {NO_SPACE}")
    assert not (run_dir / "metrics.json").exists() and (run_dir / "failed.json").is_file()
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]
    assert outside(isolated) == keep
    again = invoke(["run", recipe])
    assert again.exit_code == 0 and f"finished: {run_dir}" in again.output, again.output
    assert json.loads((run_dir / "metrics.json").read_text())["final_log_loss"] == metrics["final_log_loss"]


def test_trained_weights_on_a_full_disk_name_the_file_and_the_rerun_trains_them(tiny_copy, isolated,
                                                                                monkeypatch):
    """safetensors reports a full disk as its own error class (``I/O error: ... (os error 28)``): it becomes
    the OSError it stands for, naming the weights file."""
    import safetensors.torch

    recipe, _, _, steps = tiny_copy
    keep = outside(isolated)
    save_file = safetensors.torch.save_file

    def full(tensors, filename, metadata=None):
        if Path(filename).name.startswith(".final.safetensors."):
            raise RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")
        return save_file(tensors, filename, metadata=metadata)

    with monkeypatch.context() as m:
        m.setattr(safetensors.torch, "save_file", full)
        out = invoke(["run", recipe, "train.lr=1e-3"])  # another train key: it trains
    line = assert_refused(out, f"/final.safetensors: {NO_SPACE}")
    assert str(steps) in line, line
    assert outside(isolated) == keep
    again = invoke(["run", recipe, "train.lr=1e-3"])
    assert again.exit_code == 0 and "finished:" in again.output, again.output


def test_a_checkpoint_on_a_full_disk_names_the_file(tmp_path, monkeypatch):
    """torch.save reports a failed write as a RuntimeError about zip positions; with the disk full it becomes
    ``OSError: [Errno 28] No space left on device: FILE``, and no temp file stays."""
    import shutil

    import torch

    from replicator.core.util import atomic

    def fails(obj, f, *a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(torch, "save", fails)
    monkeypatch.setattr(atomic.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9, 0))
    with pytest.raises(OSError) as e:
        atomic.atomic_torch_save({"a": 1}, tmp_path / "checkpoint.pt")
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(tmp_path / "checkpoint.pt")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(torch, "save", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("a bug, not I/O")))
    with pytest.raises(RuntimeError, match="a bug"):  # not every error of a serializer is a disk's
        atomic.atomic_torch_save({"a": 1}, tmp_path / "checkpoint.pt")


def test_predict_on_a_full_disk_names_the_submission_and_writes_none(finished, isolated, synthetic_data_dir,
                                                                   monkeypatch):
    _, run_dir = finished
    sub = isolated / "out" / "submission.csv"
    sub.parent.mkdir()
    before = outside(isolated)  # the token cache under artifacts/ may grow
    _disk_full_for(monkeypatch, "submission.csv")
    out = invoke(["predict", run_dir, synthetic_data_dir / "lmsys-chatbot-arena" / "test.csv", "-o", sub])
    assert_refused(out, f"{sub}: {NO_SPACE}")
    assert outside(isolated) == before and list(sub.parent.iterdir()) == []
