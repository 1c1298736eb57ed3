"""``replicate ablate``: the plan, the runs (reused on a second invocation), the report."""

from __future__ import annotations

import json
import re
import statistics

import pytest
from typer.testing import CliRunner

from replicator.core.cli import app
from replicator.core.errors import RecipeError, ReplicatorError
from replicator.core.run import ablate, fingerprint, pipeline
from replicator.core.run.ablate import estimate_seconds, parse_seeds, plan_ablation, run_seconds

from .conftest import RECIPES, ROOT

SMOKE = RECIPES / "smoke.yaml"
ARGS = [str(SMOKE), "-b", "tiny", "--toggle", "swap", "--toggle", "tta", "--seeds", "0,1", "--set",
        "train.max_rows=32"]
PLAN_LINE = re.compile(r"^  (base|swap:off|tta:off)\s+seed (\d)\s+(smoke-[0-9a-f]{8}-s\d)\s+"
                       r"(exists: reuse|will compute|will predict \(base's training\))"
                       r"\s+est\. (.+)$", re.M)


def test_plan_lists_every_run_before_anything_runs(isolated):
    p = plan_ablation(SMOKE, ["swap", "tta"], [0, 1], ["tiny"])
    assert [(r.label, r.seed) for r in p.runs] == [(v, s) for s in (0, 1)
                                                   for v in ("base", "swap:off", "tta:off")]
    assert len({r.run_id for r in p.runs}) == 6 and all(r.run_id.endswith(f"-s{r.seed}") for r in p.runs)
    assert [r.resolved.toggles for r in p.runs[:3]] == [["tiny"], ["tiny", "swap:off"], ["tiny", "tta:off"]]
    assert all(r.resolved.seed == r.seed and not r.exists and r.estimate is None for r in p.runs)
    assert p.out_dir == isolated / "reports" / "smoke" / "ablation-swap+tta-s0-1-on-tiny"
    text = p.text()
    assert len(PLAN_LINE.findall(text)) == 6 and text.count("will compute") == 4 and "est. unknown" in text
    # swap TTA off changes prediction only: that variant reuses its base's training (core/steps.py)
    assert [r.shares_training for r in p.runs] == [False, False, True] * 2
    assert text.count("will predict (base's training)") == 2
    assert ("swap:off: removing swap augmentation in training" in text
            and "plugins.swap.train: random -> none" in text)
    assert "0 to reuse, 6 to compute, estimated unknown" in text
    assert not (isolated / "reports" / "smoke").exists()  # planning writes nothing


def test_default_recipe_as_typed_and_dry_run(isolated, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = CliRunner().invoke(app, ["ablate", "--toggle", "swap", "--dry-run"])
    assert out.exit_code == 0, out.output
    assert "ablation of recipes/smoke.yaml (smoke): 2 runs, seeds 7" in out.output  # the recipe's own seed
    assert len(PLAN_LINE.findall(out.output)) == 2
    assert not (isolated / "reports" / "smoke").exists()
    listed = CliRunner().invoke(app, ["ablate", "--list"])
    assert listed.exit_code == 0 and re.search(r"swap\s+off\s+removing swap augmentation", listed.output)
    assert re.search(r"head_reinit\s+n/a\s+needs a stage", listed.output)


@pytest.mark.parametrize("args, words", [
    (["--toggle", "head_reinit"], f"{SMOKE}: toggle 'head_reinit': cannot apply to this recipe"),
    (["--toggle", "swap", "--toggle", "swap"], "--toggle swap is given twice"),
    (["-b", "tiny", "--toggle", "tiny"], "--toggle tiny is also a base toggle"),
    (["--toggle", "swap", "--seeds", "0,x"], "--seeds '0,x': 'x' is not an integer"),
    ([], "give at least one --toggle"),
    (["--toggle", "swap", "--set", "plugins.swap.train=none"], "toggle 'swap' changes nothing"),
])
def test_ablate_errors_name_what_is_wrong(isolated, args, words):
    out = CliRunner().invoke(app, ["ablate", str(SMOKE), "--dry-run", *args])
    assert out.exit_code == 2 and words in out.output, out.output
    assert not (isolated / "reports" / "smoke").exists()


def test_parse_seeds_and_unknown_base_toggle(isolated):
    assert parse_seeds("0, 1,2") == [0, 1, 2] and parse_seeds(None) is None
    with pytest.raises(ReplicatorError, match="repeated"):
        parse_seeds("1,1")
    with pytest.raises(RecipeError, match="toggles.tinny: unknown toggle .did you mean 'tiny'"):
        plan_ablation(SMOKE, ["swap"], [0], ["tinny"])


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
    forced = plan_ablation(SMOKE, ["swap"], [0], ["tiny"], ["train.max_rows=32"], force=True)
    assert [r.status(True) for r in forced.runs] == ["exists: recompute (--force)"] * 2

    data_regression.check(_numbers(report))
