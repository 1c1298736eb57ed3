"""A cross-fitted stage's offset (core/stages/offsets.py): the stacked frozen-feature head gives a fold's
training rows out-of-fold offsets and its held rows the head fitted on all of them; rows are found by their
texts in either order; a row it was not built for is an error that names it."""

from __future__ import annotations

import random

import numpy as np
import pytest

from replicator.core.config.recipe import FeaturesConfig, ModelConfig
from replicator.core.errors import ReplicatorError
from replicator.core.params import ParamError
from replicator.core.rows import make_row
from replicator.core.stages import baseline as B
from replicator.core.stages import frozen_features as F
from replicator.core.stages import offsets as O


def _rows(n: int, seed: int = 0) -> list[dict]:
    """Rows whose label a refusal says, with noise: a head can learn them, and overfits a few."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a = "I'm sorry, I cannot help." if rng.random() < 0.4 else "Sure. " + "word " * rng.randint(1, 30)
        b = "I'm sorry, I cannot help." if rng.random() < 0.4 else "Sure. " + "word " * rng.randint(1, 30)
        label = [0, 0, 1] if (a[0] == "I") == (b[0] == "I") else [0, 1, 0] if a[0] == "I" else [1, 0, 0]
        if rng.random() < 0.2:
            label = [[1, 0, 0], [0, 1, 0], [0, 0, 1]][rng.randrange(3)]
        out.append(make_row(f"c{i}", [f"Question {i}?"], [a], [b], label=label))
    return out


#: the head reads the length and style inputs only (no LM to load), five inner folds
CONFIG = FeaturesConfig(lm=False, text=True, c_grid=[0.01, 1.0], cv_folds=3, pca=0, crossfit=5)


def test_a_folds_training_rows_get_out_of_fold_offsets_and_its_held_rows_the_full_heads():
    rows = _rows(150)
    tr, va = np.arange(0, 120), np.arange(120, 150)
    train, held = [rows[i] for i in tr], [rows[i] for i in va]
    maker = O.FeatureOffsets(ModelConfig(), CONFIG, rows, [], seed=3, progress=False)
    offset = maker.fold(train, held, tr, va)
    # held rows: the head fitted on every training row of the fold
    params, _ = F._fit_final(CONFIG, train, None, 3)
    full = F.head_probs(params, None, F.row_inputs(held, CONFIG))
    assert np.allclose(offset(held), np.log(np.clip(full, 1e-6, 1)))
    # training rows: each from a head that did not see it (inner grouped folds), not the full head's in-sample
    oof, _, k = F.crossfit_predictions(CONFIG, train, None, [], None, 3, baselines=False)
    assert k == 5 and np.allclose(offset(train), np.log(np.clip(oof, 1e-6, 1)))
    in_sample = F.head_probs(params, None, F.row_inputs(train, CONFIG))
    assert not np.allclose(offset(train), np.log(in_sample), atol=1e-3)
    # the in-sample predictions fit their own rows better than the out-of-fold ones: why stacking needs them
    y = B.labels_of(train)
    assert -np.mean(np.sum(y * np.log(in_sample), 1)) < -np.mean(np.sum(y * offset(train), 1))


def test_a_swapped_row_gets_the_swapped_offset_and_an_unknown_row_is_named():
    rows = _rows(20)
    probs = np.random.default_rng(0).dirichlet([1, 1, 1], size=20)
    offset = O.PairOffset(rows, probs, "test")
    swapped = [dict(r, response_a=r["response_b"], response_b=r["response_a"]) for r in rows]
    distinct = [i for i, r in enumerate(rows) if r["response_a"] != r["response_b"]]
    assert distinct
    assert np.allclose(offset(swapped)[distinct], np.log(probs)[distinct][:, list(B.SWAP)])
    assert np.allclose(offset(rows), np.log(probs))
    stranger = make_row("x9", ["Another question?"], ["yes"], ["no"], label=[1, 0, 0])
    with pytest.raises(ReplicatorError, match="row x9"):
        offset([rows[0], stranger])


def test_a_baseline_offset_is_the_baseline_fitted_on_the_folds_training_rows():
    rows = _rows(60)
    maker = O.stage_offsets(type("S", (), {"model": ModelConfig(offset="style_lr")})(), rows, [], 0, False)
    got = maker.fold(rows[:40], rows[40:], None, None)(rows[40:])
    assert np.allclose(got, np.log(np.clip(B.predict(B.fit("style_lr", rows[:40]), rows[40:]), 1e-6, 1)))
    assert maker.saved(rows)["kind"] == "style_lr"


@pytest.mark.parametrize("model", [{"offset": "features"},
                                   {"offset": "style_lr", "offset_features": CONFIG},
                                   {"offset": "features", "offset_features": FeaturesConfig(crossfit=0)}])
def test_offset_features_goes_with_offset_features_and_inner_folds(model):
    with pytest.raises(ParamError, match="offset_features"):
        ModelConfig(**model)
