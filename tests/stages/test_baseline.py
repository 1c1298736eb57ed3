"""Baselines (core/stages/baseline.py): length features, the swap-symmetric length regression and the
prior."""

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

from ..conftest import BASELINE


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
                                              r"baseline:uniform, baseline:prior, baseline:length_lr"):
        run(r, data_dir(), progress=False)
    assert not (isolated / "reports").exists()
