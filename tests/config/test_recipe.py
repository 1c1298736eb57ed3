"""Recipe resolution (core/config/recipe.py): patches, toggles, overrides, stages, the settings' ranges and
errors that name file and key (before torch is imported); the shipped recipes, each resolved with each of
its toggles (pinned with data_regression under tests/config/test_recipe/)."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import pytest
import yaml

from replicator.core.config.recipe import FeaturesConfig, resolve
from replicator.core.errors import RecipeError

from ..conftest import ALL, CPU, RECIPES, SMOKE


def write(tmp_path, text, name="r.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


BASE = """
name: t
plugins:
  data: {use: kaggle_csv}
  prompt: {use: plain_turns}
  head: {use: default_head}
  loss: {use: cross_entropy}
"""


def test_smoke_recipe_resolves_with_toggles_and_overrides():
    # the shared toggle: swap augmentation off
    r = resolve(RECIPES / "smoke.yaml", ["swap"], ["train.lr=0.001"])
    assert r.config["plugins"]["swap"]["train"] == "none" and r.toggles == ["swap:off"]
    assert r.complete["plugins"]["swap"] == {"use": "swap_ab", "train": "none", "p": 0.5, "test_time": True}
    assert r.final.train.lr == 0.001
    assert len(r.config_hash) == 64
    assert r.config_hash != resolve(RECIPES / "smoke.yaml").config_hash


def test_misspelled_plugin_parameter_names_file_key_and_suggestion(tmp_path):
    p = write(tmp_path, BASE + "  swap: {use: swap_ab, tran: duplicate}\n")
    with pytest.raises(RecipeError) as e:
        resolve(p)
    msg = str(e.value)
    assert str(p) in msg and "plugins.swap.tran" in msg and "did you mean 'train'" in msg


@pytest.mark.parametrize("snippet, key, words", [
    ("  swap: {use: swapab}\n", "plugins.swap.use", "did you mean 'swap_ab'"),
    ("  swap: {use: swap_ab, p: high}\n", "plugins.swap.p", "expected a number"),
    ("  swap: {use: swap_ab, train: duplicat}\n", "plugins.swap.train", "did you mean 'duplicate'"),
    ("  swap: {use: swap_ab, p: 1.5}\n", "plugins.swap.p", "p must be in [0, 1]"),
    ("  loss2: {use: cross_entropy}\n", "plugins", "hook 'loss' needs exactly one plugin, found 2"),
])
def test_plugin_errors(tmp_path, snippet, key, words):
    p = write(tmp_path, BASE + snippet)
    with pytest.raises(RecipeError) as e:
        resolve(p)
    assert f"{p}: {key}:" in str(e.value) and words in str(e.value)


def test_missing_one_hook_provider(tmp_path):
    p = write(tmp_path, BASE.replace("  loss: {use: cross_entropy}\n", ""))
    with pytest.raises(RecipeError, match="hook 'loss' needs exactly one plugin, found 0"):
        resolve(p)


@pytest.mark.parametrize("snippet, key, words", [
    ("train: {lr: fast}\n", "train.lr", "expected a number"),
    ("train: {epoch: 2}\n", "train.epoch", "did you mean 'epochs'"),
    ("model: {lora: {rank: 8}}\n", "model.lora.rank", "unknown parameter"),
    ("modle: {}\n", "modle", "did you mean 'model'"),
    ("model: {dtype: fp16}\n", "model.dtype", "is not one of"),
    ("seed: abc\n", "seed", "expected an integer"),
])
def test_core_section_errors(tmp_path, snippet, key, words):
    p = write(tmp_path, BASE + snippet)
    with pytest.raises(RecipeError) as e:
        resolve(p)
    assert f"{p}: {key}:" in str(e.value) and words in str(e.value)


def test_unknown_toggle_and_bad_override(tmp_path):
    with pytest.raises(RecipeError, match="did you mean 'tiny'"):
        resolve(RECIPES / "smoke.yaml", ["tinyy"])
    with pytest.raises(RecipeError, match="train.batch_size"):
        resolve(RECIPES / "smoke.yaml", [], ["train.batch_size=many"])


def test_missing_data_file_fails_at_resolve(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    p = write(tmp_path, BASE)
    with pytest.raises(RecipeError) as e:
        resolve(p, data_dir=tmp_path / "nowhere")
    assert "plugins.data" in str(e.value) and "REPLICATOR_DATA_DIR" in str(e.value)


def test_stages_are_patches_and_from_must_be_earlier(tmp_path):
    p = write(tmp_path, BASE + """
stages:
  pre: {train: {lr: 1.0e-5}}
  fine: {from: pre, reinit_head: true}
""")
    r = resolve(p)
    assert [s.name for s in r.stages] == ["pre", "fine"]
    assert r.stages[0].train.lr == 1e-5 and r.stages[1].train.lr == 1e-4
    assert r.stages[1].from_stage == "pre" and r.stages[1].reinit_head
    bad = write(tmp_path, BASE + "stages:\n  a: {from: b}\n  b: {}\n", "bad.yaml")
    with pytest.raises(RecipeError, match="stages.a.from"):
        resolve(bad)
    bad2 = write(tmp_path, BASE + "stages:\n  a: {trian: {}}\n", "bad2.yaml")
    with pytest.raises(RecipeError, match="did you mean 'train'"):
        resolve(bad2)


def test_recipe_errors_do_not_import_torch(tmp_path):
    """The CLI fails on a misspelled parameter before any heavy import (DESIGN §10)."""
    p = write(tmp_path, BASE + "  swap: {use: swap_ab, tran: duplicate}\n")
    code = ("import sys\nfrom typer.testing import CliRunner\nfrom replicator.core.cli import app\n"
            f"r = CliRunner().invoke(app, ['show', {str(p)!r}])\n"
            "print(r.exit_code, 'torch' in sys.modules, 'transformers' in sys.modules)\nprint(r.output)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    first = out.splitlines()[0]
    assert first == "2 False False", out
    assert "plugins.swap.tran" in out and "did you mean 'train'" in out


def error_of(path, toggles=(), overrides=()) -> RecipeError:
    with pytest.raises(RecipeError) as e:
        resolve(path, list(toggles), list(overrides))
    return e.value


def assert_names(err: RecipeError, path, key: str, *words: str) -> None:
    assert err.file == str(path) and err.key == key, str(err)
    assert str(err).startswith(f"{path}: {key}: "), str(err)
    for w in words:
        assert w in str(err), (w, str(err))


@pytest.mark.parametrize("override, key, words", [
    ("trian.lr=1e-3", "trian", ["unknown top-level key", "did you mean 'train'", "override 'trian.lr=1e-3'"]),
    ("foo.bar=1", "foo", ["unknown top-level key", "known: name, description, seed"]),
    ("modle.base=x", "modle", ["did you mean 'model'"]),
    ("toggles.x={seed: 1}", "toggles", ["read from the recipe file only"]),
    ("train=5", "train", ["expected a mapping"]),
    ("plugins=[a, b]", "plugins", ["expected a mapping"]),
])
def test_override_with_an_unknown_or_wrong_top_level_key(override, key, words):
    assert_names(error_of(SMOKE, overrides=[override]), SMOKE, key, *words)


def test_toggle_that_adds_an_unknown_top_level_key(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text(SMOKE.read_text() + "  typo: {trian: {lr: 1.0e-3}}\n")
    resolve(p)  # the toggle is not applied: the recipe resolves
    assert_names(error_of(p, toggles=["typo"]), p, "trian", "did you mean 'train'", "toggle 'typo'")


def test_unknown_keys_inside_sections_after_overrides():
    assert_names(error_of(SMOKE, overrides=["train.lrr=1e-3"]), SMOKE, "train.lrr", "did you mean 'lr'")
    assert_names(error_of(SMOKE, overrides=["plugins.data.valid_fractoin=0.2"]), SMOKE,
                 "plugins.data.valid_fractoin", "did you mean 'valid_fraction'")


@pytest.mark.parametrize("override, key, words", [
    ("train.epochs=-0.01", "train.epochs", "must be >= 0, got -0.01"),
    ("train.epochs=-1", "train.epochs", "must be >= 0"),
    ("train.lr=0", "train.lr", "must be > 0"),
    ("train.head_lr=0", "train.head_lr", "must be > 0"),
    ("train.batch_size=0", "train.batch_size", "must be >= 1"),
    ("train.grad_accum=0", "train.grad_accum", "must be >= 1"),
    ("train.max_steps=-1", "train.max_steps", "must be >= 0"),
    ("train.max_rows=-5", "train.max_rows", "must be >= 0"),
    ("train.max_length=0", "train.max_length", "must be >= 8"),
    ("train.max_length=7", "train.max_length", "must be >= 8"),
    ("train.checkpoint_every=0", "train.checkpoint_every", "must be >= 1"),
    ("train.warmup_steps=-1", "train.warmup_steps", "must be >= 0"),
    ("train.weight_decay=-0.1", "train.weight_decay", "must be >= 0"),
    ("train.max_grad_norm=-1", "train.max_grad_norm", "must be >= 0"),
    ("train.max_grad_norm=.nan", "train.max_grad_norm", "must be >= 0, got nan"),
    ("train.lr_rule=alpha_over_r", "train.lr_rule", "unknown"),
    ("train.betas=[0.9]", "train.betas", "two values"),
    ("train.eps=0", "train.eps", "must be > 0"),
    ("train.lr_floor=1", "train.lr_floor", "must be in [0, 1)"),
    ("train.optimizer=sgd", "train.optimizer", "adamw_kahan"),
    ("train.warmup_ratio=0.1", "train.warmup_ratio", "not both"),
    ("predict.max_length=0", "predict.max_length", "must be >= 8"),
    ("predict.batch_tokens=0", "predict.batch_tokens", "must be >= 1"),
    ("predict.max_rows=-1", "predict.max_rows", "must be >= 0"),
    ("model.lora.r=0", "model.lora.r", "must be >= 1"),
    ("model.lora.alpha=0", "model.lora.alpha", "must be > 0"),
    ("model.lora.dropout=1", "model.lora.dropout", "must be in [0, 1)"),
    ("model.lora.dropout=-0.1", "model.lora.dropout", "must be in [0, 1)"),
    ("model.freeze_layers=-1", "model.freeze_layers", "must be >= 0"),
    ("model.load_in_4bit=true", None, None),  # alone it is fine
    ("stages.main.train.epochs=-0.5", "stages.main.train.epochs", "must be >= 0"),
])
def test_core_ranges(override, key, words):
    if key is None:
        resolve(SMOKE, [], [override])
        return
    assert_names(error_of(SMOKE, overrides=[override]), SMOKE, key, words)


def test_cross_field_check_names_its_field():
    err = error_of(SMOKE, overrides=["model.load_in_4bit=true", "model.load_in_8bit=true"])
    assert_names(err, SMOKE, "model.load_in_8bit", "exclusive")


def test_no_training_needs_a_cross_fitted_stage():
    """``train.epochs: 0`` (each fold predicts with its probed head, smoke's probe_only) resolves in a
    cross-fitted stage and names the field in a stage of one split."""
    assert resolve(SMOKE, ["probe_only"]).final.train.epochs == 0
    err = error_of(SMOKE, overrides=["train.crossfit=null", "train.epochs=0"])
    assert_names(err, SMOKE, "train.epochs", "needs a cross-fitted stage")


def test_bounds_at_their_edges_resolve():
    r = resolve(SMOKE, [], ["train.epochs=0.01", "train.max_length=8", "predict.max_length=8",
                            "train.max_steps=0", "train.checkpoint_every=1", "train.max_grad_norm=0",
                            "model.lora.dropout=0", "predict.batch_tokens=1",
                            "plugins.data.valid_fraction=0.999"])
    assert r.final.train.max_length == 8 and r.final.model.lora.dropout == 0.0


@pytest.mark.parametrize("overrides, key, words", [
    (["plugins.data.valid_fraction=0"], "plugins.data.valid_fraction", "must be in (0, 1), got 0.0"),
    (["plugins.data.valid_fraction=1"], "plugins.data.valid_fraction", "must be in (0, 1)"),
    (["plugins.data.folds=1"], "plugins.data.folds", "0 (hold-out) or >= 2"),
    (["plugins.data.folds=-2"], "plugins.data.folds", "must be >= 0"),
    (["plugins.data.folds=5", "plugins.data.fold=5"], "plugins.data.fold", "fold < folds"),
    (["plugins.data.folds=5", "plugins.data.fold=-1"], "plugins.data.fold", "must be >= 0"),
    (["plugins.data.fold=2"], "plugins.data.fold", "folds is 0"),
    (["plugins.data.max_rows=-1"], "plugins.data.max_rows", "must be >= 0"),
    (["plugins.data.splits=[]"], "plugins.data.splits", "non-empty"),
    (["plugins.data.train_file="], "plugins.data.train_file", "must not be empty"),
    (["plugins.swap.p=1.5"], "plugins.swap.p", "must be in [0, 1]"),
    (["plugins.clip.eps=0.5"], "plugins.clip.eps", "must be in [0, 0.333333)"),
    (["plugins.clip.eps=-1e-3"], "plugins.clip.eps", "must be in [0"),
    (["plugins.temp.fixed_temperature=0"], "plugins.temp.fixed_temperature", "must be > 0"),
    (["plugins.temp.bounds=[2, 1]"], "plugins.temp.bounds", "0 < low < high"),
    (["plugins.prompt.budgets=[0.5, -0.1, 0.6]"], "plugins.prompt.budgets", "non-negative fractions"),
    (["plugins.prompt.budgets=[0.5, 0.5]"], "plugins.prompt.budgets", "three"),
    (["plugins.loss={use: label_smoothing, eps: 1.0}"], "plugins.loss.eps", "must be in [0, 1)"),
    (["plugins.loss={use: focal_loss, gamma: -1}"], "plugins.loss.gamma", "must be >= 0"),
    (["plugins.loss={use: distill_kl_cos, teachers: [a], temperature: 0}"], "plugins.loss.temperature",
     "must be > 0"),
    (["plugins.loss={use: distill_kl_cos, teachers: []}"], "plugins.loss.teachers", "at least one"),
    (["plugins.head={use: mlp_head, dropout: 1.0}"], "plugins.head.dropout", "must be in [0, 1)"),
    (["plugins.head={use: aux_model_heads, weight: -0.5}"], "plugins.head.weight", "must be >= 0"),
    (["plugins.head={use: aux_model_heads, families: [GPT]}"], "plugins.head.families", "normalised"),
    (["plugins.temp={use: platt_scaling, l2: -1}"], "plugins.temp.l2", "must be >= 0"),
    (["plugins.rules={use: empty_identical_rules, identical: [0.5, 0.5, 0.5]}"], "plugins.rules.identical",
     "summing to 1"),
    (["plugins.prompt={use: qa_triple_quotes, prompt_words: -1}"], "plugins.prompt.prompt_words",
     "must be >= 0"),
    (["plugins.prompt={use: round_headers, min_tail_budget: -1}"], "plugins.prompt.min_tail_budget",
     "must be >= 0"),
    (["plugins.prompt={use: context_result, keep_turns: -1}"], "plugins.prompt.keep_turns", "must be >= 0"),
    (["plugins.extra={use: ultrafeedback_pairs, temperature: -1}"], "plugins.extra.temperature",
     "must be >= 0"),
    (["plugins.extra={use: arena_33k, max_rows: -1}"], "plugins.extra.max_rows", "must be >= 0"),
    (["plugins.extra={use: alpacaeval_pairs, max_rows: -1}"], "plugins.extra.max_rows", "must be >= 0"),
    (["plugins.extra={use: hh_rlhf, max_rows: -1}"], "plugins.extra.max_rows", "must be >= 0"),
    (["plugins.pool={use: pseudo_labels, file: p.csv, min_confidence: 1.5}"], "plugins.pool.min_confidence",
     "must be in [0, 1]"),
    (["plugins.pool={use: pseudo_labels, file: ''}"], "plugins.pool.file", "must not be empty"),
    (["plugins.pool={use: pseudo_labels, source: hh_rlhff}"], "plugins.pool.source",
     "did you mean 'hh_rlhf'"),
    (["plugins.pool={use: pseudo_labels, source: kaggle_csvv, file: x.csv}"], "plugins.pool.source",
     "not both"),
])
def test_plugin_ranges(overrides, key, words):
    assert_names(error_of(SMOKE, overrides=overrides), SMOKE, key, words)


def test_settings_errors_do_not_import_torch(tmp_path):
    code = textwrap.dedent(f"""
        import sys
        from replicator.core.errors import RecipeError
        from replicator.core.config.recipe import resolve
        keys = []
        for o in (["trian.lr=1e-3"], ["train.checkpoint_every=0"], ["plugins.data.valid_fraction=0"],
                  ["plugins.loss={{use: label_smoothing, eps: 1.0}}"]):
            try:
                resolve({str(SMOKE)!r}, [], o)
            except RecipeError as e:
                keys.append(e.key)
        print(keys, 'torch' in sys.modules, 'transformers' in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == ("['trian', 'train.checkpoint_every', 'plugins.data.valid_fraction', 'plugins.loss.eps'] "
                   "False False"), out


SOLUTIONS = ["1st.yaml", "2nd.yaml", "3rd.yaml", "5th.yaml", "9th.yaml", "16th.yaml", "author.yaml"]


def test_the_seven_solutions_and_the_smokes_are_shipped():
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


def test_1st_only_the_student_predicts_in_8bit():
    r = resolve(RECIPES / "1st.yaml", check_plugins=False)
    for s in r.stages:
        assert s.predict.load_in_8bit == (s.name == "student"), s.name
        if s.outputs:  # teachers: trained and predicting in 4-bit
            assert s.model.load_in_4bit
    assert r.final.train.eval_every == 100  # [R1]: 400 micro-batches, 4 per optimizer step


@pytest.mark.real_data
@pytest.mark.parametrize("recipe", ["1st", "2nd", "3rd", "5th", "9th", "16th", "author"])
def test_tiny_toggle_finds_its_data_in_the_shared_folder(recipe):
    """The shared data folder as it is (no competition test.csv): each tiny toggle's sources are there."""
    from replicator.core.data.files import data_dir

    resolve(RECIPES / f"{recipe}.yaml", ["tiny"], data_dir=data_dir())


def test_batch_tokens_is_checked_and_resolves():
    from replicator.core.config.recipe import TrainConfig, resolve
    from replicator.core.params import ParamError

    from ..conftest import RECIPES

    with pytest.raises(ParamError, match="batch_tokens"):
        TrainConfig(batch_tokens=0)
    assert TrainConfig().batch_tokens is None
    assert resolve(RECIPES / "smoke.yaml", [], ["train.batch_tokens=2048"]).final.train.batch_tokens == 2048


def test_features_config_is_validated(isolated):
    with pytest.raises(RecipeError, match="model.features.layers"):
        resolve(CPU, [], ["model.features.layers=[]"])
    with pytest.raises(RecipeError, match="model.features.pool"):
        resolve(CPU, [], ["model.features.pool=max"])
    with pytest.raises(RecipeError, match="plugins.swap: stage main .* never calls the 'augment' hook"):
        resolve(CPU, [], ["plugins.swap.use=swap_ab"])
    with pytest.raises(RecipeError, match="toggle 'focal'.*fine-tunes no LM"):
        resolve(CPU, ["focal"])
    assert FeaturesConfig().C is None


def test_launch_is_a_patchable_section_and_not_in_the_run_id():
    r = resolve(RECIPES / "2nd.yaml", [], ["stages.stage1.launch={gpus: 8, parallel: ddp}"])
    assert [(s.launch.gpus, s.launch.parallel) for s in r.stages] == [
        (8, "ddp"), (4, "fsdp_full_shard"), (4, "fsdp_shard_grad_op"), (4, "fsdp_shard_grad_op"),
        (4, "fsdp_shard_grad_op")]
    assert r.config_hash == resolve(RECIPES / "2nd.yaml").config_hash
    with pytest.raises(RecipeError, match=r"stages.stage1.launch.parallel: parallel 'single' runs one"):
        resolve(RECIPES / "2nd.yaml", [], ["launch.parallel=single"])
    with pytest.raises(RecipeError, match=r"launch.parallel: parallel 'zero3' is sized .* fsdp_full_shard"):
        resolve(RECIPES / "16th.yaml", ["tiny"], ["launch.parallel=zero3", "launch.gpus=2"])
    assert resolve(RECIPES / "16th.yaml", ["tiny"], ["launch.parallel=zero2", "launch.gpus=2"]) \
        .final.launch.parallel == "zero2"  # DeepSpeed runs on a CPU too (its CPU accelerator, gloo)
    assert resolve(RECIPES / "16th.yaml", ["tiny"], ["launch.parallel=fsdp_full_shard", "launch.gpus=2"]) \
        .final.launch.parallel == "fsdp_full_shard"  # the runner shards on a CPU too (gloo)
    with pytest.raises(RecipeError, match=r"launch.gpu: gpu 'B200' is not a known name.*set gpu_memory_gb"):
        resolve(RECIPES / "16th.yaml", [], ["launch.gpu=B200"])
    assert resolve(RECIPES / "16th.yaml", [], ["launch.gpu=B200", "launch.gpu_memory_gb=180"]).final.launch \
        .memory_gib == 180
