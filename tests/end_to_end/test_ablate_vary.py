"""``replicate ablate --vary key.path=v1,v2``: ad-hoc variants, one per value, each named by its override in
the report (a value equal to the base's is the base, not run twice), and ``replicate report`` on the
recipe's folder afterwards picks the ablation's base, not the alphabetically first run."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from replicator.core.cli import app
from replicator.core.config.toggles import SHARED
from replicator.core.errors import ReplicatorError
from replicator.core.run import fingerprint
from replicator.core.run.ablate import default_out_dir, parse_vary, plan_ablation

from ..conftest import BASELINE, CPU


def test_parse_vary():
    assert parse_vary("train.lr=1e-4,2e-4") == ["train.lr=1e-4", "train.lr=2e-4"]
    assert parse_vary("model.lora.targets=[q_proj,v_proj],all-linear") == [
        "model.lora.targets=[q_proj,v_proj]", "model.lora.targets=all-linear"]
    assert parse_vary('predict.note="a,b",c') == ['predict.note="a,b"', "predict.note=c"]
    for bad, what in (("train.lr", "expected key.path=value1"), ("=1,2", "expected key.path"),
                      ("train.lr=1e-4,", "an empty value"), ("train.lr=1,1", "repeated")):
        with pytest.raises(ReplicatorError, match=what):
            parse_vary(bad)
    out = default_out_dir("r", ["swap"], [0], varies=["model.base=/a/b"])
    assert out.name == "ablation-swap+model.base=_a_b-s0"  # no path separator in a folder name


def test_vary_runs_one_variant_per_value_named_by_its_override(isolated, monkeypatch):
    # run ids hash the code on disk: fixed here, so that files edited elsewhere while this test runs cannot
    # change them between the plan and the runs (as in test_ablate.py)
    monkeypatch.setattr(fingerprint, "code_hash", lambda folders=None: "code-under-test")
    args = ["ablate", str(BASELINE), "-b", "tiny", "--vary", "train.max_rows=48,64", "--seeds", "0"]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    assert "train.max_rows=64: the base's value, so the base stands for it (not run twice)" in out.output
    assert "train.max_rows=48: the base with train.max_rows=48  [train.max_rows: 64 -> 48]" in out.output
    (folder,) = (isolated / "reports" / "baseline_length").glob("ablation-train.max_rows=48-s0-on-tiny")
    report = json.loads((folder / "report.json").read_text())
    assert [v["name"] for v in report["variants"]] == ["baseline_length +tiny",
                                                       "baseline_length +tiny train.max_rows=48"]
    variant = report["variants"][1]
    assert variant["about"] == [{"label": "train.max_rows=48", "about": "the base with train.max_rows=48",
                                 "direction": None, "changes": [], "kind": "override", "claimed": ""}]
    assert variant["config_changes"] == [{"key": "train.max_rows", "base": 64, "variant": 48}]
    assert variant["gain"] is None and variant["delta"] is not None
    manifest = json.loads((folder / "ablation.json").read_text())
    assert [v["label"] for v in manifest["variants"]] == ["train.max_rows=48"]
    md = (folder / "report.md").read_text()
    row = "| baseline_length +tiny train.max_rows=48 | train.max_rows=48 | the base with train.max_rows=48 |"
    assert row in md

    # the same runs through `replicate report`: the base is the ablation's (both have the same toggles), and
    # the variant is named by the setting it changed
    out = CliRunner().invoke(app, ["report", str(isolated / "reports" / "baseline_length"), "-o",
                                   str(isolated / "again")])
    assert out.exit_code == 0, out.output
    again = json.loads((isolated / "again" / "report.json").read_text())
    assert again["base_runs"] == report["base_runs"]
    assert [v["name"] for v in again["variants"]] == ["baseline_length +tiny",
                                                      "baseline_length +tiny train.max_rows=48"]


def test_vary_errors(isolated):
    with pytest.raises(ReplicatorError, match="set the base's own values: nothing to measure"):
        plan_ablation(BASELINE, [], [0], ["tiny"], vary=["train.max_rows=64"])
    with pytest.raises(ReplicatorError, match="give at least one --toggle or --vary"):
        plan_ablation(BASELINE, [], [0], ["tiny"])
    with pytest.raises(ReplicatorError, match="is given twice"):
        plan_ablation(BASELINE, [], [0], ["tiny"], vary=["train.max_rows=48", "train.max_rows=48,32"])


def test_list_prints_each_recipe_toggle_with_its_direction_and_description():
    out = CliRunner().invoke(app, ["ablate", str(CPU), "--list"])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    lm_off = "  lm_off           off  without the language model's features (length and style features only)"
    assert lm_off in lines
    assert "  mt_bench         on   MT-bench human judgments as extra training rows" in lines
    tiny = "  tiny             -    the whole pipeline on tiny random models"
    assert any(line.startswith(tiny) for line in lines)
    # the write-ups' claim under a toggle that has one (temperature: the shared toggle a frozen-feature
    # recipe can flip), none under one without
    at = lines.index(next(x for x in lines if x.startswith("  temperature ")))
    assert lines[at + 1] == " " * 24 + "write-ups claim: " + SHARED["temperature"].claimed
    assert not lines[lines.index(lm_off) + 1].strip().startswith("write-ups claim")
