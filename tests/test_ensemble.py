"""Folds and ensembles, the pure parts: OOF concatenation, weight averaging, member views, gates,
blends, fitted weights, and the recipe sections' checks. No model is trained here
(tests/test_combination.py runs them end to end on tiny models)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from replicator.core.config.recipe import resolve
from replicator.core.config.sections import FoldsConfig
from replicator.core.errors import RecipeError, ReplicatorError
from replicator.core.run import ensemble as E
from replicator.core.run.finished_runs import view_probs
from replicator.core.run.folds import average_weights, concat_oof, fold_overrides
from replicator.core.scoring.metrics import log_loss
from replicator.core.scoring.row_predictions import RowPreds

from .conftest import RECIPES


def _preds(ids, views=("identity", "swap_ab", "tta", "final"), seed=0, labels=None) -> RowPreds:
    rng = np.random.default_rng(seed)
    n = len(ids)
    y = labels if labels is not None else np.eye(3)[rng.integers(0, 3, n)]

    def probs():
        p = rng.random((n, 3)) + 0.1
        return p / p.sum(axis=1, keepdims=True)

    return RowPreds(ids=list(ids), groups=[f"g{i}" for i in ids], labels=y, views={v: probs() for v in views},
                    chars=np.array([100 * (k + 1) for k in range(n)]))


# ---------------------------------------------------------------- folds


def test_oof_concatenates_every_fold_row_once_with_every_view():
    a, b = _preds(["1", "2", "3"], seed=1), _preds(["4", "5"], seed=2)
    oof = concat_oof([("run-a", a), ("run-b", b)])
    assert oof.ids == ["1", "2", "3", "4", "5"] and len(set(oof.ids)) == 5
    assert list(oof.views) == list(a.views)
    assert np.array_equal(oof.views["final"], np.concatenate([a.views["final"], b.views["final"]]))
    assert np.array_equal(oof.labels, np.concatenate([a.labels, b.labels]))
    assert oof.groups == a.groups + b.groups and list(oof.chars) == [*a.chars, *b.chars]


def test_oof_refuses_overlapping_folds_and_different_views():
    with pytest.raises(ReplicatorError, match=r"row id '3' is a validation row of both run-a and run-b"):
        concat_oof([("run-a", _preds(["1", "3"])), ("run-b", _preds(["3", "4"]))])
    with pytest.raises(ReplicatorError, match=r"run-b has the prediction views identity, tta, final"):
        concat_oof([("run-a", _preds(["1"])), ("run-b", _preds(["2"], views=("identity", "tta", "final")))])


def test_adapter_average_is_the_key_by_key_mean(tmp_path):
    from safetensors.torch import load_file, save_file

    g = torch.Generator().manual_seed(0)
    for k in range(2):
        save_file({"lora_A": torch.randn(4, 3, generator=g), "score.weight": torch.randn(3, 5, generator=g)},
                  str(tmp_path / f"f{k}.safetensors"))
    w0, w1 = (load_file(str(tmp_path / f"f{k}.safetensors")) for k in range(2))
    avg = average_weights([("fold0", w0), ("fold1", w1)])
    assert set(avg) == {"lora_A", "score.weight"}
    for key in avg:  # by hand: (w0 + w1) / 2, elementwise
        hand = torch.tensor([[(a + b) / 2 for a, b in zip(r0, r1, strict=True)]
                             for r0, r1 in zip(w0[key].tolist(), w1[key].tolist(), strict=True)])
        assert torch.allclose(avg[key], hand, atol=1e-7)
    half = average_weights([("a", {"x": torch.ones(2, dtype=torch.bfloat16)}),
                            ("b", {"x": torch.zeros(2, dtype=torch.bfloat16)})])
    assert half["x"].dtype == torch.bfloat16 and half["x"].tolist() == [0.5, 0.5]


def test_adapter_average_names_the_fold_and_key_that_differ():
    a = {"lora_A": torch.zeros(2, 2), "score.weight": torch.zeros(3, 2)}
    with pytest.raises(ReplicatorError, match=r"run-b: its weights lacks 'score.weight' that run-a has"):
        average_weights([("run-a", a), ("run-b", {"lora_A": torch.zeros(2, 2)})])
    with pytest.raises(ReplicatorError, match=r"run-b: its weights has 'extra' that run-a lacks"):
        average_weights([("run-a", a), ("run-b", {**a, "extra": torch.zeros(1)})])
    with pytest.raises(ReplicatorError, match=r"run-b: weight 'lora_A' has shape \(4, 2\), run-a has "
                                              r"\(2, 2\)"):
        average_weights([("run-a", a), ("run-b", {**a, "lora_A": torch.zeros(4, 2)})])


def test_fold_overrides_and_config_checks():
    assert fold_overrides(FoldsConfig(k=5, plugin="data"), 3) == ["plugins.data.folds=5",
                                                                  "plugins.data.fold=3"]
    assert FoldsConfig(k=3).folds == [0, 1, 2] and FoldsConfig(k=3, run=[2, 0]).folds == [2, 0]
    for bad, msg in [({"k": 3, "run": [3]}, r"integers in \[0, 3\)"), ({"k": 1}, ">= 2"),
                     ({"k": 3, "run": [1, 1]}, "listed twice"), ({"average": "mean"}, "not one of")]:
        with pytest.raises((ValueError, RecipeError), match=msg):
            from replicator.core.params import build

            build(FoldsConfig, bad, "r.yaml", "folds")


# ---------------------------------------------------------------- members, gates, blends


def test_member_views_and_a_clear_error_without_the_swap_view():
    p = _preds(["1", "2"])
    assert np.array_equal(E.member_view("m", p, E.MemberConfig(input="swapped"), "run-x"), p.views["swap_ab"])
    assert np.array_equal(E.member_view("m", p, E.MemberConfig(input="both"), "run-x"), p.views["tta"])
    assert np.array_equal(E.member_view("m", p, E.MemberConfig(), "run-x"), p.views["final"])
    no_swap = _preds(["1", "2"], views=("identity", "tta", "final"))
    with pytest.raises(ReplicatorError, match=r"member armorm: input swapped needs .* run-x has only "
                                              r"identity, tta, final: enable swap TTA for that member, "
                                              r"e.g. toggles: \[\.\.\., tta\]"):
        E.member_view("armorm", no_swap, E.MemberConfig(input="swapped"), "run-x")


def test_members_must_share_their_validation_rows():
    a, b = _preds(["1", "2", "3"]), _preds(["3", "1", "2"])
    pos = E.align_members({"a": ("run-a", a), "b": ("run-b", b)})
    assert list(pos["b"]) == [1, 2, 0]  # b's rows in a's order
    with pytest.raises(ReplicatorError, match=r"members a \(run-a\) and c \(run-c\) do not share their "
                                              r"validation rows: 2 shared, 1 only in a, 1 only in c "
                                              r"\(e.g. id '9'\)"):
        E.align_members({"a": ("run-a", a), "c": ("run-c", _preds(["1", "2", "9"]))})


def test_the_gate_admits_rows_by_estimated_tokens():
    gate = E.GateConfig(tokens_le=512, tokens_ge=1500)  # 4 characters per token
    chars = np.array([2048, 2049, 3000, 5999, 6000, 100_000])
    assert E.estimated_tokens(chars, 4.0).tolist() == [512, 513, 750, 1500, 1500, 25000]
    assert E.gate_mask(chars, gate).tolist() == [True, False, False, True, True, True]
    half = E.GateConfig(tokens_ge=1500, chars_per_token=2.0)
    assert E.gate_mask(chars, half).tolist() == [False] * 2 + [True] * 4
    assert E.gate_mask(chars, None).all()
    with pytest.raises(ValueError, match="tokens_le and/or tokens_ge"):
        E.GateConfig()


def test_fixed_weights_blend_is_the_hand_computed_mean_and_the_gate_applies_per_row():
    p1 = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3]])
    p2 = np.array([[0.3, 0.3, 0.4], [0.1, 0.1, 0.8]])
    both = E.blend([p1, p2], [2, 1])
    assert np.allclose(both, [[(2 * 0.6 + 0.3) / 3, (2 * 0.3 + 0.3) / 3, (2 * 0.1 + 0.4) / 3],
                              [(2 * 0.2 + 0.1) / 3, (2 * 0.5 + 0.1) / 3, (2 * 0.3 + 0.8) / 3]])
    gated = E.blend([p1, p2], [2, 1], [np.array([True, True]), np.array([False, True])])
    assert np.allclose(gated[0], p1[0]) and np.allclose(gated[1], both[1])  # row 0: member 2 is gated out
    with pytest.raises(ReplicatorError, match="1 row.* no member with a positive weight"):
        E.blend([p1, p2], [0, 1], [np.array([True, True]), np.array([False, True])])


def test_fitted_weights_recover_the_better_member_and_are_scored_out_of_fold():
    rng = np.random.default_rng(0)
    n = 600
    y = np.eye(3)[rng.integers(0, 3, n)]
    good = 0.6 * y + 0.4 * rng.dirichlet([1, 1, 1], n)  # informative
    bad = rng.dirichlet([1, 1, 1], n)  # noise
    w = E.fit_weights([bad, good], y)
    assert w.sum() == pytest.approx(1) and (w >= 0).all() and w[1] > 0.9
    fitted = log_loss(E.blend([bad, good], w), y)
    assert fitted <= min(log_loss(good, y), log_loss(E.blend([bad, good], [1, 1]), y))
    groups = [f"g{i // 2}" for i in range(n)]
    honest, per_fold = E.crossfit_blend([bad, good], y, None, groups, 5, seed=0)
    assert len(per_fold) == 5 and all(fw[1] > 0.9 for fw in per_fold)
    assert log_loss(honest, y) >= fitted - 1e-9  # in-sample is the optimistic one
    folds = E.group_folds(groups, 5, seed=0)
    assert all(len(set(folds[[i for i, g in enumerate(groups) if g == gg]])) == 1 for gg in set(groups[:20]))
    with pytest.raises(ReplicatorError, match="only 2 group"):
        E.group_folds(["a", "b", "a"], 5, seed=0)


def test_blend_members_writes_the_views_and_checks_the_labels():
    ids = [str(i) for i in range(40)]
    a = _preds(ids, seed=1, views=("identity", "swap_ab", "tta", "final", "baseline_prior"))
    b = _preds(list(reversed(ids)), seed=2, labels=a.labels[::-1].copy())
    specs = {"a": E.MemberConfig(weight=3), "b": E.MemberConfig(weight=1, input="swapped", gate=E.GateConfig(
        tokens_le=500))}
    cfg = E.EnsembleConfig(members={})
    preds, info = E.blend_members(specs, {"a": ("ra", a), "b": ("rb", b)}, cfg, seed=0)
    b_swap = b.views["swap_ab"][::-1]  # b's rows in a's order
    mask = a.chars / 4 <= 500
    hand = np.where(mask[:, None], (3 * a.views["final"] + b_swap) / 4, a.views["final"])
    assert np.allclose(preds.views["final"], hand)
    assert list(preds.views) == ["final", "member_a", "member_b", "baseline_prior"]
    assert info["weights"] == {"a": 0.75, "b": 0.25} and info["coverage"]["b"] == pytest.approx(mask.mean())
    summary = E.summarize_blend(preds, info, n_boot=200)
    assert summary["blend"]["log_loss"] == pytest.approx(log_loss(hand, a.labels), abs=1e-9)
    d = summary["members"]["b"]["blend_minus_member"]
    assert d["delta"] == pytest.approx(summary["blend"]["log_loss"] - summary["members"]["b"]["log_loss"])
    assert d["lo"] <= d["delta"] <= d["hi"]
    bad = _preds(ids, seed=3, labels=np.roll(a.labels, 1, axis=0))
    with pytest.raises(ReplicatorError, match="member b .*labels differ"):
        E.blend_members(specs, {"a": ("ra", a), "b": ("rb", bad)}, cfg, seed=0)


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


# ---------------------------------------------------------------- the recipe sections


def _recipe(tmp_path, **sections):
    cfg = yaml.safe_load((RECIPES / "smoke.yaml").read_text())
    cfg.update(sections)
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.mark.parametrize("sections, key, msg", [
    ({"folds": {"k": 3, "plugin": "dta"}}, "folds.plugin", "no plugin block 'dta'"),
    ({"folds": {"k": 3, "plugin": "prompt"}}, "folds.plugin", "has no folds/fold parameters"),
    ({"folds": {"k": 3, "run": [5]}}, "folds.run", r"\[0, 3\)"),
    ({"folds": {"kk": 3}}, "folds.kk", "did you mean 'k'"),
    ({"ensemble": {"members": {}}}, "ensemble.members", "at least one member"),
    ({"ensemble": {"members": {"a": {"wieght": 2}}}}, "ensemble.members.a.wieght", "did you mean 'weight'"),
    ({"ensemble": {"members": {"a-b": {}}}}, "ensemble.members.a-b", "letters, digits and underscores"),
    ({"ensemble": {"members": {"a": {"input": "swap"}}}}, "ensemble.members.a.input", "not one of"),
    ({"ensemble": {"members": {"a": {"weight": 0}}}}, "ensemble.members.a.weight", "> 0"),
    ({"ensemble": {"members": {"a": {"gate": {"tokens_le": 5}}}}}, "ensemble.members", "every member is "
                                                                                        "gated"),
    ({"ensemble": {"members": {"a": {}, "b": {"gate": {}}}}}, "ensemble.members.b.gate.tokens_le",
     "tokens_ge"),
    ({"ensemble": {"members": {"a": {"recipe": "nope.yaml"}}}}, "ensemble.members.a.recipe", "not found"),
    ({"ensemble": {"members": {"a": {}}, "weights": "fitted"}}, "ensemble.weights", "not one of"),
])
def test_bad_sections_fail_at_resolve_time_naming_the_key(tmp_path, sections, key, msg):
    with pytest.raises(RecipeError, match=msg) as e:
        resolve(_recipe(tmp_path, **sections))
    assert e.value.key == key and e.value.file.endswith("r.yaml")


def test_sections_are_not_part_of_a_run_config_and_toggles_patch_them(tmp_path):
    plain = resolve(RECIPES / "smoke.yaml")
    path = _recipe(tmp_path, folds={"k": 5}, ensemble={"members": {"a": {}}},
                   toggles={"tiny": {"folds": {"k": 2}},
                            "small": {"ensemble": {"members": {"b": {"weight": 2}}}}})
    r = resolve(path)
    assert r.config_hash == plain.config_hash and "folds" not in r.complete and "ensemble" not in r.complete
    assert resolve(path, ["tiny"]).config["folds"] == {"k": 2}
    assert set(resolve(path, ["small"]).config["ensemble"]["members"]) == {"a", "b"}


def test_show_lists_the_sections_without_running_anything(tmp_path):
    from typer.testing import CliRunner

    from replicator.core.cli import app

    path = _recipe(tmp_path, folds={"k": 3, "average": "adapters"}, ensemble={"members": {
        "a": {"weight": 2}, "b": {"toggles": ["swap"], "input": "both", "gate": {"tokens_ge": 1500}}}})
    out = CliRunner().invoke(app, ["show", str(path)])
    assert out.exit_code == 0, out.output
    assert "# folds: k=3, runs 0, 1, 2 with plugins.data.fold set, average adapters" in out.output
    assert "#   a: " in out.output and "weight 2, input final" in out.output
    assert "toggles ['swap']" in out.output
    assert "input both, gate {'tokens_le': None, 'tokens_ge': 1500" in out.output
