"""Folds and ensembles end to end on tiny random models and the synthetic rows: fold runs reused when
a fold is added, out-of-fold rows, the averaged adapter and its submission; an ensemble's blend, its
swapped and gated member, reuse of every member when a weight changes, and its submission."""

from __future__ import annotations

import csv
import json

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from replicator.core.cli import app
from replicator.core.data.files import data_dir
from replicator.core.errors import ReplicatorError
from replicator.core.run.combination import plan_combination, run_plan
from replicator.core.run.finished_runs import run_parts, run_probs
from replicator.core.run.submission import predict
from replicator.core.scoring.metrics import log_loss
from replicator.core.scoring.row_predictions import read_row_predictions
from replicator.core.util.layout import ROW_PREDICTIONS

from ..helpers import _recipe

TEST_CSV = ("lmsys-chatbot-arena", "test.csv")


def _run(path, overrides=(), only=()):
    p = plan_combination(path, ["tiny"], list(overrides), data_dir=data_dir())
    return p, run_plan(p, data_dir(), progress=False, only=only)


def _reused(result) -> list[tuple[str, bool]]:
    return [(label, reused) for label, _, _, reused in result["members"]]


def _check_submission(out, test_csv) -> np.ndarray:
    sub, test = pd.read_csv(out), pd.read_csv(test_csv)
    assert list(sub.columns) == ["id", "winner_model_a", "winner_model_b", "winner_tie"]
    assert sub["id"].tolist() == test["id"].tolist()
    probs = sub[["winner_model_a", "winner_model_b", "winner_tie"]].to_numpy()
    assert ((probs >= 0) & (probs <= 1)).all() and (probs.sum(axis=1).round(6) == 1).all()
    return probs


def test_folds_reuse_oof_rows_adapter_average_and_predict(isolated, tmp_path, synthetic_data_dir):
    from safetensors.torch import load_file

    path = _recipe(tmp_path, "fo", folds={"k": 3, "run": [0], "average": "adapters"})
    p1, r1 = _run(path)
    assert _reused(r1) == [("fold0", False)]
    p2, r2 = _run(path, ["folds.run=[0,1]"])  # adding a fold trains that fold only
    assert _reused(r2) == [("fold0", True), ("fold1", False)] and p2.combo_id != p1.combo_id
    kind, folder, metrics, reused = r2["combinations"][0]
    assert kind == "folds" and not reused and folder == p2.run_dir and folder.name.startswith("folds-")
    # out of fold: every fold's validation rows, each once, every view
    parts = [read_row_predictions(m.run_dir / ROW_PREDICTIONS) for m in p2.members()]
    oof = read_row_predictions(folder / ROW_PREDICTIONS)
    assert oof.ids == parts[0].ids + parts[1].ids and len(set(oof.ids)) == len(oof) == 64
    assert np.allclose(oof.views["final"], np.concatenate([p.views["final"] for p in parts]))
    assert metrics["final_log_loss"] == pytest.approx(log_loss(oof.views["final"], oof.labels), abs=1e-9)
    assert metrics["n_valid_rows"] == 64 and "no honest validation score" in metrics["note"]
    assert json.loads((folder / "fingerprint.json").read_text())["members"] == {
        "fold0": p2.runs[0].run_id, "fold1": p2.runs[1].run_id}
    # the averaged adapter: the mean of the two folds' trained weights, key by key
    w0, w1 = (load_file(str(m.artifacts / "main" / "final.safetensors")) for m in p2.members())
    avg = load_file(str(p2.artifacts / "final.safetensors"))
    assert set(avg) == set(w0) and any(not torch.equal(w0[k], w1[k]) for k in avg)
    assert all(torch.allclose(avg[k], (w0[k] + w1[k]) / 2) for k in avg)
    # predict with the one averaged model: a valid submission, other than each fold model's
    test_csv = synthetic_data_dir.joinpath(*TEST_CSV)
    predict(str(folder), test_csv, tmp_path / "avg.csv", progress=False)
    averaged = _check_submission(tmp_path / "avg.csv", test_csv)
    predict(str(p2.runs[0].run_dir), test_csv, tmp_path / "f0.csv", progress=False)
    assert not np.allclose(averaged, _check_submission(tmp_path / "f0.csv", test_csv), atol=1e-7)
    # average: probs reuses both folds; its submission is the mean of the fold models'
    p3, r3 = _run(path, ["folds.run=[0,1]", "folds.average=probs"])
    assert _reused(r3) == [("fold0", True), ("fold1", True)] and p3.combo_id not in (p1.combo_id, p2.combo_id)
    predict(str(p3.run_dir), test_csv, tmp_path / "probs.csv", progress=False)
    predict(str(p2.runs[1].run_dir), test_csv, tmp_path / "f1.csv", progress=False)
    f0, f1 = (_check_submission(tmp_path / f"f{k}.csv", test_csv) for k in (0, 1))
    mean = (f0 + f1) / 2
    assert np.allclose(_check_submission(tmp_path / "probs.csv", test_csv), mean, atol=1e-6)
    # the command line: everything reused, where each went; one member alone
    out = CliRunner().invoke(app, ["run", str(path), "-t", "tiny", "folds.run=[0,1]"])
    assert out.exit_code == 0, out.output
    assert f"member fold0: reused {p2.runs[0].run_dir}" in out.output
    assert f"folds: reused {folder}" in out.output
    one = CliRunner().invoke(app, ["run", str(path), "-t", "tiny", "folds.run=[0,1]", "--member", "fold1"])
    assert one.exit_code == 0 and "member fold1: reused" in one.output and "folds:" not in one.output
    bad = CliRunner().invoke(app, ["run", str(path), "-t", "tiny", "--member", "fold7"])
    assert bad.exit_code == 2 and "--member fold7: not a member of this recipe; members: fold0" in bad.output


def _valid_rows_csv(ids, synthetic_data_dir, out):
    """The synthetic train rows with these ids as a Kaggle test file (no labels)."""
    with open(synthetic_data_dir / "lmsys-chatbot-arena" / "train.csv", newline="") as f:
        rows = {r["id"]: r for r in csv.DictReader(f)}
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["id", "prompt", "response_a", "response_b"])
        w.writeheader()
        w.writerows({k: rows[i][k] for k in w.fieldnames} for i in ids)
    return out


def test_ensemble_blend_swapped_gated_member_reuse_and_predict(isolated, tmp_path, synthetic_data_dir):
    gate = {"tokens_le": 70}
    path = _recipe(tmp_path, "en", ensemble={"members": {
        "a": {"weight": 2}, "b": {"overrides": ["train.lr=1e-3"], "input": "swapped", "gate": gate}}})
    p, r = _run(path)
    assert _reused(r) == [("a", False), ("b", False)]
    kind, folder, metrics, _ = r["combinations"][0]
    assert kind == "ensemble" and folder.name.startswith("ensemble-") and folder.parent.name == "en"
    a, b = (read_row_predictions(p.parts[n].run_dir / ROW_PREDICTIONS) for n in ("a", "b"))
    ens = read_row_predictions(folder / ROW_PREDICTIONS)
    pos = {i: k for k, i in enumerate(b.ids)}
    b_swapped = b.views["swap_ab"][[pos[i] for i in a.ids]]  # b's A/B-swapped predictions, in a's row order
    mask = np.ceil(a.chars / 4) <= 70
    assert 0 < mask.mean() < 1 and metrics["coverage"]["b"] == pytest.approx(mask.mean())
    hand = np.where(mask[:, None], (2 * a.views["final"] + b_swapped) / 3, a.views["final"])
    assert ens.ids == a.ids and np.allclose(ens.views["final"], hand, atol=2e-6)
    assert np.allclose(ens.views["member_b"], b_swapped) and "baseline_length" in ens.views
    assert metrics["weights"] == pytest.approx({"a": 2 / 3, "b": 1 / 3})
    assert set(metrics["summary"]["members"]) == {"a", "b"} and (folder / "ensemble.md").is_file()
    # a changed weight recomputes the blend only: every member reused, none rewritten
    stamps = {n: (p.parts[n].run_dir / "metrics.json").stat().st_mtime_ns for n in ("a", "b")}
    p2, r2 = _run(path, ["ensemble.members.a.weight=1"])
    assert _reused(r2) == [("a", True), ("b", True)] and p2.combo_id != p.combo_id
    assert stamps == {n: (p.parts[n].run_dir / "metrics.json").stat().st_mtime_ns for n in ("a", "b")}
    assert r2["combinations"][0][2]["weights"] == pytest.approx({"a": 0.5, "b": 0.5})
    # the swapped member is fed swapped rows, its columns swapped back: its validation run's swap view
    rows_csv = _valid_rows_csv(b.ids, synthetic_data_dir, tmp_path / "valid_rows.csv")
    from replicator.core.data.competition import read_competition_csv

    rows = read_competition_csv(rows_csv, require_labels=False)
    _, stage, art = run_parts(p.parts["b"].run_dir)
    fed_swapped = run_probs(p.parts["b"].run_dir, stage, art, rows, "swapped", False)
    assert np.allclose(fed_swapped, b.views["swap_ab"], atol=1e-4)
    # the ensemble's submission: each member's prediction blended with the recorded weights and gate
    test_csv = synthetic_data_dir.joinpath(*TEST_CSV)
    predict(str(folder), test_csv, tmp_path / "ens.csv", progress=False)
    sub = _check_submission(tmp_path / "ens.csv", test_csv)
    test_rows = read_competition_csv(test_csv, require_labels=False)
    from replicator.core.scoring.row_predictions import row_chars

    pa = run_probs(p.parts["a"].run_dir, *run_parts(p.parts["a"].run_dir)[1:], test_rows, "final", False)
    pb = run_probs(p.parts["b"].run_dir, stage, art, test_rows, "swapped", False)
    m = np.ceil(np.array([row_chars(x) for x in test_rows]) / 4) <= 70
    assert np.allclose(sub, np.where(m[:, None], (2 * pa + pb) / 3, pa), atol=1e-6)
    # weights fitted instead: members reused, an honest (out-of-fold) blend next to the in-sample one
    p3, r3 = _run(path, ["ensemble.weights=fit", "ensemble.fit_folds=3"])
    fit = r3["combinations"][0][2]
    assert _reused(r3) == [("a", True), ("b", True)] and len(fit["fold_weights"]) == 3
    assert sum(fit["weights"].values()) == pytest.approx(1) and "insample" in fit["summary"]
    fitted = read_row_predictions(p3.run_dir / ROW_PREDICTIONS)
    assert fit["summary"]["insample"]["log_loss"] <= fit["summary"]["blend"]["log_loss"] + 1e-9
    # each fold of prompt groups blended with the weights fitted on the other folds
    from replicator.core.run.ensemble import group_folds

    fold = group_folds(fitted.groups, 3, seed=p3.seed)
    mask_b = np.ceil(fitted.chars / 4) <= 70
    for f, w in enumerate(fit["fold_weights"]):
        wa, wb = w["a"], w["b"] * mask_b
        by_hand = ((wa * fitted.views["member_a"] + wb[:, None] * fitted.views["member_b"])
                   / (wa + wb)[:, None])
        assert np.allclose(fitted.views["final"][fold == f], by_hand[fold == f], atol=2e-6)


def test_an_ensemble_of_fold_combinations_blends_their_oof_rows(isolated, tmp_path, synthetic_data_dir):
    path = _recipe(tmp_path, "ef", folds={"k": 2}, ensemble={"members": {
        "a": {}, "b": {"overrides": ["train.lr=1e-3"]}}, "weights": "fit", "fit_folds": 3})
    p, r = _run(path, ["train.max_rows=32", "predict.max_rows=16"])
    assert [label for label, _ in _reused(r)] == ["a/fold0", "a/fold1", "b/fold0", "b/fold1"]
    assert [kind for kind, *_ in r["combinations"]] == ["folds of a", "folds of b", "ensemble"]
    oof_a = read_row_predictions(p.parts["a"].run_dir / ROW_PREDICTIONS)
    ens = read_row_predictions(r["combinations"][-1][1] / ROW_PREDICTIONS)
    assert ens.ids == oof_a.ids and len(ens) == 32  # both folds' validation rows
    assert np.allclose(ens.views["member_a"], oof_a.views["final"])
    test_csv = synthetic_data_dir.joinpath(*TEST_CSV)
    predict(str(r["combinations"][-1][1]), test_csv, tmp_path / "ef.csv", progress=False)
    _check_submission(tmp_path / "ef.csv", test_csv)
    with pytest.raises(ReplicatorError, match=r"member a .*folds: the override 'plugins.data.folds=2' would"):
        plan_combination(path, ["tiny"], ["plugins.data.folds=2", "plugins.data.fold=1"], data_dir=data_dir())
