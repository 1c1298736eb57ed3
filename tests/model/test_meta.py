"""Models without weights (core/model/meta.py) against the published sizes and against the runner's own
models."""

from __future__ import annotations

import pytest
import yaml

from replicator.core.config.recipe import resolve
from replicator.core.model import meta

from ..conftest import RECIPES

pytestmark = pytest.mark.usefixtures("offline")


def _counts(base: str):
    return meta.counts(meta.build_meta(meta.load_config(base, "test", "model.base")))


# published sizes (the models' hub pages): they count an LM head of vocab x hidden when the embeddings
# are untied (Llama-3, Qwen2); the sequence classifier has a 3-label head instead of it
@pytest.mark.parametrize("base, published", [
    ("google/gemma-2-9b-it", 9.24e9), ("google/gemma-2-9b", 9.24e9), ("google/gemma-2-27b-it", 27.2e9),
    ("meta-llama/Meta-Llama-3-8B-Instruct", 8.03e9), ("meta-llama/Meta-Llama-3-70B-Instruct", 70.6e9),
    ("Qwen/Qwen2-72B-Instruct", 72.7e9), ("sfairXC/FsfairX-Gemma2-RM-v0.1", 9.24e9),
    ("RLHFlow/ArmoRM-Llama3-8B-v0.1", 8.03e9), ("RLHFlow/pair-preference-model-LLaMA3-8B", 8.03e9),
    ("embedded:gemma-3-270m", 268e6)])
def test_meta_models_have_the_published_sizes(base, published):
    c, config = _counts(base), meta.load_config(base, "test", "model.base")
    backbone_and_lm_head = c.total - c.head + c.lm_head
    assert abs(backbone_and_lm_head - published) / published < 0.01, (base, backbone_and_lm_head)
    assert c.head == c.hidden * 3  # the default head: Linear(h, 3, bias=False)
    assert c.lm_head == (0 if config.tie_word_embeddings else config.vocab_size * c.hidden)
    assert config.tie_word_embeddings == c.model_type.startswith("gemma")


def test_the_lm_head_accounting_is_exact_on_the_causal_model():
    import torch
    from transformers import AutoModelForCausalLM

    for base in ("google/gemma-2-9b-it", "meta-llama/Meta-Llama-3-8B"):
        config = meta.load_config(base, "test", "model.base")
        with torch.device("meta"):
            causal = AutoModelForCausalLM.from_config(config)
        c = _counts(base)
        assert sum(p.numel() for p in causal.parameters()) == c.total - c.head + c.lm_head


def test_every_recipe_base_has_an_architecture():
    for path in sorted(RECIPES.glob("*.yaml")):
        for t in [None, *(yaml.safe_load(path.read_text()).get("toggles") or {})]:
            for s in resolve(path, [t] if t else [], check_plugins=False).stages:
                if not s.model.base.startswith("baseline:"):
                    assert meta.load_config(s.model.base, str(path), "model.base").num_labels == 3


def test_lora_counts_match_peft_at_full_size():
    from peft import LoraConfig, TaskType, get_peft_model

    c = _counts("google/gemma-2-9b-it")
    for freeze, targets in ((0, "all-linear"), (16, ["q_proj", "v_proj", "down_proj"])):
        model = meta.build_meta(meta.load_config("google/gemma-2-9b-it", "test", "model.base"))
        names = targets if freeze == 0 else list(targets)
        peft = get_peft_model(model, LoraConfig(
            task_type=TaskType.SEQ_CLS, r=64, lora_alpha=128, target_modules=names, modules_to_save=["score"],
            layers_to_transform=list(range(freeze, c.layers)) if freeze else None))
        expected = sum(p.numel() for p in peft.parameters() if p.requires_grad)
        lora = (64, meta.lora_targets(c, targets, "test", "model.lora.targets"))
        assert meta.trainable(c, lora, freeze)[0] == expected
    assert meta.trainable(c, None, 0) == (c.total, 0)
    assert meta.trainable(c, None, 2)[0] == c.total - c.embeddings - 2 * c.layer_params[0]


def test_the_wrapped_layer_class_exists_in_the_runners_models():
    from accelerate.utils.dataclasses import get_module_class_from_name

    from replicator.core.config.catalogue import build_plugins
    from replicator.core.model.loading import load_model

    for name in ("1st.yaml", "3rd.yaml"):
        r = resolve(RECIPES / name, ["tiny"])
        for stage in r.stages:
            model, _, _ = load_model(stage.model, build_plugins(stage.plugins, r.file))
            config = meta.load_config(stage.model.base, r.file, "model.base")
            layer = meta.counts(meta.build_meta(config)).layer_class
            assert get_module_class_from_name(model, layer) is not None, (name, stage.name, layer)
