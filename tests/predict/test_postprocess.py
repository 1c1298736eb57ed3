"""The postprocess chain and its cross-fit on the validation rows (core/predict/postprocess.py)."""

from __future__ import annotations

import numpy as np
import pytest

from replicator.core.config.catalogue import build_plugins
from replicator.core.errors import ReplicatorError
from replicator.core.predict.postprocess import crossfit_postprocess, postprocess

UNUSED = ("prompt_format", "head", "loss")


def _plugins(**extra):
    blocks = {"data": {"use": "kaggle_csv"}, **extra}
    return build_plugins(blocks, "test.yaml", unused=UNUSED)


def _probs(n, seed=0):
    return np.random.default_rng(seed).dirichlet([1, 1, 1], size=n)


def _rows(n):
    return [{"id": str(i), "group": f"{i:08x}"} for i in range(n)]  # group parity = i parity


def test_no_postprocess_plugin_is_the_identity():
    p = _probs(6)
    out = postprocess(_plugins(), p, _rows(6))
    np.testing.assert_array_equal(out, p)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(crossfit_postprocess(_plugins(), p, _rows(6), np.eye(3)[[0, 1, 2] * 2]), p)


def test_clip_plugin_runs_in_the_chain():
    p = np.array([[1.0, 0.0, 0.0], [0.2, 0.3, 0.5]])
    out = postprocess(_plugins(clip={"use": "clip_probs", "eps": 0.1}), p, _rows(2))
    assert out.min() >= 0.1 / 1.2 - 1e-12
    np.testing.assert_allclose(out.sum(axis=1), 1.0)
    np.testing.assert_allclose(out[1], p[1])


class _Recorder:
    """A fake plugin set whose chain records what each call got and marks the rows it saw."""

    def __init__(self, result=None):
        self.calls, self.result = [], result

    def chain(self, hook, value_arg, value, rows, fit):
        assert hook == "postprocess" and value_arg == "probs"
        self.calls.append(([r["id"] for r in rows], value.copy(), fit))
        if self.result is not None:
            return self.result
        return value * 0 + len(self.calls)  # positive and finite: accepted, and tells the calls apart


def test_crossfit_fits_on_one_half_of_the_groups_and_applies_to_the_other():
    n = 10
    rows, probs = _rows(n), _probs(n)
    labels = np.eye(3)[np.arange(n) % 3]
    rec = _Recorder()
    out = crossfit_postprocess(rec, probs, rows, labels)
    assert len(rec.calls) == 2
    (ids0, p0, fit0), (ids1, p1, fit1) = rec.calls
    even, odd = [str(i) for i in range(0, n, 2)], [str(i) for i in range(1, n, 2)]
    assert ids0 == even and ids1 == odd
    np.testing.assert_array_equal(p0, probs[0::2])
    np.testing.assert_array_equal(fit0[0], probs[1::2])  # fitted on the other half only
    np.testing.assert_array_equal(fit0[1], labels[1::2])
    np.testing.assert_array_equal(fit1[0], probs[0::2])
    np.testing.assert_array_equal(fit1[1], labels[0::2])
    # each half gets back what its own call returned, in place
    assert (out[0::2] == 1).all() and (out[1::2] == 2).all()


def test_crossfit_with_one_half_empty_fits_on_nothing():
    rows = [{"id": str(i), "group": f"{2 * i:x}"} for i in range(4)]  # all even
    rec = _Recorder()
    crossfit_postprocess(rec, _probs(4), rows, np.eye(3)[[0, 1, 2, 0]])
    assert len(rec.calls) == 1 and rec.calls[0][2] is None


def test_crossfit_with_temperature_scaling_matches_each_half_fitted_on_the_other():
    from replicator.plugins.calibration import TemperatureScaling

    n = 60
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(n, 3)) * 5
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = np.eye(3)[rng.integers(0, 3, n)]
    rows = _rows(n)
    out = crossfit_postprocess(_plugins(temp={"use": "temperature_scaling"}), probs, rows, labels)
    ts = TemperatureScaling()
    for h in (0, 1):
        np.testing.assert_allclose(
            out[h::2], ts.postprocess(probs=probs[h::2], rows=[], fit=(probs[1 - h::2], labels[1 - h::2])),
            atol=1e-9)
    assert not np.allclose(out, probs)


@pytest.mark.parametrize("bad", [np.full((3, 3), np.nan), -np.ones((3, 3)), np.ones((2, 3))])
def test_invalid_chain_output_is_refused(bad):
    with pytest.raises(ReplicatorError, match="invalid probabilities"):
        postprocess(_Recorder(result=bad), _probs(3), _rows(3))
