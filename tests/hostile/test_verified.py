"""Every output verified before it is trusted (issue 24): a finished run's ``manifest.json`` records the
sha256 of every file it wrote, and

* ``replicate run`` on a damaged run recomputes (never ``reused:``), warns naming the damaged file and puts
  back the numbers and files of the run that finished;
* ``replicate predict`` and ``replicate report`` refuse a damaged file, named: ``error: FILE: changed since
  the run finished (sha256 mismatch); rerun `replicate run ...` to rebuild it`` (exit 2);
* ``report`` refuses a folder whose last attempt failed or that never finished, and reads a run made before
  manifests with a warning (``unverified``).

Each case copies one finished tiny run (hard links kept, as a run leaves them: its weights are a hard link of
the cached train step) and damages it as a failing disk or a hand edit would."""

from __future__ import annotations

import gzip
import hashlib
import json
import struct
import subprocess
from pathlib import Path

import pytest

from replicator.core.util.manifest import MANIFEST

from ..conftest import QUICK, SMOKE
from .helpers import assert_refused, invoke, tree

#: the run id's code hash fixed while the module runs (tests/hostile/conftest.py): a rerun finds the same run
#: whatever else changes in the working tree meanwhile
pytestmark = pytest.mark.usefixtures("pinned_code")

CHANGED = "changed since the run finished (sha256 mismatch)"
GONE = "missing since the run finished"
#: metrics that depend on the clock or on which steps were reused, not on what the run computed
CLOCK = ("seconds", "train_tokens_per_second", "resumed_at_step", "train_seconds", "train_reused",
         "views_reused")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _numbers(m: dict) -> dict:
    out = {k: v for k, v in m.items() if k not in CLOCK and k != "stages"}
    out["stages"] = {s: {k: v for k, v in r.items() if k not in CLOCK} for s, r in m["stages"].items()}
    return out


@pytest.fixture()
def run_copy(finished_run, isolated):
    """A copy of the finished tiny run under ``isolated`` (``cp -a``: hard links stay hard links): (run
    folder, its final stage's artifacts folder)."""
    root, rel = finished_run
    for sub in ("reports", "artifacts"):
        subprocess.run(["cp", "-a", str(root / sub), str(isolated / sub)], check=True)
    run_dir = isolated / rel
    return run_dir, isolated / "artifacts" / "smoke" / run_dir.name / "main"


def _garbage(path: Path) -> None:
    path.write_bytes(b"\x00garbage\xff" * 7)


def _edit_weights(path: Path) -> None:
    """10 float32 values of the first float32 tensor set to 0.5, in place: the size and the header stay."""
    with open(path, "r+b") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        start = next(v["data_offsets"][0] for k, v in sorted(header.items())
                     if k != "__metadata__" and v["dtype"] == "F32"
                     and v["data_offsets"][1] - v["data_offsets"][0] >= 40)
        f.seek(8 + n + start)
        f.write(struct.pack("<10f", *[0.5] * 10))


def _edit_metrics(path: Path) -> None:
    m = json.loads(path.read_text())
    m["final_log_loss"] = m["log_loss"] = m["tta_log_loss"] = 0.01
    path.write_text(json.dumps(m, indent=2))


def _edit_row_predictions(path: Path) -> None:
    """One probability of the final view changed, still a valid gzip CSV."""
    lines = gzip.decompress(path.read_bytes()).decode().splitlines()
    head, row = lines[0].split(","), lines[1].split(",")
    col = next(i for i, h in enumerate(head) if h.startswith("final"))
    row[col] = "0.999"
    lines[1] = ",".join(row)
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0))


#: case -> (the damaged file, from (run folder, stage artifacts folder); how it is damaged)
DAMAGE = {
    "row predictions deleted": (lambda run, art: run / "valid_predictions.csv.gz", Path.unlink),
    "row predictions garbage": (lambda run, art: run / "valid_predictions.csv.gz", _garbage),
    "row predictions edited": (lambda run, art: run / "valid_predictions.csv.gz", _edit_row_predictions),
    "resolved.yaml deleted": (lambda run, art: run / "resolved.yaml", Path.unlink),
    "fingerprint.json garbage": (lambda run, art: run / "fingerprint.json", _garbage),
    "weights edited, same size": (lambda run, art: art / "final.safetensors", _edit_weights),
    "metrics.json edited": (lambda run, art: run / "metrics.json", _edit_metrics),
    "manifest.json garbage": (lambda run, art: run / MANIFEST, _garbage),
    "stage predictions edited": (lambda run, art: art / "valid_predictions.json",
                                 lambda p: p.write_text(p.read_text().replace("0.", "0.9", 1))),
}


# ---------------------------------------------------------------- run: recomputed, repaired, never "reused"


@pytest.mark.parametrize("case", list(DAMAGE))
def test_run_on_a_damaged_run_recomputes_it_and_puts_back_what_it_finished_with(case, run_copy):
    run_dir, art = run_copy
    which, damage = DAMAGE[case]
    target = which(run_dir, art)
    before = json.loads((run_dir / "metrics.json").read_text())
    weights = _sha(art / "final.safetensors")
    damage(target)
    out = invoke(["run", SMOKE, *QUICK])
    assert out.exit_code == 0, out.output
    assert f"finished: {run_dir}" in out.output and "reused:" not in out.output, out.output
    assert "0.0100" not in out.output  # an edited metrics.json is never the printed result
    warned = [line for line in out.output.splitlines() if target.name in line and ("recomput" in line)]
    assert warned, out.output  # the damaged file is named
    after = json.loads((run_dir / "metrics.json").read_text())
    assert _numbers(after) == _numbers(before)
    assert _sha(art / "final.safetensors") == weights  # the weights are the trained ones again
    assert target.is_file()
    for step in (run_dir.parents[2] / "artifacts" / "smoke" / "steps").glob("main-train-*"):
        assert _sha(step / "final.safetensors") == weights  # the cached step too (it was a hard link)
    again = invoke(["run", SMOKE, *QUICK])
    assert again.exit_code == 0 and f"reused: {run_dir}" in again.output, again.output


# ---------------------------------------------------------------- predict: refused, the file named


#: case -> (the damaged file, how, words of the error besides the file)
PREDICT = {
    "weights edited, same size": (lambda run, art: art / "final.safetensors", _edit_weights, CHANGED),
    "fingerprint.json garbage": (lambda run, art: run / "fingerprint.json", _garbage, CHANGED),
    "stage predictions edited": (*DAMAGE["stage predictions edited"], CHANGED),
    "resolved.yaml edited": (lambda run, art: run / "resolved.yaml",
                             lambda p: p.write_text(p.read_text().replace("lr: ", "lr: 1", 1)), CHANGED),
    "done.json deleted": (lambda run, art: art / "done.json", Path.unlink, GONE),
    "manifest.json deleted": (lambda run, art: run / MANIFEST, Path.unlink, GONE),
    "manifest.json garbage": (lambda run, art: run / MANIFEST, _garbage, "unreadable"),
}


@pytest.mark.parametrize("case", list(PREDICT))
def test_predict_refuses_a_file_that_changed_since_the_run_finished(case, run_copy, isolated,
                                                                   synthetic_data_dir, no_model):
    run_dir, art = run_copy
    which, damage, words = PREDICT[case]
    target = which(run_dir, art)
    damage(target)
    out_csv = isolated / "submission.csv"
    before = tree(isolated)
    out = invoke(["predict", run_dir, synthetic_data_dir / "lmsys-chatbot-arena" / "test.csv", "-o", out_csv])
    assert_refused(out, f"{target}: {words}", "rerun `replicate run ", "to rebuild it")
    assert not out_csv.exists() and tree(isolated) == before


# ---------------------------------------------------------------- report: refused, the file named


REPORT = {
    "row predictions deleted": (lambda run: run / "valid_predictions.csv.gz", Path.unlink, GONE),
    "row predictions garbage": (lambda run: run / "valid_predictions.csv.gz", _garbage, CHANGED),
    "row predictions edited": (lambda run: run / "valid_predictions.csv.gz", _edit_row_predictions, CHANGED),
    "metrics.json edited": (lambda run: run / "metrics.json", _edit_metrics, CHANGED),
    "fingerprint.json garbage": (lambda run: run / "fingerprint.json", _garbage, CHANGED),
    "resolved.yaml deleted": (lambda run: run / "resolved.yaml", Path.unlink, GONE),
    "manifest.json deleted": (lambda run: run / MANIFEST, Path.unlink, GONE),
}


@pytest.mark.parametrize("case", list(REPORT))
def test_report_refuses_a_file_that_changed_since_the_run_finished(case, run_copy, isolated):
    run_dir, _ = run_copy
    which, damage, words = REPORT[case]
    target = which(run_dir)
    damage(target)
    out = invoke(["report", run_dir, "-o", isolated / "cmp"])
    line = assert_refused(out, f"{target}: {words}", "rerun `replicate run ")
    assert "0.0100" not in out.output and not (isolated / "cmp").exists(), line


def test_report_refuses_a_run_whose_last_attempt_failed_or_that_never_finished(run_copy, isolated):
    run_dir, _ = run_copy
    (run_dir / "failed.json").write_text('{"stage": "main", "error": "OSError"}')
    for arg in (run_dir, run_dir.parent):  # named, or found in its recipe's folder
        assert_refused(invoke(["report", arg, "-o", isolated / "cmp"]), "failed.json", "last attempt",
                       "failed")
    (run_dir / "failed.json").unlink()
    (run_dir / "metrics.json").unlink()
    assert_refused(invoke(["report", run_dir, "-o", isolated / "cmp"]), "metrics.json", "not a finished run")
    assert not (isolated / "cmp").exists()


def test_an_intact_run_is_reported_and_a_run_made_before_manifests_with_a_warning(run_copy, isolated):
    run_dir, _ = run_copy
    ok = invoke(["report", run_dir, "-o", isolated / "cmp"])
    assert ok.exit_code == 0 and "unverified" not in ok.output, ok.output
    # a run made before manifests: no manifest.json, and its fingerprint.json does not say it has one
    (run_dir / MANIFEST).unlink()
    fp = json.loads((run_dir / "fingerprint.json").read_text())
    del fp["manifest"]
    (run_dir / "fingerprint.json").write_text(json.dumps(fp, indent=2))
    old = invoke(["report", run_dir, "-o", isolated / "cmp2"])
    assert old.exit_code == 0, old.output
    assert any(str(run_dir) in line and "unverified: made before manifests" in line
               for line in old.output.splitlines()), old.output
    # ... never reused by `run`: recomputed, and then it has a manifest
    again = invoke(["run", SMOKE, *QUICK])
    assert again.exit_code == 0 and f"finished: {run_dir}" in again.output, again.output
    assert (run_dir / MANIFEST).is_file()
    assert json.loads((run_dir / "fingerprint.json").read_text())["manifest"] == MANIFEST


def test_the_manifest_records_every_file_the_run_wrote(run_copy):
    run_dir, art = run_copy
    m = json.loads((run_dir / MANIFEST).read_text())
    reports = {p.name for p in run_dir.iterdir() if p.is_file() and p.name != MANIFEST}
    assert set(m["reports"]) == reports and {"metrics.json", "fingerprint.json", "resolved.yaml",
                                             "valid_predictions.csv.gz"} <= reports
    stage_files = {f"main/{p.name}" for p in art.iterdir() if p.is_file()} | {"main.manifest.json"}
    assert set(m["artifacts"]) == stage_files and "main/final.safetensors" in stage_files
    for section, folder in (("reports", run_dir), ("artifacts", art.parent)):
        for rel, e in m[section].items():
            assert e == {"sha256": _sha(folder / rel), "bytes": (folder / rel).stat().st_size}, rel


# ---------------------------------------------------------------- a fold combination's folder


def test_a_damaged_fold_combination_is_refused_by_predict_and_report_and_recomputed_by_run(
        isolated, tmp_path, synthetic_data_dir):
    """A ``folds-<hash>`` folder has a manifest like a run: its averaged weights edited in place are refused
    by ``predict``, its edited metrics.json by ``report``, and ``run`` recomputes the combination (only:
    the fold run is intact and reused)."""
    from replicator.core.data.files import data_dir
    from replicator.core.run.combination import plan_combination, run_plan

    from ..helpers import _recipe

    path = _recipe(tmp_path, "fo", folds={"k": 3, "run": [0], "average": "adapters"})

    def run():
        p = plan_combination(path, ["tiny"], [], data_dir=data_dir())
        r = run_plan(p, data_dir(), progress=False)
        return p, r["members"][0][3], r["combinations"][0][2], r["combinations"][0][3]

    p, _, metrics, reused = run()
    assert not reused
    weights, folder = p.artifacts / "final.safetensors", p.run_dir
    _edit_weights(weights)
    test_csv = synthetic_data_dir / "lmsys-chatbot-arena" / "test.csv"
    out = invoke(["predict", folder, test_csv, "-o", tmp_path / "sub.csv"])
    assert_refused(out, f"{weights}: {CHANGED}", "rerun `replicate run ")
    _edit_metrics(folder / "metrics.json")
    report = invoke(["report", folder, "-o", tmp_path / "cmp"])
    assert_refused(report, f"{folder / 'metrics.json'}: {CHANGED}")
    _, member_reused, again, reused = run()
    assert member_reused and not reused and again == metrics
    assert json.loads((folder / "metrics.json").read_text()) == metrics
    assert invoke(["report", folder, "-o", tmp_path / "cmp"]).exit_code == 0
    assert run()[3]  # and now reused
