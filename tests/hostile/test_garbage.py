"""Garbage where runs keep their state (issue 24, the tracebacks), as a failing disk or a hand edit leaves it:
a cached train step's ``checkpoint.pt`` or ``train.json``, a run's ``metrics.json``. None ends in a traceback
and none in exit 0 with a wrong output; rerunning the same command repairs each:

* ``checkpoint.pt`` that cannot be resumed from (garbage, truncated, empty, not a checkpoint, weights that do
  not fit the model): a warning names it, it is removed and the stage trains from the start, to the very
  weights an untouched run trains; one whose weights fit but whose optimizer state does not is an error naming
  it and saying to delete it (exit 2), and after that the rerun recovers;
* ``train.json`` garbage: the step's manifest no longer vouches for it, the step trains again;
* ``metrics.json`` empty or not JSON: ``report`` refuses it, named (exit 2); ``run`` recomputes it.

The variant ``-t tta`` (swap TTA off) shares the base run's train step, so it is what reads the step's
files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from .helpers import assert_refused, invoke, outside, tree

TTA_OFF = ["-t", "tta"]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _step(steps: Path) -> Path:
    (found,) = steps.glob("main-train-*")
    return found


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _not_a_checkpoint(p: Path) -> None:
    import torch

    torch.save({"hello": "world"}, p)


def _weights_that_do_not_fit(p: Path) -> None:
    import torch

    state = torch.load(p, weights_only=False)
    state["trainable"] = {"model.no_such_layer.weight": torch.zeros(3)}
    torch.save(state, p)


CHECKPOINT = {
    "garbage": lambda p: p.write_bytes(b"\x00garbage\xff" * 7),
    "truncated": _truncate,
    "empty": lambda p: p.write_bytes(b""),
    "not a checkpoint": _not_a_checkpoint,
    "weights that do not fit": _weights_that_do_not_fit,
}


@pytest.mark.parametrize("case", list(CHECKPOINT))
def test_a_checkpoint_that_cannot_be_resumed_from_is_named_removed_and_training_starts_over(
        case, tiny_copy, isolated, synthetic_data_dir):
    recipe, run_dir, art, steps = tiny_copy
    step = _step(steps)
    weights = _sha(step / "final.safetensors")
    (step / "train.json").unlink()  # the step did not finish: the next run trains it, from its checkpoint
    CHECKPOINT[case](step / "checkpoint.pt")
    keep, data = outside(isolated), tree(synthetic_data_dir)
    out = invoke(["run", recipe, *TTA_OFF])
    assert out.exit_code == 0, out.output
    assert "Traceback" not in out.output
    named = f"{step / 'checkpoint.pt'} cannot be resumed from"
    warned = [line for line in out.output.splitlines() if named in line]
    assert warned and "trains from the start" in warned[0], out.output
    assert "resuming from" not in out.output
    assert _sha(step / "final.safetensors") == weights  # the weights an untouched run trains
    assert json.loads((step / "train.json").read_text())["resumed_at_step"] == 0
    assert outside(isolated) == keep and tree(synthetic_data_dir) == data
    again = invoke(["run", recipe, *TTA_OFF])
    assert again.exit_code == 0 and "reused:" in again.output, again.output


def test_a_checkpoint_whose_optimizer_state_does_not_fit_says_to_delete_it_and_the_rerun_recovers(
        tiny_copy, isolated):
    import torch

    recipe, run_dir, art, steps = tiny_copy
    step = _step(steps)
    weights = _sha(step / "final.safetensors")
    (step / "train.json").unlink()
    state = torch.load(step / "checkpoint.pt", weights_only=False)
    state["optimizer"] = {"state": "not an optimizer state"}
    torch.save(state, step / "checkpoint.pt")
    keep = outside(isolated)
    out = invoke(["run", recipe, *TTA_OFF])
    assert_refused(out, f"{step / 'checkpoint.pt'}: cannot resume from it", "delete it and rerun")
    assert outside(isolated) == keep
    (step / "checkpoint.pt").unlink()  # as the message says
    again = invoke(["run", recipe, *TTA_OFF])
    assert again.exit_code == 0 and "finished:" in again.output, again.output
    assert _sha(step / "final.safetensors") == weights


def test_a_garbage_train_json_is_not_trusted_and_the_step_trains_again(tiny_copy, isolated):
    recipe, run_dir, art, steps = tiny_copy
    step = _step(steps)
    result, weights = json.loads((step / "train.json").read_text()), _sha(step / "final.safetensors")
    (step / "train.json").write_bytes(b"\x00garbage\xff")
    keep = outside(isolated)
    out = invoke(["run", recipe, *TTA_OFF])
    assert out.exit_code == 0, out.output
    assert "Traceback" not in out.output
    assert any("train.json: changed since the run finished" in line and "not reused" in line
               for line in out.output.splitlines()), out.output
    again = json.loads((step / "train.json").read_text())
    assert again["train_loss_history"] == result["train_loss_history"]
    assert _sha(step / "final.safetensors") == weights
    assert outside(isolated) == keep


METRICS = {"empty": b"", "not JSON": b"{nope", "garbage": b"\x00garbage\xff", "a JSON list": b"[]"}


@pytest.mark.parametrize("case", list(METRICS))
def test_a_garbage_metrics_json_is_refused_by_report_and_recomputed_by_run(case, tiny_copy, isolated):
    recipe, run_dir, art, steps = tiny_copy
    before = json.loads((run_dir / "metrics.json").read_text())
    (run_dir / "metrics.json").write_bytes(METRICS[case])
    keep = outside(isolated)
    assert_refused(invoke(["report", run_dir, "-o", isolated / "cmp"]), f"{run_dir / 'metrics.json'}: ")
    assert not (isolated / "cmp").exists() and outside(isolated) == keep
    out = invoke(["run", recipe])
    assert out.exit_code == 0 and f"finished: {run_dir}" in out.output, out.output
    after = json.loads((run_dir / "metrics.json").read_text())
    assert after["final_log_loss"] == before["final_log_loss"]
    assert invoke(["report", run_dir, "-o", isolated / "cmp"]).exit_code == 0
