"""Each shipped recipe runs its whole stage pipeline end to end with tiny random models (``-t tiny``)."""

from __future__ import annotations

import math

import pytest

from replicator.core.config.recipe import resolve
from replicator.core.run.pipeline import run_recipe as run

from ..conftest import ALL, RECIPES


@pytest.mark.parametrize("name", [n for n in ALL if n != "smoke.yaml"])
def test_recipe_pipeline_runs_with_tiny_models(name, isolated, rich_data_dir):
    r = resolve(RECIPES / name, ["tiny"], ["train.epochs=1"], data_dir=rich_data_dir)
    _, m, _ = run(r, rich_data_dir, progress=False)
    assert list(m["stages"]) == [s.name for s in r.stages]
    for s in m["stages"].values():
        assert math.isfinite(s["tta_log_loss"]) and s["optimizer_steps"] > 0
