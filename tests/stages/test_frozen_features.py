"""Frozen-backbone feature stages (core/stages/frozen_features.py): the per-response encoding, the cache
folder, the swap-symmetric head with its C chosen on training rows only, the scored pool."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from replicator.core.config.recipe import FeaturesConfig, resolve
from replicator.core.stages import frozen_features as F

from ..conftest import RECIPES


class WordTokenizer:
    """One token per character: lengths are easy to reason about."""

    bos_token_id, eos_token_id = 1, 2

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [3 + (ord(c) % 50) for c in text]}


def test_encode_response_keeps_the_prompt_tail_and_the_response_head():
    tok = WordTokenizer()
    ids, start = F.encode_response(tok, ["p" * 100], ["r" * 100], max_length=50, prompt_tokens=10)
    assert len(ids) == 50 and ids[0] == 1 and start == 11
    assert ids[1:start] == tok("User: " + "p" * 100 + "\n\n")["input_ids"][-10:]  # the prompt's last tokens
    assert ids[start:] == tok("Assistant: " + "r" * 100 + "\n\n")["input_ids"][:39]  # the response's first
    ids, start = F.encode_response(tok, ["p" * 100], ["r"], max_length=50, prompt_tokens=10)
    # a short response lends the prompt room
    assert len(ids) == 50 and len(ids) - start == len("Assistant: r\n\n")
    ids, start = F.encode_response(tok, ["hi", "again"], ["yes", None], max_length=200, prompt_tokens=100)
    assert len(ids) == 1 + len("User: hi\n\nUser: again\n\n") + len("Assistant: yes\n\nAssistant: \n\n")


def test_token_batches_cover_every_item_once_within_the_budget():
    lengths = [random.Random(i).randint(1, 90) for i in range(200)]
    batches = F.token_batches(lengths, 256)
    assert sorted(i for b in batches for i in b) == list(range(200))
    assert all(len(b) == 1 or max(lengths[i] for i in b) * len(b) <= 256 for b in batches)
    assert F.token_batches([500, 3], 100) == [[1], [0]]  # an item over the budget still gets its batch


def _toy(n: int, dim: int, seed: int):
    """Vectors whose first coordinate says which response is better; ties when they are close."""
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(n, 2, dim))
    f[:, :, 0] *= 3  # the telling direction is the widest: a PCA keeps it
    gap = f[:, 0, 0] - f[:, 1, 0]
    y = np.zeros((n, 3))
    y[np.arange(n), np.where(np.abs(gap) < 1.2, 2, np.where(gap > 0, 0, 1))] = 1
    return f, y, np.array([f"g{i // 2}" for i in range(n)])


NO_TEXT = {"lens": None, "style": None, "pair": None}


@pytest.mark.parametrize("k", [0, 3])
def test_head_learns_is_swap_symmetric_and_round_trips_through_json(k):
    f, y, _ = _toy(600, 8, 0)
    params = json.loads(json.dumps(F.fit_head(f, NO_TEXT, y, C=1.0, k=k)))
    assert len(params["projection"]["components"]) == (k or 8)
    ft, yt, _ = _toy(300, 8, 1)
    p = F.head_probs(params, ft, NO_TEXT)
    assert np.allclose(p.sum(1), 1) and np.mean(-np.log(p[yt.astype(bool)])) < 0.75  # uniform: 1.0986
    swapped = F.head_probs(params, ft[:, ::-1], NO_TEXT)
    assert np.allclose(swapped, p[:, [1, 0, 2]], atol=1e-12)


def test_head_with_one_missing_class_predicts_zero_for_it():
    f, y, _ = _toy(200, 4, 2)
    y = np.where(y[:, 2:3] > 0, np.array([[1, 0, 0]]), y)  # no ties in training
    params = F.fit_head(f, NO_TEXT, y, C=1.0, k=0)
    assert params["intercept"][2] is None
    assert np.allclose(F.head_probs(params, f, NO_TEXT)[:, 2], 0)


def test_c_is_chosen_by_grouped_cv_on_the_training_rows():
    f, y, g = _toy(400, 30, 3)
    cfg = FeaturesConfig(c_grid=[1e-4, 1.0], cv_folds=4, pca=0)
    C, cv = F.choose_c(f, NO_TEXT, y, g, cfg, seed=0)
    assert C == 1.0 and cv["0.0001"] > cv["1.0"]  # a starved head is worse on held-out training folds


def _row(a, b):
    return {"prompt": ["q"], "response_a": a, "response_b": b}


def test_text_inputs_are_swap_aware_and_name_what_they_count():
    rows = [_row(["I'm sorry, I cannot help.", None], ["**Sure**\n\n# Plan\n1. go? see http://x"]),
            _row(["same words"], ["same words"])]
    inputs = F.row_inputs(rows, FeaturesConfig())
    counts = dict(zip(F.STYLE, np.expm1(inputs["style"][0, 1]).round(6), strict=True))
    assert counts == {"refusal": 0, "bold": 2, "headers": 1, "questions": 1, "digits": 1, "paragraphs": 1,
                      "links": 1}
    assert np.expm1(inputs["style"][0, 0, 0]) == 1  # A refuses
    assert inputs["pair"][1].tolist() == [1.0, 1.0, 0.0] and inputs["pair"][0, 1] == 0
    x, xs = F.design(None, inputs), F.design(None, inputs, swapped=True)
    swapped_rows = [_row(r["response_b"], r["response_a"]) for r in rows]
    assert np.allclose(xs, F.design(None, F.row_inputs(swapped_rows, FeaturesConfig())))
    assert not np.allclose(x[0], xs[0])
    with pytest.raises(Exception, match="no inputs"):
        F.design(None, NO_TEXT)


def test_length_inputs_drop_the_raw_differences_unless_asked_and_swap_with_their_rows():
    rows = [_row(["a" * 5000], ["b b b"]), _row(["one\ntwo"], [None, "x" * 40]),
            _row(["- item\n- more"], ["yes"])]
    swapped_rows = [_row(r["response_b"], r["response_a"]) for r in rows]
    for raw, width in ((False, len(F.B.FEATURES) - len(F.B.COUNTS)), (True, len(F.B.FEATURES))):
        cfg = FeaturesConfig(raw_diffs=raw)
        inputs, of_swapped = F.row_inputs(rows, cfg), F.row_inputs(swapped_rows, cfg)
        assert inputs["lens"].shape == (3, width)
        assert np.allclose(inputs["lens_swapped"], of_swapped["lens"])
        assert np.allclose(F.design(None, inputs, swapped=True), F.design(None, of_swapped))
    full = F.row_inputs(rows, FeaturesConfig(raw_diffs=True))["lens"]
    assert full[0, F.B.FEATURES.index("diff_chars")] == 5000 - 5  # what the default leaves out
    kept = [n for i, n in enumerate(F.B.FEATURES) if i not in F.RAW_DIFFS]
    assert not any(n.startswith("diff_") for n in kept) and "log_ratio_chars" in kept
    assert F.row_inputs(rows, FeaturesConfig(lengths=False))["lens_swapped"] is None


def test_a_clipped_head_reads_inputs_beyond_its_training_range_as_the_edge():
    f, y, _ = _toy(600, 4, 5)
    clipped = json.loads(json.dumps(F.fit_head(f, NO_TEXT, y, C=1.0, k=0, clip=True)))
    free = F.fit_head(f, NO_TEXT, y, C=1.0, k=0)
    assert "clip" not in free
    lo, hi = np.array(clipped["clip"])
    d = len(lo) // 2  # [d, |d|]: the range of the signed part is symmetric (both orders are fitted)
    assert np.allclose(lo[:d], -hi[:d])
    # inside the range nothing changes: the coefficients are the same fit
    assert np.array_equal(F.head_probs(clipped, f, NO_TEXT), F.head_probs(free, f, NO_TEXT))
    far = np.zeros((2, 2, 4))
    far[:, 0, 0] = [1e3, 1e6]  # A's telling coordinate far beyond every training pair's
    p, q = F.head_probs(clipped, far, NO_TEXT), F.head_probs(free, far, NO_TEXT)
    assert np.allclose(p[0], p[1])  # both read as the largest gap seen in training
    assert q[0].max() > 0.999 and p[0].max() < q[0].max()  # unclipped, the head extrapolates to certainty
    assert np.allclose(F.head_probs(clipped, far[:, ::-1], NO_TEXT), p[:, [1, 0, 2]], atol=1e-12)


def test_changed_encoding_settings_use_another_cache_folder(isolated, monkeypatch):
    monkeypatch.setenv("REPLICATOR_CACHE", str(isolated / "cache"))
    def folder(model="tiny-model-id", dtype="float32", device="cpu", **settings):
        return F.cache_folder(model, FeaturesConfig(**settings), dtype=dtype, device=device)

    a = folder()
    assert a == folder(C=0.5)  # the head's settings: same vectors
    assert a != folder(layers=[3])
    assert a != folder(max_length=128)
    assert a != folder("another-model")
    assert a != folder(dtype="bfloat16") and a != folder(device="cuda")  # other numbers, another folder


def test_a_dtype_change_is_a_new_run_id_and_a_new_feature_cache(isolated, monkeypatch):
    """model.dtype is in the config hash (so in the run id), and the vectors are cached per computed dtype."""
    monkeypatch.setenv("REPLICATOR_CACHE", str(isolated / "cache"))
    fp32 = resolve(RECIPES / "cpu.yaml", ["tiny"], ["model.dtype=float32"], check_plugins=False)
    bf16 = resolve(RECIPES / "cpu.yaml", ["tiny"], ["model.dtype=bfloat16"], check_plugins=False)
    assert fp32.config_hash != bf16.config_hash
    folders = [F.cache_folder("m", r.final.model.features, dtype=r.final.model.dtype, device="cpu")
               for r in (fp32, bf16)]
    assert folders[0] != folders[1]


def test_scored_pool_takes_the_validation_sources_and_keeps_extra_rows_apart():
    def r(i, source, group):
        return {"id": i, "source": source, "group": group}
    train = [r(1, "kaggle_csv", "g1"), r(2, "mt_bench", "g9"), r(3, "mt_bench", "g1"),
             r(4, "kaggle_csv", "g2")]
    valid = [r(5, "kaggle_csv", "g3")]
    scored, extra = F.scored_pool(train, valid)
    assert [x["id"] for x in scored] == [1, 4, 5] and [x["id"] for x in extra] == [2]  # id 3 shares g1


def test_crossfit_fits_every_baseline_on_the_heads_folds(monkeypatch):
    """The cross-fitted stage's baseline views, the length-and-style one included, come from baselines
    fitted on the same folds as the head: each fold's rows predicted by baselines that never saw them."""
    from sklearn.model_selection import GroupKFold

    from replicator.core.rows import make_row
    from replicator.core.stages import baseline as B

    rng = random.Random(0)
    scored = []
    for i in range(90):
        a = "I'm sorry, I cannot help." if rng.random() < 0.4 else "Sure. " + "word " * rng.randint(1, 30)
        b = "I'm sorry, I cannot help." if rng.random() < 0.4 else "Sure. " + "word " * rng.randint(1, 30)
        label = [0, 0, 1] if (a[0] == "I") == (b[0] == "I") else [0, 1, 0] if a[0] == "I" else [1, 0, 0]
        scored.append(make_row(f"c{i}", [f"Question {i}?"], [a], [b], label=label))
    cfg = FeaturesConfig(lm=False, text=True, c_grid=[1.0], cv_folds=3, pca=0, crossfit=3)
    fitted_on = []
    real = B.every_run
    monkeypatch.setattr(B, "every_run", lambda train, held: fitted_on.append({r["id"] for r in train})
                        or real(train, held))
    _, refs, k = F.crossfit_predictions(cfg, scored, None, [], None, seed=7)
    assert k == 3 and list(refs) == [view for _, view in B.EVERY_RUN] and "baseline_style" in refs
    groups = np.array([r["group"] for r in scored])
    folds = list(GroupKFold(n_splits=3, shuffle=True, random_state=7).split(groups, groups=groups))
    for (tr, va), seen in zip(folds, fitted_on, strict=True):
        assert seen == {scored[i]["id"] for i in tr}
        train, held = [scored[i] for i in tr], [scored[i] for i in va]
        assert np.allclose(refs["baseline_style"][va], B.predict(B.fit("style_lr", train), held))
