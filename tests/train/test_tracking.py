"""Live tracking (core/util/tracking.py) and the training callbacks (core/hookspecs.py: on_train_step,
on_evaluate, on_stage_end): a tiny run's TensorBoard event files and MLflow file store read back, the
tracker kept out of the run id, and a test plugin that receives every callback."""

from __future__ import annotations

import dataclasses
import json
from importlib.metadata import EntryPoint
from pathlib import Path

import numpy as np
import pytest
import yaml

from replicator.core.config import catalogue as manager
from replicator.core.config.canonical import complete_config
from replicator.core.config.recipe import resolve
from replicator.core.data.files import data_dir
from replicator.core.errors import RecipeError
from replicator.core.hookspecs import hookimpl
from replicator.core.run.fingerprint import fingerprint
from replicator.core.run.pipeline import run_recipe
from replicator.core.util import tracking
from replicator.core.util.layout import run_folders

#: a tiny LoRA recipe written for these tests (not a shipped one: those change on their own schedule),
#: evaluated every 2 of its 6 optimizer steps
TINY_RECIPE = {
    "name": "tinytrack", "seed": 7,
    "model": {"base": "tiny:llama", "dtype": "float32",
              "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "targets": "all-linear"}},
    "train": {"epochs": 1, "lr": 3.0e-3, "batch_size": 8, "max_length": 64, "max_rows": 48, "eval_every": 2,
              "checkpoint_every": 3, "warmup_steps": 0},
    "predict": {"max_length": 64, "max_rows": 16, "batch_tokens": 1024},
    "plugins": {"data": {"use": "kaggle_csv", "valid_fraction": 0.15}, "prompt": {"use": "plain_turns"},
                "head": {"use": "default_head"}, "loss": {"use": "cross_entropy"},
                "swap": {"use": "swap_ab", "train": "random", "test_time": True}},
}


def write_recipe(folder, **changes):
    """The tiny recipe as a file in ``folder``, top-level keys replaced by ``changes``."""
    path = folder / "tinytrack.yaml"
    path.write_text(yaml.safe_dump({**TINY_RECIPE, **changes}, sort_keys=False))
    return path


def _run(path, overrides=()):
    r = resolve(path, [], list(overrides), data_dir=data_dir())
    run_dir, metrics, reused = run_recipe(r, data_dir(), progress=False)
    assert not reused
    return r, run_dir, metrics


def test_tensorboard_events_hold_every_step_evaluation_and_result(isolated):
    pytest.importorskip("tensorboard", reason="the track extra")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert tracking.choose(None) == "tensorboard"  # installed: the default
    r, run_dir, m = _run(write_recipe(isolated))
    folder = run_folders(r.name, run_dir.name)[1] / "tracking" / "tensorboard" / "main"
    events = EventAccumulator(str(folder))
    events.Reload()

    def scalars(tag):
        return [(e.step, e.value) for e in events.Scalars(tag)]

    stage = m["stages"]["main"]
    history = stage["train_loss_history"]
    loss = scalars("train/loss")
    assert len(history) == m["optimizer_steps"] == 6
    assert [s for s, _ in loss] == list(range(1, len(history) + 1))
    assert np.allclose([v for _, v in loss], history, atol=1e-6, rtol=0)  # float32 of the same losses
    for tag in ("train/lr", "train/grad_norm", "train/tokens_per_second"):
        assert len(scalars(tag)) == 6 and all(v > 0 for _, v in scalars(tag)), tag
    assert scalars("train/tokens")[-1] == (6, m["train_tokens"])
    assert scalars("train/lr")[0][1] == pytest.approx(3.0e-3)  # no warm-up: the peak at the first step
    evals = scalars("eval/valid_log_loss")
    assert [(s, pytest.approx(v)) for s, v in evals] == [tuple(e) for e in stage["evals"]]
    assert [s for s, _ in evals] == [2, 4, 6]
    for key in ("final_log_loss", "tta_log_loss", "log_loss", "baseline_length_log_loss"):
        assert scalars(f"final/{key}") == [(6, pytest.approx(m[key]))], key
    # the resolved config and the run id as TensorBoard's hyper-parameters (accelerate also writes them out)
    hparams = yaml.safe_load(next(folder.rglob("hparams.yml")).read_text())
    assert hparams["run_id"] == run_dir.name and hparams["train.lr"] == 3.0e-3
    assert hparams["plugins.loss.use"] == "cross_entropy" and hparams["stage"] == "main"


def test_mlflow_store_holds_the_run(isolated, monkeypatch):
    """MLflow's local store in the run's folder (its SQLite file: MLflow 3's ./mlruns file store is in
    maintenance mode and refuses runs under a folder named ``artifacts``), read back with MLflow's client."""
    mlflow = pytest.importorskip("mlflow", reason="the track extra")
    pytest.importorskip("sqlalchemy", reason="the track extra: MLflow's SQLite store")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    r, run_dir, m = _run(write_recipe(isolated), ["tracking=mlflow"])
    folder = run_folders(r.name, run_dir.name)[1] / "tracking"
    assert (folder / "mlflow.db").is_file() and not (folder / "tensorboard").exists()
    client = mlflow.MlflowClient(tracking_uri=tracking.mlflow_uri(folder))
    experiment = client.get_experiment_by_name("tinytrack")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == f"{run_dir.name}/main" and run.data.tags["run_id"] == run_dir.name
    assert run.data.params["run_id"] == run_dir.name and float(run.data.params["train.lr"]) == 3.0e-3
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert [h.step for h in history] == list(range(1, 7))
    assert np.allclose([h.value for h in history], m["stages"]["main"]["train_loss_history"], atol=1e-6)
    assert run.data.metrics["final/final_log_loss"] == pytest.approx(m["final_log_loss"])
    assert [h.step for h in client.get_metric_history(run.info.run_id, "eval/valid_log_loss")] == [2, 4, 6]
    mlflow.set_tracking_uri("")  # the next test's default


def test_the_tracker_is_not_part_of_the_run_id(isolated):
    path = write_recipe(isolated)
    plain = resolve(path, [], [], data_dir=data_dir())
    ids = {fingerprint(resolve(path, [], [f"tracking={kind}"]), data_dir())["run_id"]
           for kind in ("tensorboard", "mlflow", "none", "auto")}
    assert ids == {fingerprint(plain, data_dir())["run_id"]}
    assert "tracking" not in complete_config(resolve(write_recipe(isolated, tracking="none"), [], []))


def test_an_unknown_or_missing_tracker_fails_at_resolve_time(isolated, monkeypatch):
    path = write_recipe(isolated)
    with pytest.raises(RecipeError, match=r"tracking: unknown tracker 'tensorbord'; known: auto, tensorb"):
        resolve(path, [], ["tracking=tensorbord"])
    monkeypatch.setattr(tracking, "installed", lambda kind: kind != "wandb")
    with pytest.raises(RecipeError, match=r"tracking: wandb: the wandb package is not installed \(pip "):
        resolve(path, [], ["tracking=wandb"])
    assert tracking.choose(None) == "tensorboard"
    monkeypatch.setattr(tracking, "installed", lambda kind: False)
    assert tracking.choose("auto") == "none"  # no tensorboard: no tracking, no error


def test_a_failing_tracker_costs_the_run_nothing(isolated, monkeypatch, caplog):
    def broken(self):
        raise ConnectionError("no route to the tracking server")

    monkeypatch.setattr(tracking.Tracker, "_new", broken)
    monkeypatch.setattr(tracking, "installed", lambda kind: True)
    r, run_dir, m = _run(write_recipe(isolated), ["tracking=tensorboard"])
    assert m["optimizer_steps"] == 6 and (run_dir / "metrics.json").is_file()
    assert "tensorboard tracking off (start: ConnectionError: no route" in caplog.text


# ---------------------------------------------------------------- the training callbacks

#: what the test plugin received: (hook, stage, step or None, metrics or results)
CALLS: list[tuple] = []


@dataclasses.dataclass(frozen=True)
class StepRecorder:
    """A test plugin implementing the three training callbacks: records every call in ``CALLS``."""

    @hookimpl
    def on_train_step(self, stage, step, metrics):
        CALLS.append(("on_train_step", stage, step, dict(metrics)))

    @hookimpl
    def on_evaluate(self, stage, step, metrics):
        CALLS.append(("on_evaluate", stage, step, dict(metrics)))

    @hookimpl
    def on_stage_end(self, stage, results):
        CALLS.append(("on_stage_end", stage, None, json.loads(json.dumps(results))))


@pytest.fixture
def recorder(monkeypatch):
    ep = EntryPoint(name="step_recorder", value=f"{__name__}:StepRecorder", group=manager.ENTRY_POINT_GROUP)
    monkeypatch.setattr(manager, "entry_points", lambda group: [ep] if group == ep.group else [])
    CALLS.clear()
    yield CALLS
    CALLS.clear()


def test_a_plugin_receives_every_training_callback(isolated, recorder):
    plugins = {**TINY_RECIPE["plugins"], "watch": {"use": "step_recorder"}}
    assert manager.plugin_hooks(StepRecorder) == ["on_train_step", "on_evaluate", "on_stage_end"]
    r, run_dir, m = _run(write_recipe(isolated, plugins=plugins), ["tracking=none"])
    steps = [c for c in recorder if c[0] == "on_train_step"]
    assert [c[2] for c in steps] == list(range(1, 7)) and {c[1] for c in steps} == {"main"}
    assert [round(c[3]["loss"], 6) for c in steps] == m["stages"]["main"]["train_loss_history"]
    assert all({"loss", "lr", "grad_norm", "tokens", "tokens_per_second"} <= set(c[3]) for c in steps)
    assert steps[-1][3]["tokens"] == m["train_tokens"]
    evals = [(c[2], c[3]["valid_log_loss"]) for c in recorder if c[0] == "on_evaluate"]
    assert evals == [tuple(e) for e in m["stages"]["main"]["evals"]]
    (end,) = [c for c in recorder if c[0] == "on_stage_end"]
    assert recorder[-1] is end and end[3]["final_log_loss"] == m["final_log_loss"]
    # the plugin observes: the numbers are those of the same run without it (same steps, same losses)
    CALLS.clear()
    _, _, plain = _run(write_recipe(isolated, name="tinyplain"), ["tracking=none"])
    assert plain["stages"]["main"]["train_loss_history"] == m["stages"]["main"]["train_loss_history"]
    assert plain["final_log_loss"] == m["final_log_loss"] and CALLS == []


def test_a_callback_with_a_wrong_argument_fails_at_resolve_time(isolated, monkeypatch):
    @dataclasses.dataclass(frozen=True)
    class Bad:
        @hookimpl
        def on_train_step(self, stage, step, loss):
            pass

    every = manager.catalogue()
    cat = {b["use"]: every[b["use"]] for b in TINY_RECIPE["plugins"].values()} | {"bad_watch": Bad}
    with pytest.raises(RecipeError, match=r"hook 'on_train_step' takes argument\(s\) 'loss' that the "
                                          r"hookspec on_train_step\(stage, step, metrics\) does not have"):
        manager.build_plugins({**TINY_RECIPE["plugins"], "w": {"use": "bad_watch"}}, "r.yaml", cat)
    with pytest.raises(ValueError, match="not a callback"):
        manager.build_plugins(TINY_RECIPE["plugins"], "r.yaml").notify("tta")


def test_track_on_the_command_line(isolated):
    from typer.testing import CliRunner

    from replicator.core.cli import app

    path = write_recipe(isolated)
    runner = CliRunner()
    bad = runner.invoke(app, ["run", str(path), "--track", "tensorbord"])
    assert bad.exit_code == 2 and "tracking: unknown tracker 'tensorbord'" in bad.output
    result = runner.invoke(app, ["run", str(path), "--track", "none", "-q"])
    assert result.exit_code == 0, result.output
    run_dir = Path(result.output.split("finished: ")[1].split()[0])
    assert not (run_folders("tinytrack", run_dir.name)[1] / "tracking").exists()
    # another tracker, the same run: reused, not recomputed
    again = runner.invoke(app, ["run", str(path), "--track", "tensorboard", "-q"])
    assert again.exit_code == 0 and f"reused: {run_dir} " in again.output, again.output
