"""The write-up author's solution (recipes/author.yaml) end to end with tiny random models: both members,
the fixed 0.71 / 0.29 blend of their rows, and a valid submission from the ensemble."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from replicator.core.run.combination import plan_combination, run_plan
from replicator.core.run.submission import predict
from replicator.core.scoring.row_predictions import read_row_predictions
from replicator.core.util.layout import ROW_PREDICTIONS

from ..conftest import RECIPES


def test_author_tiny_ensemble_blends_071_029_and_predicts(isolated, tmp_path, rich_data_dir, monkeypatch):
    monkeypatch.setenv("REPLICATOR_DATA_DIR", str(rich_data_dir))  # the tiny toggle's AlpacaEval pairs
    p = plan_combination(RECIPES / "author.yaml", ["tiny"], ["train.epochs=1"], data_dir=rich_data_dir)
    result = run_plan(p, rich_data_dir, progress=False)
    assert [label for label, *_ in result["members"]] == ["gemma", "llama"]
    kind, folder, metrics, _ = result["combinations"][0]
    assert kind == "ensemble" and np.isfinite(metrics["final_log_loss"])
    assert json.loads((folder / "combination.json").read_text())["weights"] == {"gemma": 0.71, "llama": 0.29}
    gemma, llama = (read_row_predictions(m.run_dir / ROW_PREDICTIONS) for m in p.members())
    blend = read_row_predictions(folder / ROW_PREDICTIONS)
    pos = {i: k for k, i in enumerate(llama.ids)}
    order = [pos[i] for i in gemma.ids]
    assert blend.ids == gemma.ids
    assert np.allclose(blend.views["final"], 0.71 * gemma.views["final"] + 0.29 * llama.views["final"][order])
    # predict with the ensemble: both members, blended, a valid submission
    test_csv = rich_data_dir / "lmsys-chatbot-arena" / "test.csv"
    predict(str(folder), test_csv, tmp_path / "sub.csv", progress=False)
    sub, test = pd.read_csv(tmp_path / "sub.csv"), pd.read_csv(test_csv)
    assert list(sub.columns) == ["id", "winner_model_a", "winner_model_b", "winner_tie"]
    assert sub["id"].tolist() == test["id"].tolist()
    probs = sub[["winner_model_a", "winner_model_b", "winner_tie"]].to_numpy()
    assert ((probs >= 0) & (probs <= 1)).all() and (probs.sum(axis=1).round(6) == 1).all()
