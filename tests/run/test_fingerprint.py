"""The fingerprint (core/run/fingerprint.py): the run id covers the code, the package version, third-party
plugin distributions, every plugin default, the data and the process count."""

from __future__ import annotations

import dataclasses
import json
import shutil
from types import SimpleNamespace

from replicator.core.config.recipe import resolve
from replicator.core.params import param
from replicator.core.run import fingerprint as F

from ..conftest import RECIPES, TINY


def _id(recipe, data_dir, overrides=()) -> str:
    return F.fingerprint(resolve(recipe, [], list(overrides)), data_dir)["run_id"]


def test_identical_inputs_give_the_same_id(synthetic_data_dir):
    a = F.fingerprint(resolve(RECIPES / "smoke.yaml", [], TINY), synthetic_data_dir)
    b = F.fingerprint(resolve(RECIPES / "smoke.yaml", [], TINY), synthetic_data_dir)
    assert a["run_id"] == b["run_id"] and a["run_id"].startswith("smoke-") and a["run_id"].endswith("-s7")
    assert a["n_processes"] == 1 and a["code"]["version"] and len(a["code"]["hash"]) == 64
    assert set(a["code"]) == {"version", "hash", "commit", "dirty"}
    assert json.loads(json.dumps(a)) == a


def test_a_changed_plugin_default_changes_the_id(synthetic_data_dir, monkeypatch):
    import replicator.plugins.swap_ab as swap_ab

    before = _id(RECIPES / "smoke.yaml", synthetic_data_dir, TINY)

    @dataclasses.dataclass(frozen=True)
    class SwapAB(swap_ab.SwapAB):  # the same plugin with another default for p
        p: float = param(0.25, "swap probability")

    monkeypatch.setattr(swap_ab, "SwapAB", SwapAB)
    assert resolve(RECIPES / "smoke.yaml").complete["plugins"]["swap"]["p"] == 0.25
    assert _id(RECIPES / "smoke.yaml", synthetic_data_dir, TINY) != before


def test_a_changed_prompt_template_changes_the_id(synthetic_data_dir, monkeypatch):
    import replicator.plugins.plain_turns as plain_turns

    before = _id(RECIPES / "smoke.yaml", synthetic_data_dir, TINY)

    @dataclasses.dataclass(frozen=True)
    class PlainTurns(plain_turns.PlainTurns):
        question: str = param("\nWho wins, A or B (or tie)?", "closing text before EOS")

    monkeypatch.setattr(plain_turns, "PlainTurns", PlainTurns)
    assert _id(RECIPES / "smoke.yaml", synthetic_data_dir, TINY) != before


def test_changed_code_changes_the_code_hash_and_the_id(tmp_path, synthetic_data_dir, monkeypatch):
    folders = F.package_folders()
    assert [f.name for f in folders] == ["core", "plugins"]
    copy = tmp_path / "plugins"
    shutil.copytree(folders[1], copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert F.code_hash([folders[0], copy]) == F.code_hash()
    src = copy / "plain_turns.py"
    src.write_text(src.read_text().replace("Response A:", "Answer A:"))  # a template inside the code
    changed = F.code_hash([folders[0], copy])
    assert changed != F.code_hash()
    before = _id(RECIPES / "smoke.yaml", synthetic_data_dir, TINY)
    monkeypatch.setattr(F, "code_hash", lambda folders=None: changed)
    assert _id(RECIPES / "smoke.yaml", synthetic_data_dir, TINY) != before


def test_package_version_changes_the_id(synthetic_data_dir, monkeypatch):
    before = _id(RECIPES / "smoke.yaml", synthetic_data_dir, TINY)
    monkeypatch.setattr(F, "package_version", lambda: "99.0")
    fp = F.fingerprint(resolve(RECIPES / "smoke.yaml", [], TINY), synthetic_data_dir)
    assert fp["code"]["version"] == "99.0" and fp["run_id"] != before


def test_process_count_changes_the_id(synthetic_data_dir, monkeypatch):
    before = _id(RECIPES / "smoke.yaml", synthetic_data_dir, TINY)
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert F.n_processes() == 2
    fp = F.fingerprint(resolve(RECIPES / "smoke.yaml", [], TINY), synthetic_data_dir)
    assert fp["n_processes"] == 2 and fp["run_id"] != before


def test_data_content_changes_the_id(synthetic_data_dir, tmp_path):
    before = _id(RECIPES / "smoke.yaml", synthetic_data_dir, TINY)
    shutil.copytree(synthetic_data_dir, tmp_path / "d")
    assert _id(RECIPES / "smoke.yaml", tmp_path / "d", TINY) == before  # same bytes elsewhere: same run
    train = tmp_path / "d" / "lmsys-chatbot-arena" / "train.csv"
    train.write_text(train.read_text().replace("Python", "Rust", 1))
    assert _id(RECIPES / "smoke.yaml", tmp_path / "d", TINY) != before


def test_third_party_plugin_distributions_are_recorded(synthetic_data_dir, monkeypatch):
    import importlib.metadata

    before = _id(RECIPES / "smoke.yaml", synthetic_data_dir, TINY)
    version = {"v": "1.0"}

    def fake_entry_points(group=None):
        dist = SimpleNamespace(name="arena-extra-plugins", version=version["v"])
        eps = [SimpleNamespace(name="swap_ab", value="extra.swap:SwapAB", dist=dist),
               SimpleNamespace(name="unused", value="extra.unused:Unused", dist=dist)]
        return eps if group == "replicator.plugins" else []

    monkeypatch.setattr(importlib.metadata, "entry_points", fake_entry_points)
    r = resolve(RECIPES / "smoke.yaml", [], TINY, check_plugins=False)
    assert F.plugin_distributions(r) == {"swap_ab": {"distribution": "arena-extra-plugins", "version": "1.0",
                                                     "value": "extra.swap:SwapAB"}}
    one = F.fingerprint(r, synthetic_data_dir)["run_id"]
    version["v"] = "1.1"
    two = F.fingerprint(r, synthetic_data_dir)["run_id"]
    assert len({before, one, two}) == 3


def test_git_info_outside_a_checkout(tmp_path):
    assert F.git_info(tmp_path) == {"commit": None, "dirty": None}
    info = F.git_info()
    assert info["commit"] is None or (len(info["commit"]) == 40 and isinstance(info["dirty"], bool))
