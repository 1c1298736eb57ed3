"""4th place's empty / identical response rules (plugins/empty_identical_rules.py)."""

from __future__ import annotations

import numpy as np
import pytest

from replicator.core.config.catalogue import build_plugins
from replicator.core.errors import RecipeError
from replicator.core.rows import make_row
from replicator.plugins.empty_identical_rules import EmptyIdenticalRules, rule_of


def test_empty_and_identical_rules():
    def row(a, b):
        return make_row("x", ["q"], a, b)

    rows = [row([""], ["fine"]), row(["fine"], ["  \n"]), row(["same"], ["same "]), row([], []),
            row(["", ""], ["a", "b"]), row(["a"], ["b"]), row(["a", "b"], ["a", "c"])]
    assert [rule_of(r) for r in rows] == ["empty_a", "empty_b", "identical", "identical", "empty_a", None,
                                          None]
    probs = np.full((len(rows), 3), 1 / 3)
    out = EmptyIdenticalRules().postprocess(probs=probs, rows=rows, fit=None)
    np.testing.assert_allclose(out[0], [0.04, 0.88, 0.08])
    np.testing.assert_allclose(out[1], [0.88, 0.04, 0.08])
    np.testing.assert_allclose(out[2], [0.06, 0.06, 0.88])
    np.testing.assert_allclose(out[3], [0.06, 0.06, 0.88])
    np.testing.assert_allclose(out[5:], probs[5:])
    assert probs[0, 0] == pytest.approx(1 / 3)  # input untouched
    with pytest.raises(RecipeError, match="identical"):
        build_plugins({"rules": {"use": "empty_identical_rules", "identical": [0.5, 0.5, 0.5]}}, "x.yaml")
