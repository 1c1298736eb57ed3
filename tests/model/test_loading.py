"""Loading a model (core/model/loading.py): a reward checkpoint with a 1-output head as a 3-way classifier,
errors naming the key, transformers' verbosity restored."""

from __future__ import annotations

import pytest

from replicator.core.config.recipe import resolve

from ..conftest import RECIPES, TINY


def test_model_switch_errors_name_the_key(monkeypatch):
    from replicator.core.config.catalogue import build_plugins
    from replicator.core.errors import ReplicatorError
    from replicator.core.model.loading import load_model

    r = resolve(RECIPES / "smoke.yaml", [], TINY + ["model.sliding_window=false"])
    with pytest.raises(ReplicatorError, match="model.sliding_window"):
        load_model(r.final.model, build_plugins(r.final.plugins, "x"))


def test_one_output_reward_checkpoint_loads_as_three_way_classifier(tmp_path, caplog):
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from replicator.core.config.catalogue import build_plugins
    from replicator.core.model.loading import load_model, resolve_base
    from replicator.core.model.tiny import _tokenizer

    src = resolve_base("tiny:gemma2")
    config = AutoConfig.from_pretrained(src, num_labels=1)
    torch.manual_seed(3)
    reward = AutoModelForSequenceClassification.from_config(config)
    reward.save_pretrained(tmp_path / "rm")
    _tokenizer().save_pretrained(tmp_path / "rm")
    r = resolve(RECIPES / "3rd.yaml", ["tiny"], [f"model.base={tmp_path / 'rm'}", "model.dtype=float32"],
                check_plugins=False)  # the checkpoint's fp32 weights, compared exactly
    with caplog.at_level("INFO"):
        model, _, info = load_model(r.final.model, build_plugins(r.final.plugins, "x"))
    assert "1 output(s); a new 3-way head" in caplog.text
    head = model.base_model.model.score
    weight = getattr(head, "modules_to_save", {"default": head})["default"].weight
    assert weight.shape == (3, config.hidden_size)
    saved = reward.model.layers[0].mlp.up_proj.weight
    mine = model.base_model.model.model.layers[0].mlp.up_proj.base_layer.weight
    assert torch.equal(saved, mine)  # the backbone is the checkpoint's, not re-initialised


def test_transformers_verbosity_is_restored_after_loading():
    from transformers.utils import logging as hf_logging

    from replicator.core.config.catalogue import build_plugins
    from replicator.core.model.loading import load_model

    r = resolve(RECIPES / "smoke.yaml", [], TINY)
    before = hf_logging.get_verbosity()
    hf_logging.set_verbosity_info()
    try:
        load_model(r.final.model, build_plugins(r.final.plugins, r.file), train=False)
        assert hf_logging.get_verbosity() == hf_logging.INFO and hf_logging.is_progress_bar_enabled()
    finally:
        hf_logging.set_verbosity(before)
