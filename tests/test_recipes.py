"""The shipped recipes: each resolves with each of its toggles (pinned with data_regression), cites
SOLUTIONS.md, and runs its whole stage pipeline end to end with tiny random models (``-t tiny``)."""

from __future__ import annotations

import math
import re

import pytest
import yaml

from replicator.core.config.recipe import resolve
from replicator.core.run.pipeline import run_recipe as run

from .conftest import RECIPES

ALL = sorted(p.name for p in RECIPES.glob("*.yaml"))
SOLUTIONS = ["1st.yaml", "2nd.yaml", "3rd.yaml", "5th.yaml", "9th.yaml", "16th.yaml"]


def test_the_six_solutions_and_the_smokes_are_shipped():
    assert set(SOLUTIONS) | {"smoke.yaml", "smoke_two_stage.yaml"} <= set(ALL)


@pytest.mark.parametrize("name", ALL)
def test_recipe_resolves_with_every_toggle(name, data_regression):
    path = RECIPES / name
    toggles = list(yaml.safe_load(path.read_text()).get("toggles") or {})
    pinned = {}
    for t in [None, *toggles]:
        r = resolve(path, [t] if t else [])
        pinned[t or "(base)"] = {"config_hash": r.config_hash[:16], "stages": [
            {"name": s.name, "from": s.from_stage, "reinit_head": s.reinit_head, "outputs": list(s.outputs),
             "base": s.model.base, "lora_r": s.model.lora.r if s.model.lora else None, "lr": s.train.lr,
             "max_length": [s.train.max_length, s.predict.max_length],
             "plugins": {a: b["use"] for a, b in s.plugins.items()}}
            for s in r.stages]}
    data_regression.check(pinned)


@pytest.mark.parametrize("name", SOLUTIONS)
def test_solution_recipe_header_cites_its_sources(name):
    head = "".join(line for line in (RECIPES / name).read_text().splitlines(True) if line.startswith("#"))
    assert "SOLUTIONS.md" in head and re.search(r"\[P\d+\]", head)
    assert "Run:" in head and "Needs:" in head


@pytest.mark.parametrize("name", [n for n in ALL if n != "smoke.yaml"])
def test_recipe_pipeline_runs_with_tiny_models(name, isolated, rich_data_dir):
    r = resolve(RECIPES / name, ["tiny"], ["train.epochs=1"], data_dir=rich_data_dir)
    _, m, _ = run(r, rich_data_dir, progress=False)
    assert list(m["stages"]) == [s.name for s in r.stages]
    for s in m["stages"].values():
        assert math.isfinite(s["tta_log_loss"]) and s["optimizer_steps"] > 0
