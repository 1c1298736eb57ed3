"""Baselines (core/stages/baseline.py): length and style features, the swap-symmetric length and
length-and-style regressions and the prior."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest

from replicator.core.config.recipe import resolve
from replicator.core.errors import ReplicatorError
from replicator.core.rows import make_row, swap_row
from replicator.core.run.pipeline import run_recipe as run
from replicator.core.scoring.metrics import log_loss
from replicator.core.stages import baseline as B

from ..conftest import BASELINE, RECIPES

B_STYLE_RECIPE = RECIPES / "baseline_style.yaml"


def _row(i, a, b, label, prompt="Tell me something."):
    return make_row(i, [prompt] if isinstance(prompt, str) else prompt, a if isinstance(a, list) else [a],
                    b if isinstance(b, list) else [b], label=label)


def test_length_features_count_each_response_over_turns():
    a = ["Intro line.\n- one\n* two\n3. three\n```py\nx = 1\n```", "More words here."]
    b = [None, ""]
    x = B.length_features(_row(1, a, b, [1, 0, 0], prompt=["Hi there", "again"]))
    assert x.shape == (len(B.FEATURES),)
    counts = B.text_counts(a)
    chars = len(a[0]) + len(a[1])
    assert counts.tolist() == [chars, 13 + 3, 7 + 1, 3, 1]
    assert B.text_counts(b).tolist() == [0, 0, 0, 0, 0]
    f = dict(zip(B.FEATURES, x, strict=True))
    assert f["log1p_a_chars"] == pytest.approx(math.log1p(chars)) and f["log1p_b_chars"] == 0
    assert f["diff_list_items"] == 3 and f["diff_code_blocks"] == 1
    assert f["log_ratio_words"] == pytest.approx(math.log1p(16))
    assert f["log1p_prompt_chars"] == pytest.approx(math.log1p(len("Hi there") + len("again")))
    assert B.text_counts(["```unclosed"]).tolist()[4] == 1 and B.text_counts(["-not a list item"])[3] == 0


def _longer_wins(n: int, seed: int) -> list[dict]:
    """Rows whose label follows the length ratio: the longer answer usually wins, close lengths tie."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        la, lb = rng.randint(1, 60), rng.randint(1, 60)
        a = " ".join(["word"] * la) + ("\n- point" * (la // 15))
        b = " ".join(["word"] * lb) + ("\n- point" * (lb // 15))
        r = math.log(la / lb) * 2 + rng.gauss(0, 1)
        label = [1, 0, 0] if r > 0.8 else [0, 1, 0] if r < -0.8 else [0, 0, 1]
        rows.append(_row(f"r{seed}-{i}", a, b, label, prompt=f"Question {i}?"))
    return rows


def test_length_baseline_beats_the_prior_where_the_longer_answer_wins():
    train, valid = _longer_wins(400, 0), _longer_wins(200, 1)
    y = B.labels_of(valid)
    prior = B.predict(B.fit("prior", train), valid)
    length = B.predict(B.fit("length_lr", train), valid)
    assert np.allclose(prior[0], B.labels_of(train).mean(0))
    assert log_loss(length, y) < log_loss(prior, y) - 0.15
    assert (length.argmax(1) == y.argmax(1)).mean() > 0.6
    assert log_loss(B.predict(B.fit("uniform", train), valid), y) == pytest.approx(math.log(3))


def test_length_baseline_is_swap_symmetric_and_matches_sklearn():
    """Fitted on rows + swapped copies, predicting the mean of both orientations: swapping A and B of a
    row swaps its prediction exactly; the saved coefficients reproduce sklearn's probabilities."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train = _longer_wins(300, 2)
    # A-biased labels
    train = [dict(r, label=[1.0, 0.0, 0.0]) if i % 7 == 0 else r for i, r in enumerate(train)]
    params = B.fit("length_lr", train)
    valid = _longer_wins(50, 3)
    p, q = B.predict(params, valid), B.predict(params, [swap_row(r) for r in valid])
    assert np.allclose(q, p[:, B.SWAP], atol=1e-12)
    x, k, w = B.training_samples(train)
    assert len(x) == 2 * len(train) and np.allclose(w, 1.0)
    sk = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000)).fit(x, k)
    xv = B.feature_matrix(valid)
    assert np.allclose(B.linear_probs(params, xv), sk.predict_proba(xv), atol=1e-9)
    assert json.loads(json.dumps(params)) == params  # plain JSON
    assert B.fit("length_lr", train) == params  # deterministic


def test_soft_labels_become_weighted_samples():
    rows = [_row(1, "a b c", "a", [0.7, 0.0, 0.3]), _row(2, "a", "a b", [0.0, 1.0, 0.0])]
    x, k, w = B.training_samples(rows)
    # row 1: classes 0 and 2; row 2: class 1; then the swapped copies: row 1 -> classes 1 and 2, row 2 -> 0
    assert k.tolist() == [0, 2, 1, 1, 2, 0] and w.tolist() == pytest.approx([0.7, 0.3, 1.0, 0.7, 0.3, 1.0])
    assert np.allclose(x[0], x[1]) and np.allclose(x[3], B.swap_features(x[:1])[0])
    assert B.fit("prior", rows)["probs"] == pytest.approx([0.35, 0.5, 0.15])
    one_class = B.fit("length_lr", [_row(1, "a", "b", [0, 0, 1]), _row(2, "a b", "b", [0, 0, 1])])
    assert one_class["kind"] == "prior" and "one class" in one_class["note"]


def test_unknown_baseline_fails_before_anything_is_written(isolated):
    from replicator.core.data.files import data_dir

    r = resolve(BASELINE, [], ["model.base=baseline:lenght"], data_dir=data_dir())
    with pytest.raises(ReplicatorError, match=r"model.base: unknown baseline 'baseline:lenght'; known: "
                                              r"baseline:uniform, baseline:prior, baseline:length_lr, "
                                              r"baseline:style_lr"):
        run(r, data_dir(), progress=False)
    assert not (isolated / "reports").exists()


# ---------------------------------------------------------------- style_lr

STYLED_A = ["## Answer\n\n**Yes.** See https://example.org?\n- 1 point\n- 2 points\n```py\nx = 3\n```"]


def test_style_features_count_each_response_and_the_pair():
    row = _row(1, STYLED_A, ["I'm sorry, I cannot help with that."], [1, 0, 0], prompt="Hi?")
    x = B.style_features(row)
    assert x.shape == (len(B.STYLE_FEATURES),) and len(set(B.STYLE_FEATURES)) == len(B.STYLE_FEATURES)
    f = dict(zip(B.STYLE_FEATURES, x, strict=True))
    assert np.allclose(x[:len(B.FEATURES)], B.length_features(row))  # the length features first
    sa, sb = B.style_counts(STYLED_A), B.style_counts(["I'm sorry, I cannot help with that."])
    assert np.expm1(sa).round().tolist() == [0, 2, 1, 1, 3, 1, 1]  # refusal, **, headers, ?, digits, ¶, links
    assert np.expm1(sb).round().tolist() == [1, 0, 0, 0, 0, 0, 0]
    for k, name in enumerate(B.STYLE):
        assert f[f"diff_{name}"] == pytest.approx(sa[k] - sb[k])
        assert f[f"abs_diff_{name}"] == pytest.approx(abs(sa[k] - sb[k]))
    assert f["abs_log_ratio_chars"] == pytest.approx(abs(f["log_ratio_chars"]))
    assert f["identical"] == 0 and f["both_refuse"] == 0
    same = B.style_features(_row(2, ["I can't do that."], ["I can't do that. "], [0, 0, 1]))
    g = dict(zip(B.STYLE_FEATURES, same, strict=True))
    assert g["identical"] == 1 and g["both_refuse"] == 1 and g["diff_refusal"] == 0


def test_style_counts_are_shared_with_the_frozen_feature_head():
    from replicator.core.stages import frozen_features as F

    assert F.style_counts is B.style_counts and F.REFUSAL is B.REFUSAL and F.STYLE == B.STYLE


def _refusal_decides(n: int, seed: int) -> list[dict]:
    """Rows whose label follows refusals, not length: a refusal loses, two refusals tie; the refusing
    answer is as often the longer one as the shorter."""
    rng = random.Random(seed)
    refusals = ["I'm sorry, but I cannot help with that request.",
                "I apologize, but as an AI I am unable to provide that. " + "Please ask something else. " * 3]
    answers = ["Sure: the answer is {k}.", "Here you go. " + "A detail about {k}. " * 4]
    rows = []
    for i in range(n):
        ra, rb = rng.random() < 0.45, rng.random() < 0.45
        a = rng.choice(refusals) if ra else rng.choice(answers).format(k=i)
        b = rng.choice(refusals) if rb else rng.choice(answers).format(k=i + 1)
        if ra == rb:  # two refusals tie; two answers tie or either wins
            label = [0, 0, 1] if ra or rng.random() < 0.3 else rng.choice([[1, 0, 0], [0, 1, 0]])
        else:
            label = [0, 1, 0] if ra else [1, 0, 0]
        rows.append(_row(f"s{seed}-{i}", a, b, label, prompt=f"Question {i}?"))
    return rows


def test_style_baseline_beats_the_length_baseline_where_refusal_decides():
    train, valid = _refusal_decides(400, 0), _refusal_decides(200, 1)
    y = B.labels_of(valid)
    length = log_loss(B.predict(B.fit("length_lr", train), valid), y)
    params = B.fit("style_lr", train)
    style = log_loss(B.predict(params, valid), y)
    assert style < length - 0.2, (style, length)
    assert set(params["cv_log_loss"]) == {str(c) for c in B.STYLE_C_GRID}
    assert params["C"] in B.STYLE_C_GRID and params["cv_log_loss"][str(params["C"])] == min(
        params["cv_log_loss"].values())


def test_style_baseline_is_exactly_swap_symmetric_and_deterministic():
    train = _refusal_decides(240, 2) + _longer_wins(120, 4)
    train = [dict(r, label=[1.0, 0.0, 0.0]) if i % 5 == 0 else r for i, r in enumerate(train)]  # A-biased
    params = B.fit("style_lr", train)
    valid = _refusal_decides(60, 3) + _longer_wins(60, 5)
    swapped = [swap_row(r) for r in valid]
    assert np.array_equal(B.style_matrix(swapped), B.swap_style_features(B.style_matrix(valid)))
    p, q = B.predict(params, valid), B.predict(params, swapped)
    assert np.allclose(q, p[:, B.SWAP], atol=1e-12) and np.allclose(p.sum(1), 1)
    x, k, w = B.training_samples(train, "style_lr")
    assert len(x) == 2 * len(train) and x.shape[1] == len(B.STYLE_FEATURES)
    assert json.loads(json.dumps(params)) == params  # plain JSON: what baseline.json holds
    assert B.fit("style_lr", train) == params  # deterministic, CV included


def test_style_baseline_chooses_c_on_its_training_rows_only_and_falls_back():
    """``fit`` sees only the training rows: the CV folds are their prompt groups (folds seeded with 0)."""
    train = _refusal_decides(100, 6)
    params = B.fit("style_lr", train)
    x, y = B.style_matrix(train), B.labels_of(train)
    C, cv = B.choose_style_c(x, y, np.array([r["group"] for r in train]))
    assert (params["C"], params["cv_log_loss"]) == (C, cv) and params["n_samples"] == 2 * len(train)
    few_groups = [dict(r, group=f"g{i % 3}") for i, r in enumerate(train)]  # 3 groups < 5 folds
    fixed = B.fit("style_lr", few_groups)
    assert fixed["C"] == 1.0 and fixed["cv_log_loss"] == {}
    one_class = B.fit("style_lr", [_row(1, "a", "b", [0, 0, 1]), _row(2, "a b", "b", [0, 0, 1])])
    assert one_class["kind"] == "prior" and "style_lr fell back" in one_class["note"]


def test_every_run_adds_the_style_view():
    train, valid = _refusal_decides(120, 7), _refusal_decides(30, 8)
    out = B.every_run(train, valid)
    assert list(out) == ["baseline_prior", "baseline_length", "baseline_style"]
    assert np.allclose(out["baseline_style"], B.predict(B.fit("style_lr", train), valid))


def test_style_baseline_run_writes_its_metrics(isolated):
    """``recipes/baseline_style.yaml -t tiny``: a baseline run of style_lr, with every run's baseline
    metrics, that a report shows."""
    from replicator.core.data.files import data_dir

    r = resolve(B_STYLE_RECIPE, ["tiny"], [], data_dir=data_dir())
    run_dir, m, _ = run(r, data_dir(), progress=False)
    assert m["baseline"] == "style_lr" and m["stages"]["main"]["model"]["kind"] == "style_lr"
    assert m["stages"]["main"]["model"]["n_features"] == len(B.STYLE_FEATURES)
    assert m["final_log_loss"] == pytest.approx(m["baseline_style_log_loss"])
    assert {"baseline_prior_log_loss", "baseline_length_log_loss"} <= set(m)
    params = json.loads((isolated / "artifacts" / "baseline_style" / run_dir.name / "main"
                         / "baseline.json").read_text())
    assert params["kind"] == "style_lr" and params["features"] == list(B.STYLE_FEATURES)
    # and a report of the run shows it beside the length reference
    from replicator.core.report.build import build_report

    rep = build_report([run_dir], isolated / "rep")
    names = [x["name"] for x in rep["references"]]
    assert names[-2:] == ["length features (logistic regression)",
                          "length and style features (logistic regression)"]
    assert rep["references"][-1]["log_loss"] == pytest.approx(m["baseline_style_log_loss"], abs=1e-5)
    assert rep["stages"][0]["style_log_loss"] == pytest.approx(m["baseline_style_log_loss"])
    assert not rep["notes"]
    md = (isolated / "rep" / "report.md").read_text()
    assert "| *length and style features (logistic regression)* |" in md
