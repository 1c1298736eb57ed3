"""``replicate ablate`` end to end: the runs, reused on a second invocation, and the report (its numbers
pinned under tests/end_to_end/test_ablate/)."""

from __future__ import annotations

import json
import statistics

import pytest
from typer.testing import CliRunner

from replicator.core.cli import app
from replicator.core.run import ablate, fingerprint, pipeline
from replicator.core.run.ablate import estimate_seconds, plan_ablation, run_seconds

from ..conftest import SINGLE_SPLIT, SMOKE
from ..helpers import PLAN_LINE

#: smoke's single-split fine-tuning (its cross-fitted form reuses no trained step:
#: tests/end_to_end/test_crossfit.py)
SINGLE = [*SINGLE_SPLIT, "train.batch_size=4", "predict.batch_tokens=4096"]
ARGS = [str(SMOKE), "-b", "tiny", "--toggle", "swap", "--toggle", "tta", "--seeds", "0,1", "--set",
        "train.max_rows=32", "--set", "model.dtype=float32",  # fp32 stated: the pinned numbers are fp32's
        *[a for s in SINGLE for a in ("--set", s)]]


def _numbers(report: dict) -> dict:
    """The numbers of report.json (no run ids, no wall times), floats rounded to 6 decimals."""
    def r(x):
        return round(x, 6) if isinstance(x, float) else x

    def delta(d):
        return None if d is None else {k: r(d[k]) for k in ("delta", "lo", "hi", "p_better", "n_rows",
                                                            "n_groups", "n_seeds")}

    return {
        "base": report["base"],
        "variants": [{"name": v["name"], "seeds": v["seeds"], "log_loss": r(v["log_loss"]),
                      "log_loss_sd": r(v["log_loss_sd"]),
                      "accuracy": r(v["accuracy"]), "ece": r(v["ece"]), "n_rows": r(v["n_rows"]),
                      "delta": delta(v["delta"]), "verdict": v["verdict"]} for v in report["variants"]],
        "references": [{"name": v["name"], "log_loss": r(v["log_loss"]), "delta": delta(v["delta"]),
                        "verdict": v["verdict"]} for v in report["references"]],
    }


def test_ablation_runs_then_reuses_everything_and_rewrites_the_same_report(isolated, monkeypatch,
                                                                           data_regression):
    # run ids hash the code on disk: fixed here, so that files edited elsewhere while this test runs
    # (a developer's editor) cannot change them between the plan, the runs and the second invocation
    monkeypatch.setattr(fingerprint, "code_hash", lambda folders=None: "code-under-test")
    calls = []
    real = pipeline.run_recipe

    def recording(resolved, data_dir, force=False, progress=True):
        out = real(resolved, data_dir, force=force, progress=progress)
        calls.append((resolved.toggles, resolved.seed, out[2]))
        return out

    monkeypatch.setattr(ablate, "run_recipe", recording)  # ablate calls the runner it imported
    first = CliRunner().invoke(app, ["ablate", *ARGS])
    assert first.exit_code == 0, first.output
    lines = PLAN_LINE.findall(first.output)
    assert [(v, int(s), status) for v, s, _, status, _ in lines] == \
        [(v, s, "will predict (base's training)" if v == "tta:off" else "will compute") for s in (0, 1)
         for v in ("base", "swap:off", "tta:off")]
    # six new runs, of which the two tta:off ones trained nothing:
    assert [c[2] for c in calls] == [False] * 6
    for run_id in [line[2] for line in lines]:
        stage = json.loads(
            (isolated / "reports" / "smoke" / run_id / "metrics.json").read_text())["stages"]["main"]
        tta_off = run_id in (lines[2][2], lines[5][2])
        assert stage["train_reused"] == tta_off  # the base's weights, and its identity-view predictions
        assert stage["views_reused"] == (["identity"] if tta_off else [])
    assert [(c[0], c[1]) for c in calls[:3]] == [(["tiny"], 0), (["tiny", "swap:off"], 0),
                                                 (["tiny", "tta:off"], 0)]
    (out_dir,) = (isolated / "reports" / "smoke").glob("ablation-swap+tta-s0-1-on-tiny-set*")
    files = {f: (out_dir / f).read_bytes()
             for f in ("report.md", "report.html", "report.json", "ablation.json")}
    report = json.loads(files["report.json"])
    assert [v["name"] for v in report["variants"]] == ["smoke +tiny", "smoke +tiny +swap:off",
                                                       "smoke +tiny +tta:off"]
    assert report["base_runs"] == [lines[0][2], lines[3][2]]
    manifest = json.loads(files["ablation.json"])
    assert [v["label"] for v in manifest["variants"]] == ["swap:off", "tta:off"]
    assert manifest["variants"][1]["measures"].startswith("removing swap test-time augmentation")
    assert [r["run_id"] for r in manifest["runs"]] == [line[2] for line in lines]

    calls.clear()
    second = CliRunner().invoke(app, ["ablate", *ARGS])
    assert second.exit_code == 0, second.output
    again = PLAN_LINE.findall(second.output)
    assert [(v, s, rid) for v, s, rid, _, _ in again] == [(v, s, rid) for v, s, rid, _, _ in lines]
    assert [status for _, _, _, status, _ in again] == ["exists: reuse"] * 6
    assert [c[2] for c in calls] == [True] * 6  # nothing trained
    for f, content in files.items():
        assert (out_dir / f).read_bytes() == content, f

    # the estimate is the median wall time of the finished runs with the same recipe toggles
    seconds = [run_seconds(json.loads(m.read_text()))
               for m in (isolated / "reports" / "smoke").glob("*/metrics.json")]
    assert len(seconds) == 6 and all(s is not None for s in seconds) and sum(s > 0 for s in seconds) >= 4
    assert estimate_seconds("smoke", ["tiny"]) == pytest.approx(statistics.median(seconds))
    assert estimate_seconds("smoke", []) is None  # tiny runs say nothing about full ones
    forced = plan_ablation(SMOKE, ["swap"], [0], ["tiny"],
                           ["train.max_rows=32", "model.dtype=float32", *SINGLE], force=True)
    assert [r.status(True) for r in forced.runs] == ["exists: recompute (--force)"] * 2

    data_regression.check(_numbers(report))
