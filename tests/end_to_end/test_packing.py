"""``train.packed``: a packed run trains to the numbers of a padded one."""

from __future__ import annotations

import numpy as np

from replicator.core.config.recipe import resolve
from replicator.core.data.files import data_dir
from replicator.core.run.pipeline import run_recipe

from ..conftest import RECIPES, TINY
from ..helpers import NO_DROPOUT


def test_a_packed_run_trains_to_the_numbers_of_a_padded_one(isolated):
    quick = [*TINY, NO_DROPOUT, "train.epochs=1", "train.max_rows=48", "predict.max_rows=24"]
    out = []
    for extra in ([], ["train.packed=true"]):
        _, metrics, _ = run_recipe(resolve(RECIPES / "smoke.yaml", [], [*quick, *extra]), data_dir(),
                                   progress=False)
        out.append(metrics)
    a, b = (m["stages"]["main"] for m in out)
    assert a["optimizer_steps"] == b["optimizer_steps"] > 1
    assert np.allclose(a["train_loss_history"], b["train_loss_history"], atol=1e-5, rtol=0)
    assert abs(out[0]["log_loss"] - out[1]["log_loss"]) <= 1e-5 and out[0]["run_id"] != out[1]["run_id"]
