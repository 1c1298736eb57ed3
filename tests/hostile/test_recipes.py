"""Hostile recipes (issue 24, strict recipes): duplicate keys, files that are not UTF-8 or not files,
names that are paths, non-string stage names, seeds, fold counts and feature layers out of range. Each is
refused when the recipe resolves (or, for what needs the data or the model's config, before anything is
written), by every command that reads the recipe, with exit 2 and one ``error:`` line naming the file and
the key: never a traceback, never a silent last-key-wins."""

from __future__ import annotations

import time

import pytest
import yaml

from ..conftest import QUICK, RECIPES, SMOKE
from .helpers import assert_refused, invoke, run_outputs

SMOKE_TEXT = SMOKE.read_text(encoding="utf-8")


def _line(text: str, start: str) -> int:
    """The 1-based number of the first line of ``text`` starting with ``start``."""
    return next(i for i, line in enumerate(text.splitlines(), 1) if line.startswith(start))


def _insert_after(text: str, start: str, new: str) -> str:
    lines = text.splitlines(keepends=True)
    i = _line(text, start)
    return "".join(lines[:i] + [new] + lines[i:])


def _smoke_with(tmp_path, text: str, name: str = "recipe.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------- duplicate keys

#: case -> (the smoke recipe changed, the key named, how its first and its last line start)
DUPLICATES = {
    "seed then seed": (lambda t: _insert_after(t, "seed: 7", "seed: 8\n"), "seed", "seed: 7", "seed: 8"),
    "two model blocks": (lambda t: t + "model:\n  base: tiny:gemma2\n", "model", "model:", "model:"),
    "two plugin blocks": (lambda t: _insert_after(t, "  data:", "  data: {use: kaggle_csv}\n"),
                          "plugins.data", "  data:", "  data:"),
    "two plugins sections": (lambda t: t + "plugins:\n  clip: {use: clip_probs}\n", "plugins", "plugins:",
                             "plugins:"),
    "a key twice in a flow mapping": (lambda t: t.replace("lora: {r: 16,", "lora: {r: 16, r: 8,"),
                                      "model.lora.r", "  lora:", "  lora:"),
    "a toggle twice": (lambda t: _insert_after(t, "toggles:", '  tiny: {model: {base: "tiny:gemma2"}}\n'),
                       "toggles.tiny", "  tiny:", "  tiny:"),
}


def _lines_of(text: str, first: str, last: str) -> tuple[int, int]:
    """The first line starting with ``first`` and the last one starting with ``last`` (1-based)."""
    lines = text.splitlines()
    return (next(i for i, x in enumerate(lines, 1) if x.startswith(first)),
            max(i for i, x in enumerate(lines, 1) if x.startswith(last)))


@pytest.mark.parametrize("case", list(DUPLICATES))
def test_a_key_given_twice_is_an_error_naming_the_file_the_key_and_both_lines(case, tmp_path, isolated):
    change, key, first, last = DUPLICATES[case]
    text = change(SMOKE_TEXT)
    path = _smoke_with(tmp_path, text)
    a, b = _lines_of(text, first, last)
    for args in (["show", path], ["run", path, *QUICK]):
        line = assert_refused(invoke(args), f"{path}: {key}: the key is given twice, on lines {a} and {b}")
        assert line.startswith(f"error: {path}: {key}:"), line
    assert run_outputs(isolated) == []


def test_merge_keys_may_override_what_they_bring_and_duplicates_under_an_anchor_are_found(tmp_path, isolated):
    """``<<: *anchor`` then one of the anchor's keys is YAML's override (1st.yaml's stages use it): accepted;
    a key twice inside the anchored mapping itself is not."""
    stages = ("stages:\n"
              "  first: &stage\n"
              "    train: {lr: 1.0e-3}\n"
              "  second:\n"
              "    <<: *stage\n"
              "    train: {lr: 2.0e-3}\n"
              "    from: first\n")
    ok = invoke(["show", _smoke_with(tmp_path, SMOKE_TEXT + stages, "merge.yaml"), *QUICK])
    assert ok.exit_code == 0, ok.output
    assert "# stages: first, second" in ok.output
    bad = stages.replace("    train: {lr: 1.0e-3}\n", "    train: {lr: 1.0e-3}\n    train: {lr: 3.0e-3}\n", 1)
    path = _smoke_with(tmp_path, SMOKE_TEXT + bad, "merge_bad.yaml")
    n = SMOKE_TEXT.count("\n")
    assert_refused(invoke(["show", path]), f"{path}: stages.first.train: the key is given twice, on lines "
                                           f"{n + 3} and {n + 4}")


# ---------------------------------------------------------------- files that are not recipe files

COMMANDS = {
    "run": ["run", "{path}", *QUICK],
    "plan": ["plan", "{path}"],
    "show": ["show", "{path}"],
    "ablate --list": ["ablate", "{path}", "--list"],
    "ablate": ["ablate", "{path}", "-t", "tta", "--dry-run"],
}
FILES = {
    "not UTF-8": (lambda p: p.write_bytes(b"seed: 7\nname: caf\xe9\n"),
                  "(file): not UTF-8 text (byte 0xe9 on line 2)"),
    "a folder": (lambda p: p.mkdir(), "(file): a folder, not a recipe file"),
    "missing": (lambda p: None, "(file): recipe file not found"),
}


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("kind", list(FILES))
def test_a_recipe_path_that_is_not_a_utf8_file_is_named_without_a_traceback(kind, command, tmp_path,
                                                                            isolated):
    path = tmp_path / "recipe.yaml"
    make, words = FILES[kind]
    make(path)
    args = [str(path) if a == "{path}" else a for a in COMMANDS[command]]
    assert_refused(invoke(args), f"error: {path}: {words}")
    assert run_outputs(isolated) == []


# ---------------------------------------------------------------- names, stage names, seeds


@pytest.mark.parametrize("name", ["../../../escape", "/tmp/abs-recipe", "", ".hidden", "-dash", "a/b",
                                  "x" * 101, "tab\there", 7])
def test_a_recipe_name_that_is_not_an_identifier_is_refused_at_resolve_time(name, tmp_path, isolated):
    cfg = yaml.safe_load(SMOKE_TEXT)
    cfg["name"] = name
    path = _smoke_with(tmp_path, yaml.safe_dump(cfg, sort_keys=False))
    for args in (["show", path], ["plan", path], ["run", path, *QUICK]):
        assert_refused(invoke(args), f"{path}: name: ")
    assert run_outputs(isolated) == []


def test_good_names_resolve_and_a_bad_file_stem_is_named_as_the_source(tmp_path, isolated):
    for name in ("smoke", "1st", "my-recipe.v2", "_x", "x" * 100):
        out = invoke(["show", SMOKE, f"name={name}"])
        assert out.exit_code == 0 and f"name: {name}\n" in out.output, out.output
    nameless = "\n".join(line for line in SMOKE_TEXT.splitlines() if not line.startswith("name:"))
    path = _smoke_with(tmp_path, nameless, "my recipe.yaml")
    assert_refused(invoke(["show", path]), f"{path}: name: 'my recipe'", "taken from the file name")


@pytest.mark.parametrize("stages", ["{1: {}}", "{main: {}, 2: {from: main}}", "{'../up': {}}", "{'': {}}"])
def test_a_stage_name_that_is_not_a_string_identifier_is_refused(stages, isolated):
    out = invoke(["show", SMOKE, *QUICK, f"stages={stages}"])
    assert_refused(out, f"{SMOKE}: stages.", "(a stage name)")


@pytest.mark.parametrize("seed", [-1, 2**32, 2**64, 2**64 + 1])
def test_a_seed_the_seeding_cannot_take_is_refused_at_resolve_time(seed, isolated):
    for args in (["show", SMOKE, f"seed={seed}"], ["run", SMOKE, *QUICK, f"seed={seed}"],
                 ["ablate", SMOKE, "-b", "tiny", "-t", "tta", "--seeds", str(seed), "--dry-run"]):
        assert_refused(invoke(args), f"{SMOKE}: seed: expected an integer in [0, 2**32 - 1]", str(seed))
    assert run_outputs(isolated) == []
    for seed in (0, 2**32 - 1):
        assert invoke(["show", SMOKE, f"seed={seed}"]).exit_code == 0


# ---------------------------------------------------------------- fold counts


def _folds_recipe(tmp_path, k) -> object:
    """smoke.yaml in its single-split form (folds of a cross-fitted stage are refused) with ``folds.k``."""
    text = (SMOKE_TEXT.replace("name: smoke", "name: fk").replace("  crossfit: 5\n", "")
            .replace("  offset: style_lr\n", "").replace("  cache_frozen: true\n", ""))
    return _smoke_with(tmp_path, text + f"folds: {{k: {k}}}\n", "folds.yaml")


@pytest.mark.parametrize("k", [1_000_000, 101])
def test_an_absurd_fold_count_fails_at_resolve_time_before_any_per_fold_work(k, tmp_path, isolated):
    path = _folds_recipe(tmp_path, k)
    t0 = time.time()
    for args in (["run", path, *QUICK], ["show", path], ["plan", path]):
        assert_refused(invoke(args), f"{path}: folds.k: k must be at most 100 (each fold is a whole run), "
                                     f"got {k}")
    assert time.time() - t0 < 60  # it resolved the recipe once per fold before: killed after 120 s
    assert run_outputs(isolated) == []
    assert invoke(["show", _folds_recipe(tmp_path, 100)]).exit_code == 0


def test_more_folds_than_prompt_groups_is_named_before_anything_is_written(tmp_path, isolated,
                                                                           synthetic_data_dir):
    train = synthetic_data_dir / "lmsys-chatbot-arena" / "train.csv"
    out = invoke(["run", _folds_recipe(tmp_path, 5), *QUICK, "plugins.data.max_rows=3"])  # 3 rows, 3 groups
    assert_refused(out, f"{train}: kaggle_csv folds = 5: cannot make 5 folds from 3 distinct prompt group(s)",
                   "folds.k")
    out = invoke(["run", SMOKE, *QUICK, "plugins.data.folds=500"])  # a single run's data block alone
    assert_refused(out, f"{train}: kaggle_csv folds = 500: cannot make 500 folds from 160 distinct")
    assert run_outputs(isolated) == []


# ---------------------------------------------------------------- frozen-feature layers


@pytest.mark.parametrize("layers", ["[100]", "[1, -4]", "[3]"])
def test_feature_layers_out_of_the_models_range_are_named_before_the_model_loads(layers, isolated):
    """tiny:llama has 2 decoder layers: hidden states 0..2, or -1..-3 (an IndexError deep in the encoding
    before)."""
    out = invoke(["run", RECIPES / "cpu.yaml", "-t", "tiny", f"model.features.layers={layers}"])
    assert_refused(out, f"{RECIPES / 'cpu.yaml'}: model.features.layers: ", "tiny:llama has 2 decoder layers")
    assert run_outputs(isolated) == []
