"""The complete config (core/config/canonical.py): resolved.yaml holds every default, private fields are
left out, the hash is of the complete config, and resolved.yaml resolves again to the same config."""

from __future__ import annotations

import dataclasses
import textwrap

import pytest
import yaml

from replicator.core.config.canonical import plain
from replicator.core.config.recipe import resolve

from ..conftest import RECIPES

BARE = """
name: bare
plugins:
  data: {use: kaggle_csv}
  prompt: {use: plain_turns}
  head: {use: default_head}
  loss: {use: cross_entropy}
  swap: {use: swap_ab}
"""


@pytest.fixture()
def bare(tmp_path):
    p = tmp_path / "bare.yaml"
    p.write_text(textwrap.dedent(BARE))
    return p


def test_resolved_yaml_holds_every_default(bare):
    r = resolve(bare)
    full = yaml.safe_load(r.to_yaml())
    assert full == r.complete
    # sections the recipe never states, with their defaults
    assert full["train"]["checkpoint_every"] == 25 and full["predict"]["batch_tokens"] == 8192
    assert full["model"]["lora"] is None and full["model"]["dtype"] == "auto"
    # every field of every plugin, defaults included, beside its name
    assert full["plugins"]["swap"] == {"use": "swap_ab", "train": "random", "p": 0.5, "test_time": True}
    assert full["plugins"]["prompt"]["question"] == "\nWhich response is better? A, B or tie:"
    assert full["plugins"]["data"]["valid_fraction"] == 0.15
    assert not any(k.startswith("_") for block in full["plugins"].values() for k in block)


def test_private_fields_are_left_out():
    @dataclasses.dataclass(frozen=True)
    class P:
        a: int = 1
        _cache: dict = dataclasses.field(default_factory=dict)
        b: tuple = (1, 2)

    assert plain(P()) == {"a": 1, "b": [1, 2]}


def test_the_hash_is_of_the_complete_config(bare, tmp_path):
    stated = tmp_path / "stated.yaml"
    stated.write_text(textwrap.dedent(BARE) + "train: {checkpoint_every: 25}\n")
    # stating a default is the same config; changing it is not
    assert resolve(stated).config_hash == resolve(bare).config_hash
    assert resolve(bare, [], ["train.checkpoint_every=5"]).config_hash != resolve(bare).config_hash
    # the free-text description does not change the hash
    described = tmp_path / "described.yaml"
    described.write_text(textwrap.dedent(BARE) + "description: a note\n")
    assert resolve(described).config_hash == resolve(bare).config_hash


@pytest.mark.parametrize("name", sorted(p.name for p in RECIPES.glob("*.yaml")))
def test_resolved_yaml_resolves_again_to_the_same_config(name, tmp_path):
    path = RECIPES / name
    for t in [None, *(yaml.safe_load(path.read_text()).get("toggles") or {})]:
        r = resolve(path, [t] if t else [])
        again = tmp_path / "resolved.yaml"
        again.write_text(r.to_yaml())
        r2 = resolve(again, check_plugins=False)
        assert r2.complete == r.complete and r2.config_hash == r.config_hash, (name, t)
        assert ([(s.name, s.model, s.train, s.predict, s.from_stage, s.reinit_head, s.outputs)
                 for s in r2.stages]
                == [(s.name, s.model, s.train, s.predict, s.from_stage, s.reinit_head, s.outputs)
                    for s in r.stages])
