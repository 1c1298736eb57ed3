"""What a finished run predicts on new rows (core/run/finished_runs.py): swapped rows, their columns
swapped back."""

from __future__ import annotations

import numpy as np

from replicator.core.run.finished_runs import view_probs


def test_swapped_rows_are_predicted_swapped_and_their_columns_swapped_back():
    # a position-aware fake model: P(A) grows with the length of response A
    rows = [{"id": str(i), "prompt": ["p"], "response_a": ["x" * (i + 1)], "response_b": ["y" * (10 - i)],
             "label": None} for i in range(5)]

    def predict_fn(batch):
        a = np.array([len(r["response_a"][0]) for r in batch], dtype=float)
        b = np.array([len(r["response_b"][0]) for r in batch], dtype=float)
        p = np.stack([a, b, np.ones_like(a)], axis=1)
        return p / p.sum(axis=1, keepdims=True)

    ident = view_probs(rows, "identity", predict_fn)
    swapped = view_probs(rows, "swapped", predict_fn)
    # the model saw B as A: P(original A wins) is its P(second position wins), swapped back into column 0
    assert np.allclose(swapped, ident)  # a symmetric model gives the same answer either way
    def biased(batch):  # the same model with a bias for whatever is shown first
        p = predict_fn(batch) * [2, 1, 1]
        return p / p.sum(axis=1, keepdims=True)

    sw, ib = view_probs(rows, "swapped", biased), view_probs(rows, "identity", biased)
    assert (sw[:, 0] < ib[:, 0]).all() and (sw[:, 1] > ib[:, 1]).all()  # the first-position bias moves to B
    assert np.allclose(view_probs(rows, "both", biased), (sw + ib) / 2)
