"""The keys of a stage's steps (core/stages/steps.py): a change touches only the steps that read it."""

from __future__ import annotations

from replicator.core.config.recipe import resolve
from replicator.core.data.files import data_dir
from replicator.core.run.fingerprint import fingerprint
from replicator.core.stages import steps

from ..conftest import QUICK, RECIPES
from ..helpers import _resolved


def _keys(r):
    return steps.stage_keys(r, fingerprint(r, data_dir()))


def test_each_shared_toggle_changes_the_steps_it_touches_only(isolated):
    base = _keys(_resolved())["main"]

    def changed(toggle):
        k = _keys(_resolved([toggle]))["main"]
        return {"train": k.train != base.train, "predict": k.predict != base.predict}

    # prediction and postprocessing only: the trained weights are the base's
    assert changed("tta") == {"train": False, "predict": False}  # the identity view is the base's too
    assert changed("temperature") == {"train": False, "predict": False}
    single = _keys(_resolved(["single_split"]))["main"]  # a cross-fitted stage predicts in its training dtype
    int8 = _keys(_resolved(["single_split", "int8_inference"]))["main"]
    assert (int8.train == single.train, int8.predict == single.predict) == (True, False)
    # training changes
    for toggle in ("swap", "focal", "label_smoothing", "lengths", "truncate_start"):
        assert changed(toggle)["train"], toggle
    # a training setting, a data setting, the seed
    assert _keys(_resolved(overrides=["train.lr=0.01"]))["main"].train != base.train
    assert _keys(_resolved(overrides=["plugins.data.valid_fraction=0.3"]))["main"].train != base.train
    assert _keys(_resolved(overrides=["seed=8"]))["main"].train != base.train
    # predict settings are prediction, unless the training evaluates periodically (they pick the weights)
    assert _keys(_resolved(overrides=["predict.max_length=64"]))["main"].train == base.train
    periodic = _keys(_resolved(overrides=["train.eval_every=2"]))["main"].train
    assert _keys(_resolved(overrides=["train.eval_every=2",
                                      "predict.max_length=64"]))["main"].train != periodic


def test_a_later_stage_keys_on_what_it_reads_from_earlier_stages(isolated, tmp_path):
    recipe = tmp_path / "two.yaml"
    recipe.write_text((RECIPES / "smoke.yaml").read_text() + """
stages:
  teacher: {outputs: [train]}
  student: {from: teacher, reinit_head: true}
""")

    def keys(*overrides):
        r = resolve(recipe, [], QUICK + list(overrides), data_dir=data_dir())
        return _keys(r)

    base = keys()
    # the teacher's TTA changes its outputs (teacher probabilities averaged over the views), so the student
    # retrains
    no_tta = keys("stages.teacher.plugins.swap.test_time=false")
    assert (no_tta["teacher"].train == base["teacher"].train
            and no_tta["teacher"].outputs != base["teacher"].outputs)
    assert no_tta["student"].train != base["student"].train
    # 8-bit inference of the teacher: outputs come before the 8-bit reload, nothing downstream changes
    int8 = keys("stages.teacher.predict.load_in_8bit=true")
    assert (int8["teacher"].outputs == base["teacher"].outputs
            and int8["student"].train == base["student"].train)
    gptq = keys("stages.teacher.predict.load_in_8bit=true", "stages.teacher.predict.quantizer=gptq")
    assert (gptq["teacher"].outputs == base["teacher"].outputs
            and gptq["student"].train == base["student"].train)
    assert gptq["teacher"].predict != int8["teacher"].predict  # its views are predicted again
    # the teacher's training changes everything after it
    lr = keys("stages.teacher.train.lr=0.01")
    assert lr["teacher"].train != base["teacher"].train and lr["student"].train != base["student"].train


def test_plugin_parameters_go_to_the_step_that_reads_them(isolated):
    r = _resolved()
    parts = steps.plugin_parts(r.final, r.file)
    by_alias = {step: {a: b for a, b in blocks} for step, blocks in parts.items()}
    assert by_alias["train"]["swap"] == {"use": "swap_ab", "train": "random", "p": 0.5}
    assert by_alias["predict"]["swap"] == {"use": "swap_ab", "test_time": True}
    assert set(by_alias["postprocess"]) == {"temp", "clip"} and "temp" not in by_alias["train"]
    assert [a for a, _ in parts["train"]] == ["data", "prompt", "head", "loss", "swap"]  # recipe order kept
