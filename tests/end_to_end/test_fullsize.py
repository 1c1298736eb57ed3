"""What would go wrong at full size, in tiny runs: a teacher writes its outputs in the precision it trained
in (before an 8-bit reload), and periodic evaluation keeps the best weights."""

from __future__ import annotations

import math

from replicator.core.config.recipe import resolve

from ..conftest import RECIPES
from ..helpers import FULLSIZE_TINY as TINY


def test_stage_outputs_come_from_the_model_as_trained(rich_data_dir, tmp_path, monkeypatch):
    """A teacher stage with 8-bit inference writes its outputs (the logits later stages learn from)
    before the model is reloaded in 8-bit: in the precision it trained in."""
    from replicator.core.run import pipeline

    monkeypatch.setenv("REPLICATOR_REPORTS", str(tmp_path / "reports"))
    monkeypatch.setenv("REPLICATOR_ARTIFACTS", str(tmp_path / "artifacts"))
    events = []
    from replicator.core.model import inference as model_module

    real_outputs, real_load = pipeline.write_stage_outputs, model_module.load_for_inference

    def outputs(*a, **k):
        events.append("outputs")
        return real_outputs(*a, **k)

    def reload(cfg, plugins, weights, load_in_8bit=False, merge_lora=False, calibration=None):
        events.append("reload-8bit")
        return real_load(cfg, plugins, weights, load_in_8bit=False)

    monkeypatch.setattr(pipeline, "write_stage_outputs", outputs)
    monkeypatch.setattr("replicator.core.model.inference.load_for_inference", reload)  # via load_predictor
    r = resolve(RECIPES / "smoke.yaml", [], TINY + [
        "train.max_steps=1", "stages={teacher: {outputs: [train], predict: {load_in_8bit: true}}, "
        "student: {plugins: {loss: {use: distill_kl_cos, teachers: [teacher]}}}}"], data_dir=rich_data_dir)
    pipeline.run_recipe(r, rich_data_dir, progress=False)
    assert events[:2] == ["outputs", "reload-8bit"]


def test_eval_every_keeps_the_best_weights(rich_data_dir, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from replicator.core.run import pipeline

    monkeypatch.setenv("REPLICATOR_REPORTS", str(tmp_path / "reports"))
    monkeypatch.setenv("REPLICATOR_ARTIFACTS", str(tmp_path / "artifacts"))
    r = resolve(RECIPES / "smoke.yaml", [], TINY + ["train.eval_every=2", "train.max_steps=3",
                                                    "train.lr=0.05"], data_dir=rich_data_dir)
    run_dir, m, _ = pipeline.run_recipe(r, rich_data_dir, progress=False)
    evals = m["stages"]["main"]["evals"]
    assert [s for s, _ in evals] == [2, 3]
    best_step, best = min(evals, key=lambda e: e[1])
    assert m["best_step"] == best_step and math.isclose(m["best_valid_log_loss"], best)
    sart = tmp_path / "artifacts" / r.name / run_dir.name / "main"
    # steps.py
    best_file = next((tmp_path / "artifacts" / r.name / "steps").glob("main-train-*/best.safetensors"))
    final, kept = load_file(str(sart / "final.safetensors")), load_file(str(best_file))
    assert final.keys() == kept.keys() and all((final[k] == kept[k]).all() for k in final)
    assert math.isclose(m["log_loss"], best, rel_tol=1e-5)  # the evaluated model is the kept one
