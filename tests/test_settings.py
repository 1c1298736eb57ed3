"""Settings are checked when a recipe resolves, on the config as patched by toggles and overrides:
unknown top-level keys (with a did-you-mean) and the range of every numeric setting, each a
RecipeError naming the recipe file and the full key path, before torch is imported (DESIGN §10)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap
import typing

import pytest

from replicator.core.config.recipe import resolve
from replicator.core.errors import RecipeError
from replicator.core.params import ParamError, build, check_params, param, range_text

from .conftest import RECIPES

SMOKE = RECIPES / "smoke.yaml"


def error_of(path, toggles=(), overrides=()) -> RecipeError:
    with pytest.raises(RecipeError) as e:
        resolve(path, list(toggles), list(overrides))
    return e.value


def assert_names(err: RecipeError, path, key: str, *words: str) -> None:
    assert err.file == str(path) and err.key == key, str(err)
    assert str(err).startswith(f"{path}: {key}: "), str(err)
    for w in words:
        assert w in str(err), (w, str(err))


# ---------------------------------------------------------------- unknown keys after patching


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


# ---------------------------------------------------------------- ranges of the core sections


@pytest.mark.parametrize("override, key, words", [
    ("train.epochs=0", "train.epochs", "must be > 0, got 0.0"),
    ("train.epochs=-1", "train.epochs", "must be > 0"),
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
    ("stages.main.train.epochs=0", "stages.main.train.epochs", "must be > 0"),
])
def test_core_ranges(override, key, words):
    if key is None:
        resolve(SMOKE, [], [override])
        return
    assert_names(error_of(SMOKE, overrides=[override]), SMOKE, key, words)


def test_cross_field_check_names_its_field():
    err = error_of(SMOKE, overrides=["model.load_in_4bit=true", "model.load_in_8bit=true"])
    assert_names(err, SMOKE, "model.load_in_8bit", "exclusive")


def test_bounds_at_their_edges_resolve():
    r = resolve(SMOKE, [], ["train.epochs=0.01", "train.max_length=8", "predict.max_length=8",
                            "train.max_steps=0", "train.checkpoint_every=1", "train.max_grad_norm=0",
                            "model.lora.dropout=0", "predict.batch_tokens=1",
                            "plugins.data.valid_fraction=0.999"])
    assert r.final.train.max_length == 8 and r.final.model.lora.dropout == 0.0


# ---------------------------------------------------------------- ranges of plugin parameters


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


def test_every_declared_bound_is_checked_by_build():
    """Each bounded parameter of each registered plugin and core section rejects a value just outside its
    bounds, naming <block>.<parameter>: a new bound cannot go unchecked."""
    from replicator.core.config.catalogue import catalogue
    from replicator.core.config.recipe import LoraConfig, ModelConfig, PredictConfig, TrainConfig

    cat = catalogue()
    classes = {**{c.__name__: c for c in (LoraConfig, ModelConfig, PredictConfig, TrainConfig)},
               **{n: cat[n] for n in cat}}
    required = {"distill_kl_cos": {"teachers": ["t"]}}
    seen = 0
    for name, cls in classes.items():
        hints = typing.get_type_hints(cls)
        fields = dataclasses.fields(cls)
        if name not in required and any(f.default is f.default_factory is dataclasses.MISSING
                                        for f in fields):
            continue  # a required parameter this test cannot fill in
        for f in fields:
            is_float = float in (typing.get_args(hints[f.name]) or (hints[f.name],))
            for kind, edge in f.metadata.get("bounds", {}).items():
                bad = edge if kind in ("gt", "lt") else edge - 1 if kind == "ge" else edge + 1
                with pytest.raises(RecipeError) as e:
                    build(cls, {**required.get(name, {}), f.name: float(bad) if is_float else int(bad)},
                          "r.yaml", f"blk.{name}")
                assert e.value.key == f"blk.{name}.{f.name}", (name, f.name, str(e.value))
                seen += 1
    assert seen >= 40, seen


def test_param_bounds_helpers():
    assert range_text({"gt": 0, "lt": 1}) == "in (0, 1)"
    assert range_text({"ge": 0, "le": 1}) == "in [0, 1]"
    assert range_text({"ge": 8}) == ">= 8"

    @dataclasses.dataclass(frozen=True)
    class Block:
        x: float = param(0.5, "a fraction", gt=0, lt=1)
        y: int | None = param(None, "optional count", ge=1)

        def __post_init__(self):
            check_params(self)

    with pytest.raises(ParamError, match=r"x must be in \(0, 1\), got 1.0") as e:
        Block(x=1.0)
    assert e.value.field == "x"
    assert Block(y=None).y is None
    with pytest.raises(ParamError, match="y must be >= 1"):
        Block(y=0)
    with pytest.raises(ParamError, match="x must be"):
        Block(x=float("inf"))


# ---------------------------------------------------------------- no heavy import on a settings error


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
