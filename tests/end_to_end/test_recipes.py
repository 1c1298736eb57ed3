"""Each shipped recipe runs its whole stage pipeline end to end with tiny random models (``-t tiny``), in
fp32 and under the dtype rules of a GPU run (bf16 weights, as ``model.dtype: auto`` loads on CUDA; the
trainable weights fp32 masters, core/model/precision.py)."""

from __future__ import annotations

import math

import pytest

from replicator.core.config.recipe import resolve
from replicator.core.run.pipeline import run_recipe as run

from ..conftest import ALL, RECIPES

#: every recipe in fp32, and in bf16 where it loads an LM (a baseline has none)
CASES = [(n, d) for n in ALL if n != "smoke.yaml" for d in ("float32", "bfloat16")
         if d == "float32" or not n.startswith("baseline")]


@pytest.mark.parametrize(("name", "dtype"), CASES)
def test_recipe_pipeline_runs_with_tiny_models(name, dtype, isolated, rich_data_dir):
    r = resolve(RECIPES / name, ["tiny"], ["train.epochs=1", f"model.dtype={dtype}"], data_dir=rich_data_dir)
    _, m, _ = run(r, rich_data_dir, progress=False)
    assert list(m["stages"]) == [s.name for s in r.stages]
    for s in m["stages"].values():
        assert math.isfinite(s["tta_log_loss"]) and s["optimizer_steps"] > 0
        if dtype != "float32":  # a stage that loaded an LM says in which dtype
            assert s["model"]["dtype"] == dtype, s["model"]
