"""Hostile paths (issue 24, paths that stay where they belong): a recipe name that climbs out of the reports
folder or is absolute writes nowhere, and ``replicate predict -o`` may be neither its test file (by any
spelling, link or hard link) nor a file of the run it predicts with. Each case: exit 2, one ``error:`` line
naming the path, no model loaded, and not one byte changed anywhere under the test's folder."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import yaml

from replicator.core.errors import ReplicatorError
from replicator.core.run.submission import not_an_input

from ..conftest import QUICK, SMOKE
from .helpers import assert_refused, invoke, tree


@pytest.mark.parametrize("name", ["../../../escape", "ABSOLUTE"])
def test_a_recipe_name_that_is_a_path_writes_nothing_anywhere(name, tmp_path, isolated, monkeypatch):
    """``REPLICATOR_REPORTS`` three folders down: ``../../../escape`` would be ``tmp_path/escape`` (it was the
    filesystem root from ``reports/``); an absolute name would be that folder itself."""
    deep = tmp_path / "a" / "b" / "reports"
    monkeypatch.setenv("REPLICATOR_REPORTS", str(deep))
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "escape" if name != "ABSOLUTE" else tmp_path / "outside"
    name = str(target) if name == "ABSOLUTE" else name
    cfg = yaml.safe_load(SMOKE.read_text(encoding="utf-8"))
    cfg["name"] = name
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    before = tree(tmp_path)
    for args in (["run", recipe, *QUICK], ["ablate", recipe, "-b", "tiny", "-t", "tta"]):
        assert_refused(invoke(args), f"{recipe}: name: {name!r} is not a name")
    assert not target.exists() and not deep.exists()
    assert tree(tmp_path) == before


def _copy_run(finished_run, isolated, synthetic_data_dir):
    """A copy of a finished tiny run under ``isolated``, and a test file beside it: (run folder, its artifacts
    folder, test file)."""
    root, rel = finished_run
    for sub in ("reports", "artifacts"):
        shutil.rmtree(isolated / sub, ignore_errors=True)
        shutil.copytree(root / sub, isolated / sub)
    test = isolated / "data" / "test.csv"
    test.parent.mkdir()
    shutil.copy(synthetic_data_dir / "lmsys-chatbot-arena" / "test.csv", test)
    run_dir = isolated / rel
    return run_dir, isolated / "artifacts" / "smoke" / run_dir.name, test


@pytest.fixture()
def predict_case(finished_run, isolated, synthetic_data_dir, no_model):
    """:func:`_copy_run`, and no model may load."""
    return _copy_run(finished_run, isolated, synthetic_data_dir)


INSIDE = "is inside the run's folder"
#: case -> (the -o path, from the run folder, its artifacts folder and the test file; words of the error)
OUTPUTS = {
    "the test file": (lambda run, art, test: test, "is the test file"),
    "the test file by another spelling": (lambda run, art, test: test.parent / ".." / "data" / "test.csv",
                                          "is the test file"),
    "a link to the test file": (lambda run, art, test: _link(test, test.parent / "link.csv", os.symlink),
                                "is the test file"),
    "a hard link to the test file": (lambda run, art, test: _link(test, test.parent / "hard.csv", os.link),
                                     "is the test file"),
    "the run's metrics.json": (lambda run, art, test: run / "metrics.json", INSIDE),
    "a new file in the run folder": (lambda run, art, test: run / "submission.csv", INSIDE),
    "a file in the run's artifacts": (lambda run, art, test: art / "main" / "submission.csv", INSIDE),
    "the run's weights": (lambda run, art, test: art / "main" / "final.safetensors", INSIDE),
}


def _link(src, dst, how):
    how(src, dst)
    return dst


@pytest.mark.parametrize("case", list(OUTPUTS))
def test_predict_refuses_an_output_that_is_its_input_or_a_run_file(case, predict_case, isolated):
    run_dir, art, test = predict_case
    make, words = OUTPUTS[case]
    out = make(run_dir, art, test)
    before = tree(isolated)
    line = assert_refused(invoke(["predict", run_dir, test, "-o", out]), f"submission file (--out) {out}: ",
                          words)
    assert f"test file {test}" in line if words == "is the test file" else str(run_dir.name) in line
    assert tree(isolated) == before  # the test file, the run, everything as it was


def test_predict_may_write_beside_the_run_and_the_test_file(finished_run, isolated, synthetic_data_dir):
    """The checks refuse the input and the run's own files only: a submission in the recipe's reports
    folder, beside the run folder, or beside the test file, is written."""
    run_dir, _, test = _copy_run(finished_run, isolated, synthetic_data_dir)
    for out in (run_dir.parent / "submission.csv", test.parent / "submission.csv"):
        res = invoke(["predict", run_dir, test, "-o", out])
        assert res.exit_code == 0, res.output
        assert out.read_text().startswith("id,winner_model_a,winner_model_b,winner_tie\n")


def test_a_combinations_member_runs_are_its_files_too(tmp_path, monkeypatch):
    """A fold or ensemble combination predicts with its member runs: their folders (found by the run ids its
    fingerprint names) are refused as outputs like its own."""
    monkeypatch.setenv("REPLICATOR_REPORTS", str(tmp_path / "reports"))
    monkeypatch.setenv("REPLICATOR_ARTIFACTS", str(tmp_path / "artifacts"))
    combo = tmp_path / "reports" / "r" / "folds-0123abcd"
    member = tmp_path / "reports" / "r" / "r-89abcdef-s0"
    member_art = tmp_path / "artifacts" / "r" / "r-89abcdef-s0" / "main"
    for d in (combo, member, member_art):
        d.mkdir(parents=True)
    (combo / "fingerprint.json").write_text(json.dumps(
        {"run_id": "folds-0123abcd", "recipe": "r", "members": {"fold0": "r-89abcdef-s0"}}))
    test = tmp_path / "test.csv"
    test.write_text("id\n")
    combo_art = tmp_path / "artifacts" / "r" / "folds-0123abcd"
    for out in (member / "x.csv", member_art / "x.csv", combo_art / "w.csv", combo / "metrics.json"):
        with pytest.raises(ReplicatorError, match=INSIDE):
            not_an_input(out, test, combo)
    not_an_input(tmp_path / "reports" / "r" / "submission.csv", test, combo)  # beside them: fine
    (combo / "fingerprint.json").write_text("{garbage")  # damaged: the folder itself still counts
    with pytest.raises(ReplicatorError, match=INSIDE):
        not_an_input(combo / "x.csv", test, combo)
