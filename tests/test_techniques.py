"""The technique catalogue's heads, losses, swap modes and post-processing: parity tests that can
fail, and tiny-model runs that prove each plugin works inside a real training run."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from replicator.core.config.catalogue import build_plugins
from replicator.core.config.recipe import resolve
from replicator.core.data.files import data_dir
from replicator.core.errors import RecipeError, ReplicatorError
from replicator.core.rows import SWAP_PERM, make_row, swap_row
from replicator.core.scoring.metrics import log_loss
from replicator.core.tokens.batches import length_grouped_batches, units_of
from replicator.plugins.aux_model_heads import IGNORE_INDEX, AuxModelHeads, family_index, model_family
from replicator.plugins.calibration import PlattScaling, TemperatureScaling
from replicator.plugins.cross_entropy import CrossEntropy
from replicator.plugins.distill_kl_cos import DistillKLCos
from replicator.plugins.empty_identical_rules import EmptyIdenticalRules, rule_of
from replicator.plugins.focal_loss import FocalLoss
from replicator.plugins.label_smoothing import LabelSmoothing
from replicator.plugins.mlp_head import MLPHead
from replicator.plugins.swap_ab import SwapAB, SwapView

from .conftest import RECIPES, TINY


def _logits_labels(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, 3, generator=g) * 2
    hard = F.one_hot(torch.randint(0, 3, (n,), generator=g), 3).float()
    soft = torch.softmax(torch.randn(n, 3, generator=g), dim=-1)
    return logits, hard, soft


def _rows(n=6, seed=0):
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        lab = [0.0, 0.0, 0.0]
        lab[rng.randrange(3)] = 1.0
        r = make_row(f"r{i}", [f"question {i}"], [f"answer a {i}" * (i + 1)], [f"b {i}"], lab,
                     model_a="gpt-4-0613", model_b="claude-2.1", source="test")
        r["teacher"] = {"t1": [0.6, 0.3, 0.1], "t2": [0.2, 0.5, 0.3]}
        rows.append(r)
    return rows


# ---------------------------------------------------------------- losses


@pytest.mark.parametrize("kind", ["hard", "soft"])
def test_focal_gamma_zero_equals_cross_entropy(kind):
    logits, hard, soft = _logits_labels()
    labels = hard if kind == "hard" else soft
    ce = CrossEntropy().loss()(logits, labels, {})
    focal0 = FocalLoss(gamma=0.0).loss()(logits, labels, {})
    assert torch.allclose(focal0, ce, rtol=0, atol=1e-6)
    focal2 = FocalLoss(gamma=2.0).loss()(logits, labels, {})
    assert focal2 < ce  # the focusing factor only down-weights
    # the hard-label form is Lin et al.'s -(1 - p_t)^gamma log p_t
    p = torch.softmax(logits, -1)
    pt = (p * hard).sum(-1)
    expected = (-(1 - pt) ** 2 * torch.log(pt)).mean()
    assert torch.allclose(FocalLoss(gamma=2.0).loss()(logits, hard, {}), expected, atol=1e-6)


def test_label_smoothing_zero_equals_cross_entropy_and_matches_formula():
    logits, hard, soft = _logits_labels(seed=1)
    for labels in (hard, soft):
        ce = CrossEntropy().loss()(logits, labels, {})
        assert torch.allclose(LabelSmoothing(eps=0.0).loss()(logits, labels, {}), ce, rtol=0, atol=1e-7)
    smoothed = LabelSmoothing(eps=0.03).loss()(logits, hard, {})
    expected = -(((1 - 0.03) * hard + 0.01) * torch.log_softmax(logits, -1)).sum(-1).mean()
    assert torch.allclose(smoothed, expected, atol=1e-6)
    assert torch.allclose(smoothed, F.cross_entropy(logits, hard.argmax(-1), label_smoothing=0.03), atol=1e-6)
    assert not torch.allclose(smoothed, CrossEntropy().loss()(logits, hard, {}))


def test_losses_ignore_auxiliary_columns():
    logits, hard, _ = _logits_labels()
    wide = torch.cat([logits, torch.randn(len(logits), 7) * 50], dim=1)
    for plugin in (CrossEntropy(), LabelSmoothing(), FocalLoss()):
        fn = plugin.loss()
        assert torch.equal(fn(wide, hard, {}), fn(logits, hard, {}))


def test_distillation_against_teachers_equal_to_labels_has_closed_form():
    logits, hard, _ = _logits_labels(n=8, seed=2)
    rows = [{"id": str(i), "teacher": {"llama": lab.tolist(), "qwen": lab.tolist()}}
            for i, lab in enumerate(hard)]
    loss = DistillKLCos(teachers=["llama", "qwen"]).loss()(logits, hard, {"rows": rows})
    # one-hot teacher q = y: KL(q || s) = -log s_y = CE per row; CosEmb = 1 - s_y / |s|
    p = torch.softmax(logits, -1).double()
    y = hard.argmax(-1)
    ce = -torch.log(p[torch.arange(len(y)), y]).mean()
    cos = (1 - p[torch.arange(len(y)), y] / p.norm(dim=-1)).mean()
    expected = (ce + 2 * (ce + cos)) / 5
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # one teacher: (CE + KL + Cos) / 3
    one = DistillKLCos(teachers=["qwen"]).loss()(logits, hard, {"rows": rows})
    assert one.item() == pytest.approx(((ce + ce + cos) / 3).item(), rel=1e-5)


def test_distillation_with_soft_teachers_and_temperature():
    logits, hard, soft = _logits_labels(n=8, seed=3)
    rows = [{"id": str(i), "teacher": {"t": s.tolist()}} for i, s in enumerate(soft)]
    loss = DistillKLCos(teachers=["t"]).loss()(logits, hard, {"rows": rows})
    logs = torch.log_softmax(logits, -1)
    kl = (soft * (torch.log(soft) - logs)).sum(-1).mean()
    cos = (1 - F.cosine_similarity(soft, logs.exp(), dim=-1)).mean()
    assert loss.item() == pytest.approx(((F.cross_entropy(logits, hard) + kl + cos) / 3).item(), rel=1e-5)
    # T = 2: the teacher becomes softmax(log p / 2)
    loss2 = DistillKLCos(teachers=["t"], temperature=2.0).loss()(logits, hard, {"rows": rows})
    q = torch.softmax(torch.log(soft) / 2, -1)
    logs2 = torch.log_softmax(logits / 2, -1)
    kl2 = (q * (torch.log(q) - logs2)).sum(-1).mean()
    cos2 = (1 - F.cosine_similarity(q, logs2.exp(), dim=-1)).mean()
    assert loss2.item() == pytest.approx(((F.cross_entropy(logits, hard) + kl2 + cos2) / 3).item(), rel=1e-5)


def test_distillation_missing_teacher_names_row_and_stage():
    logits, hard, _ = _logits_labels(n=2)
    rows = [{"id": "a1", "teacher": {"t": [0.2, 0.3, 0.5]}},
            {"id": "b2", "teacher": {"other": [0.2, 0.3, 0.5]}}]
    with pytest.raises(ReplicatorError, match=r"row 'b2'.*stage 't'"):
        DistillKLCos(teachers=["t"]).loss()(logits, hard, {"rows": rows})
    with pytest.raises(RecipeError, match="teachers"):
        build_plugins({"loss": {"use": "distill_kl_cos"}}, "x.yaml")


# ---------------------------------------------------------------- swap augmentation and TTA


def test_swap_twice_is_identity_on_rows_labels_and_teachers():
    rows = _rows()
    swap = SwapAB(train="swapped")
    once = swap.augment(rows=rows, epoch=0, seed=0)
    assert all(o["label"] == [r["label"][i] for i in SWAP_PERM] for o, r in zip(once, rows, strict=True))
    assert once[0]["teacher"]["t1"] == [0.3, 0.6, 0.1] and once[0]["model_a"] == "claude-2.1"
    twice = swap.augment(rows=once, epoch=1, seed=0)
    for r, t in zip(rows, twice, strict=True):
        assert ({k: v for k, v in t.items() if k != "swapped"}
                == {k: v for k, v in r.items() if k != "swapped"})
        assert not t["swapped"]
        back = swap_row(swap_row(r))
        assert (back["label"] == r["label"] and back["teacher"] == r["teacher"]
                and back["response_a"] == r["response_a"])


def _fake_model(row):
    """A swap-consistent but permutation-sensitive 'model': scores from response lengths."""
    la, lb = len(" ".join(row["response_a"])), len(" ".join(row["response_b"]))
    z = np.array([0.3 * la - 0.1 * lb, 0.3 * lb - 0.1 * la, 0.05 * abs(la - lb) + 1.0]) / 10
    e = np.exp(z - z.max())
    return e / e.sum()


def test_tta_invert_apply_restores_probabilities():
    rows = _rows()
    view = SwapView()
    base = np.array([_fake_model(r) for r in rows])
    swapped = np.array([_fake_model(view.apply(r)) for r in rows])
    assert not np.allclose(base, swapped)  # the view does change what the model sees
    np.testing.assert_allclose(view.invert(swapped), base, atol=1e-12)
    synthetic = np.random.default_rng(0).dirichlet([1, 1, 1], size=10)
    np.testing.assert_array_equal(view.invert(view.invert(synthetic)), synthetic)
    assert ([v.name for v in SwapAB(test_time=True).tta()] == ["swap_ab"]
            and SwapAB(test_time=False).tta() == [])


def test_full_swap_batches_contain_both_orders_of_each_row():
    rows = _rows(n=40, seed=1)
    aug = SwapAB(train="full").augment(rows=rows, epoch=0, seed=0)
    assert len(aug) == 80
    units = units_of(aug)
    assert len(units) == 40 and all(len(u) == 2 for u in units)
    lengths = [len(r["response_a"][0]) + len(r["response_b"][0]) for r in aug]
    batches = length_grouped_batches(lengths, units, batch_size=6, rng=random.Random(0))
    seen = set()
    for b in batches:
        orders: dict[str, set] = {}
        for i in b:
            orders.setdefault(aug[i]["id"], set()).add(aug[i].get("swapped", False))
        assert all(o == {False, True} for o in orders.values()), b
        seen |= set(orders)
    assert seen == {r["id"] for r in rows}
    # a plain duplicate does not pair them
    dup = SwapAB(train="duplicate").augment(rows=rows, epoch=0, seed=0)
    assert len(units_of(dup)) == 80


def test_alternate_flips_per_epoch_and_random_is_seeded():
    rows = _rows(n=10)
    swap = SwapAB(train="alternate")
    for epoch in range(4):
        out = swap.augment(rows=rows, epoch=epoch, seed=0)
        assert len(out) == len(rows)
        assert all(r.get("swapped", False) == (epoch % 2 == 1) for r in out)
    rnd = SwapAB(train="random", p=0.5)
    a = [r.get("swapped", False) for r in rnd.augment(rows=rows, epoch=0, seed=3)]
    assert a == [r.get("swapped", False) for r in rnd.augment(rows=rows, epoch=0, seed=3)]
    assert SwapAB(train="none").augment(rows=rows, epoch=1, seed=0) == rows


# ---------------------------------------------------------------- post-processing


def _overconfident(n=400, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    logits = rng.normal(size=(n, 3))
    logits[np.arange(n), y] += 1.0  # some signal...
    logits *= 4.0  # ...far too confident
    p = np.exp(logits - logits.max(1, keepdims=True))
    return p / p.sum(1, keepdims=True), np.eye(3)[y]


def test_temperature_one_and_identity_platt_change_nothing():
    probs, labels = _overconfident()
    for plugin in (TemperatureScaling(), TemperatureScaling(fixed_temperature=1.0), PlattScaling()):
        np.testing.assert_allclose(plugin.postprocess(probs=probs, rows=[], fit=None), probs, atol=1e-12)
    # a fixed temperature wins over the fit
    np.testing.assert_allclose(
        TemperatureScaling(fixed_temperature=1.0).postprocess(probs=probs, rows=[], fit=(probs, labels)),
        probs, atol=1e-12)
    from replicator.plugins.calibration import apply_platt, apply_temperature

    np.testing.assert_allclose(apply_temperature(probs, 1.0), probs, atol=1e-12)
    np.testing.assert_allclose(apply_platt(probs, [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]), probs, atol=1e-12)
    np.testing.assert_allclose(apply_platt(probs, np.ones(3) * (1 + 1e-12), np.zeros(3)), probs, atol=1e-9)


def test_fitted_calibration_improves_log_loss_of_overconfident_predictions():
    fit_p, fit_y = _overconfident(seed=0)
    test_p, test_y = _overconfident(seed=1)
    ts = TemperatureScaling()
    assert ts.temperature((fit_p, fit_y)) > 1.5  # softer
    before = log_loss(test_p, test_y)
    after_t = log_loss(ts.postprocess(probs=test_p, rows=[], fit=(fit_p, fit_y)), test_y)
    after_p = log_loss(PlattScaling().postprocess(probs=test_p, rows=[], fit=(fit_p, fit_y)), test_y)
    assert after_t < before - 0.1 and after_p < before - 0.1
    out = PlattScaling().postprocess(probs=test_p, rows=[], fit=(fit_p, fit_y))
    np.testing.assert_allclose(out.sum(1), 1.0, atol=1e-12)


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


# ---------------------------------------------------------------- heads


def test_model_family_normalisation():
    cases = {"gpt-4-0613": "gpt-4", "gpt-4-1106-preview": "gpt-4", "gpt-3.5-turbo-0125": "gpt-3.5-turbo",
             "claude-1": "claude-v1", "claude-instant-1": "claude-instant-v1", "claude-2.1": "claude-2",
             "claude-3-opus-20240229": "claude-3-opus", "mixtral-8x7b-instruct-v0.1": "mixtral-8x7b-instruct",
             "gemini-1.5-pro-api-0409-preview": "gemini-1.5-pro-api", "openchat-3.5-0106": "openchat-3.5",
             " Llama-2-70B-Chat ": "llama-2-70b-chat", None: None, "": None}
    assert {k: model_family(k) for k in cases} == cases
    fams = ["gpt-4", "claude-2"]
    assert ([family_index(n, fams) for n in ("gpt-4-0314", "claude-2.0", "vicuna-13b", None)]
            == [0, 1, 2, IGNORE_INDEX])


def test_mlp_head_shape():
    head = MLPHead().head(hidden_size=16, num_labels=3, model=None)
    kinds = [type(m).__name__ for m in head]
    assert kinds == ["Dropout", "Linear", "Dropout", "GELU", "Linear"]
    assert head[1].out_features == 8 and head[4].out_features == 3 and head[0].p == 0.1
    assert head(torch.randn(2, 5, 16)).shape == (2, 5, 3)


def _tiny_model(head_block, seed=0):
    from replicator.core.model.loading import load_model

    r = resolve(RECIPES / "smoke.yaml", [], TINY + [f"plugins.head={head_block}"], check_plugins=False)
    plugins = build_plugins(r.final.plugins, "x")
    torch.manual_seed(seed)
    model, tok, info = load_model(r.final.model, plugins, train=True)
    return model, tok, info, plugins, r.final


def test_aux_model_heads_train_and_are_absent_at_prediction(isolated):
    from replicator.core.data.competition import read_competition_csv
    from replicator.core.predict.views import predict_probs
    from replicator.core.tokens.batches import Encoder, collate

    torch.set_num_threads(1)
    model, tok, info, plugins, stage = _tiny_model(
        "{use: aux_model_heads, families: [gpt-4, claude-2, vicuna-13b]}")
    assert "aux_loss" in info
    rows = read_competition_csv(data_dir() / "lmsys-chatbot-arena" / "train.csv", require_labels=True)[:32]
    for r in rows:  # names the model can learn: a refusal comes from "vicuna", a full answer from "gpt-4"
        for side in ("a", "b"):
            r[f"model_{side}"] = "vicuna-13b" if "sorry" in r[f"response_{side}"][0] else "gpt-4-0613"
    enc = Encoder(plugins, tok)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    loss_fn = plugins.one("loss")
    aux_hist = []
    model.train()
    for step in range(40):
        batch = rows[(step * 8) % 32:(step * 8) % 32 + 8]
        ids, mask = collate([enc(r, 128) for r in batch], tok.pad_token_id, "cpu")
        logits = model(input_ids=ids, attention_mask=mask).logits
        assert logits.shape == (8, 3 + 2 * 4)
        labels = torch.tensor([r["label"] for r in batch])
        extra = {"rows": batch, "input_ids": ids, "attention_mask": mask}
        aux = info["aux_loss"](logits, extra)
        (loss_fn(logits, labels, extra) + aux).backward()
        opt.step()
        opt.zero_grad()
        aux_hist.append(aux.item())
    assert np.mean(aux_hist[-4:]) < 0.5 * np.mean(aux_hist[:4]), [round(x, 3) for x in aux_hist[::4]]
    # prediction: 3 columns, independent of the auxiliary weights
    preds = predict_probs(model, tok, plugins, rows[:8], 128, 4096, progress=False, use_tta=False)["identity"]
    assert preds.shape == (8, 3)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if ".model_a." in n or ".model_b." in n:
                p.add_(torch.randn_like(p) * 5)
    again = predict_probs(model, tok, plugins, rows[:8], 128, 4096, progress=False, use_tta=False)["identity"]
    np.testing.assert_allclose(again, preds, atol=1e-6)


def test_aux_loss_ignores_unknown_names():
    head = AuxModelHeads(families=["gpt-4"]).head(hidden_size=4, num_labels=3, model=None)
    logits = torch.randn(2, 3 + 4)
    rows = [{"model_a": None, "model_b": " "}, {"model_a": None, "model_b": None}]
    assert head.aux_loss(logits, {"rows": rows}).item() == 0.0
    rows[0]["model_a"] = "gpt-4-0314"
    expected = 0.1 * F.cross_entropy(logits[:1, 3:5], torch.tensor([0]))
    assert head.aux_loss(logits, {"rows": rows}).item() == pytest.approx(expected.item(), rel=1e-6)


# ---------------------------------------------------------------- inside real (tiny) runs


def _run(overrides):
    from replicator.core.run.pipeline import run_recipe as run

    r = resolve(RECIPES / "smoke.yaml", [], TINY + ["train.epochs=2"] + overrides, data_dir=data_dir())
    return run(r, data_dir(), progress=False)


@pytest.mark.parametrize("overrides", [
    ["plugins.head={use: aux_model_heads}", "plugins.loss={use: focal_loss, gamma: 1.0}",
     "plugins.swap={use: swap_ab, train: full}", "plugins.temp={use: temperature_scaling}"],
    ["plugins.head={use: mlp_head}", "plugins.loss={use: label_smoothing}",
     "plugins.swap={use: swap_ab, train: alternate}", "plugins.platt={use: platt_scaling}",
     "plugins.rules={use: empty_identical_rules}"],
], ids=["aux-focal-full-temperature", "mlp-smoothing-alternate-platt-rules"])
def test_plugins_inside_a_tiny_run(isolated, overrides):
    torch.set_num_threads(1)
    _, m, _ = _run(overrides)
    for k in ("log_loss", "tta_log_loss", "final_log_loss"):
        assert math.isfinite(m[k])
    assert m["train_loss_last"] < m["train_loss_first"]
    if "train: full" in overrides[2]:
        assert m["n_train_rows_augmented"] == 2 * 2 * m["n_train_rows"]


def test_distillation_inside_a_two_stage_tiny_run(isolated):
    torch.set_num_threads(1)
    _, m, _ = _run(["stages={teacher: {outputs: [train]}, student: "
                    "{plugins: {loss: {use: distill_kl_cos, teachers: [teacher]}}}}"])
    assert m["final_stage"] == "student" and math.isfinite(m["final_log_loss"])
