"""Prediction per TTA view and their mean (core/predict/views.py) on a tiny classifier."""

from __future__ import annotations

import numpy as np
import pytest

from replicator.core.predict import views as V
from replicator.core.rows import SWAP_PERM, make_row
from replicator.plugins.swap_ab import SwapView

from ..conftest import tiny_classifier
from ..helpers import _plugins

torch = pytest.importorskip("torch")


def _ids(row) -> list[int]:
    """Token ids in the tiny model's vocabulary (1..49), A's text before B's: a swap changes them."""
    text = " ".join(row["prompt"]) + "|A:" + " ".join(row["response_a"]) + "|B:" + " ".join(row["response_b"])
    return [1 + ord(c) % 49 for c in text]


class _FakeEncoder:
    """Stands in for the token cache: ids straight from the row (no files written)."""

    prepared: list = []

    def __init__(self, plugins, tokenizer):
        pass

    def prepare(self, rows, max_length, views=None, progress=True):
        _FakeEncoder.prepared.append([v.name for v in views])

    def __call__(self, row, max_length):
        return _ids(row)[:max_length]


def _rows(n=7):
    return [make_row(f"r{i}", [f"question {i}?"], ["long answer " * (i + 1)], [f"short {i}"],
                     [1.0, 0.0, 0.0], model_a="x", model_b="y", source="test") for i in range(n)]


def _direct(model, rows):
    out = []
    with torch.inference_mode():
        for r in rows:
            ids = torch.tensor([_ids(r)])
            out.append(torch.softmax(model(input_ids=ids).logits[0, :3].float(), -1).numpy())
    return np.array(out, dtype=np.float64)


@pytest.fixture()
def setup(monkeypatch):
    monkeypatch.setattr(V, "Encoder", _FakeEncoder)
    _FakeEncoder.prepared = []
    model = tiny_classifier()
    model.config._attn_implementation = "eager"
    tok = type("Tok", (), {"pad_token_id": 0})()
    plugins, _ = _plugins()
    return model, tok, plugins


def test_views_are_identity_then_swap_and_identity_changes_nothing():
    plugins, _ = _plugins()
    owners = V.view_owners(plugins)
    assert list(owners) == [V.IDENTITY, "swap_ab"]
    assert owners[V.IDENTITY][0] is None
    alias, block = owners["swap_ab"][0]
    assert alias == "swap" and block["use"] == "swap_ab" and block["test_time"] is True
    assert [v.name for v in V.views_of(plugins)] == [V.IDENTITY, "swap_ab"]
    row = _rows(1)[0]
    assert V.Identity.apply(row) is row
    p = np.array([[0.2, 0.3, 0.5]])
    assert V.Identity.invert(p) is p


def test_predict_probs_identity_swap_and_tta(setup):
    model, tok, plugins = setup
    rows = _rows()
    out = V.predict_probs(model, tok, plugins, rows, max_length=512, batch_tokens=200, progress=False)
    assert set(out) == {V.IDENTITY, "swap_ab", "tta"}
    assert _FakeEncoder.prepared == [[V.IDENTITY], ["swap_ab"]]
    for p in out.values():
        assert p.shape == (len(rows), 3)
        np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-6)
    # the identity view is the model on each row, in the rows' order (batches sorted by length)
    np.testing.assert_allclose(out[V.IDENTITY], _direct(model, rows), atol=1e-5)
    # the swap view saw B first, and was permuted back to the A/B order
    swapped = _direct(model, [SwapView().apply(r) for r in rows])
    assert not np.allclose(swapped, out[V.IDENTITY], atol=1e-4)
    np.testing.assert_allclose(out["swap_ab"], swapped[:, SWAP_PERM], atol=1e-5)
    np.testing.assert_allclose(out["swap_ab"][:, 2], swapped[:, 2], atol=1e-5)  # tie stays tie
    np.testing.assert_allclose(out["tta"], (out[V.IDENTITY] + out["swap_ab"]) / 2, atol=1e-12)
    # batch size does not change the probabilities
    one = V.predict_probs(model, tok, plugins, rows, max_length=512, batch_tokens=1, progress=False)
    for k in out:
        np.testing.assert_allclose(one[k], out[k], atol=1e-5)


def test_predict_probs_without_tta_has_the_identity_view_only(setup):
    model, tok, plugins = setup
    rows = _rows(3)
    out = V.predict_probs(model, tok, plugins, rows, 512, 100, progress=False, use_tta=False)
    assert set(out) == {V.IDENTITY, "tta"}
    np.testing.assert_array_equal(out["tta"], out[V.IDENTITY])


def test_cached_views_never_load_a_model(setup):
    model, tok, plugins = setup
    rows = _rows(4)
    rng = np.random.default_rng(0)

    class Store:
        def __init__(self, held):
            self.held, self.saved = dict(held), {}

        def load(self, name):
            return self.held.get(name)

        def save(self, name, probs):
            self.saved[name] = probs

    held = {v: rng.dirichlet([1, 1, 1], size=len(rows)) for v in (V.IDENTITY, "swap_ab")}

    def refuse():
        raise AssertionError("a model was loaded although every view was cached")

    store = Store(held)
    out = V.predict_probs(None, None, plugins, rows, 512, 100, progress=False, store=store, load=refuse)
    assert store.saved == {} and _FakeEncoder.prepared == []
    np.testing.assert_allclose(out["tta"], (held[V.IDENTITY] + held["swap_ab"]) / 2)
    # one view missing: the model is loaded once, that view computed and saved
    store = Store({V.IDENTITY: held[V.IDENTITY]})
    loads = []

    def load():
        loads.append(1)
        return model, tok

    out = V.predict_probs(None, None, plugins, rows, 512, 100, progress=False, store=store, load=load)
    assert loads == [1] and list(store.saved) == ["swap_ab"]
    np.testing.assert_array_equal(out[V.IDENTITY], held[V.IDENTITY])
    np.testing.assert_array_equal(store.saved["swap_ab"], out["swap_ab"])
