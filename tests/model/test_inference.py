"""A trained model loaded as it predicts (core/model/inference.py): LoRA merged, then 8-bit [P9]."""

from __future__ import annotations

import pytest

from replicator.core.config.recipe import resolve

from ..conftest import RECIPES


def test_lora_merged_before_8bit_inference(tmp_path):
    """[P9]: merge_and_unload() then 8-bit. The merged 8-bit model has no adapters left and predicts what
    the fp32 model with adapters predicts, up to int8 rounding."""
    pytest.importorskip("bitsandbytes")
    import torch
    from safetensors.torch import save_file

    from replicator.core.config.catalogue import build_plugins
    from replicator.core.model.inference import load_for_inference
    from replicator.core.model.loading import load_model
    from replicator.core.model.tensors import trainable_state

    r = resolve(RECIPES / "9th.yaml", ["tiny"], ["model.base=tiny:llama128", "predict.load_in_8bit=true"],
                check_plugins=False)
    assert r.final.predict.merge_lora
    plugins = build_plugins(r.final.plugins, "x")
    torch.manual_seed(0)
    model, tok, _ = load_model(r.final.model, plugins, train=False)
    for n, p in model.named_parameters():
        if "lora_B" in n:
            p.data.normal_(0, 0.05)  # trained adapters: B is zero at init
    save_file(trainable_state(model), str(tmp_path / "final.safetensors"))
    ids = torch.randint(4, 60, (3, 24))
    model.eval()  # no LoRA dropout
    with torch.no_grad():
        want = torch.softmax(model(input_ids=ids).logits.float(), -1)
    merged, _ = load_for_inference(r.final.model, plugins, tmp_path / "final.safetensors", load_in_8bit=True,
                                   merge_lora=True)
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    assert any(p.dtype == torch.int8 for p in merged.parameters())
    with torch.no_grad():
        got = torch.softmax(merged(input_ids=ids).logits.float(), -1)
    assert (got - want).abs().max().item() < 0.05
    assert len(list(tmp_path.glob("merged-*"))) == 1
