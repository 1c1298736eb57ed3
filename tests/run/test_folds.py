"""Folds, the pure parts (core/run/folds.py): OOF concatenation, weight averaging, fold overrides."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from replicator.core.config.sections import FoldsConfig
from replicator.core.errors import RecipeError, ReplicatorError
from replicator.core.run.folds import average_weights, concat_oof, fold_overrides

from ..helpers import _preds


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
