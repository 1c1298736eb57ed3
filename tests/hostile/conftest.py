"""A finished run of a small recipe of the hostile suite's own (a tiny random Llama, LoRA, swap TTA, 48
training and 24 validation rows: seconds), independent of the shipped recipes' settings, and a copy of it per
test.

The code hash in the run id (:func:`replicator.core.run.fingerprint.code_hash`) is pinned while the module's
tests run: a test reruns the same run and must find it under the same id whatever else changes in the
working tree meanwhile."""

from __future__ import annotations

import subprocess

import pytest

HOSTILE_RECIPE = """\
name: hostile
seed: 7
model:
  base: "tiny:llama"
  dtype: float32
  lora: {r: 8, alpha: 16, targets: all-linear}
train: {epochs: 1, lr: 3.0e-3, global_batch: 8, batch_size: 8, max_length: 128, warmup_steps: 0,
        checkpoint_every: 3, max_rows: 48}
predict: {max_length: 128, max_rows: 24}
plugins:
  data:   {use: kaggle_csv, valid_fraction: 0.15}
  prompt: {use: plain_turns}
  head:   {use: default_head}
  loss:   {use: cross_entropy}
  swap:   {use: swap_ab, train: random, test_time: true}
"""


@pytest.fixture(scope="module")
def pinned_code():
    """The code hash fixed for the module's tests (see the module docstring)."""
    from replicator.core.run import fingerprint

    mp = pytest.MonkeyPatch()
    mp.setattr(fingerprint, "code_hash", lambda folders=None: "hostile-suite")
    yield
    mp.undo()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, synthetic_data_dir, pinned_code):
    """``(root, recipe, run folder relative to root)``: the hostile recipe run once under ``root``."""
    from replicator.core.config.recipe import resolve
    from replicator.core.run.pipeline import run_recipe

    root = tmp_path_factory.mktemp("hostile_run")
    recipe = root / "hostile.yaml"
    recipe.write_text(HOSTILE_RECIPE, encoding="utf-8")
    mp = pytest.MonkeyPatch()
    for k, v in (("REPLICATOR_REPORTS", root / "reports"), ("REPLICATOR_ARTIFACTS", root / "artifacts"),
                 ("REPLICATOR_DATA_DIR", synthetic_data_dir), ("HF_HUB_OFFLINE", "1")):
        mp.setenv(k, str(v))
    try:
        run_dir, _, _ = run_recipe(resolve(recipe, data_dir=synthetic_data_dir), synthetic_data_dir,
                                   progress=False)
    finally:
        mp.undo()
    return root, recipe, run_dir.relative_to(root)


@pytest.fixture()
def tiny_copy(tiny_run, isolated):
    """A copy of :func:`tiny_run` under ``isolated`` (``cp -a``: hard links stay hard links): (recipe, run
    folder, its stage's artifacts folder, the recipe's train steps folder)."""
    root, recipe, rel = tiny_run
    for sub in ("reports", "artifacts"):
        subprocess.run(["cp", "-a", str(root / sub), str(isolated / sub)], check=True)
    run_dir = isolated / rel
    art = isolated / "artifacts" / "hostile"
    return recipe, run_dir, art / run_dir.name / "main", art / "steps"

