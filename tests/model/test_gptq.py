"""1st place's GPTQ 8-bit inference [R1] run_gptq.py (core/model/gptq.py): LoRA merged, decoder blocks
quantized to 8 bits in groups of 128, head untouched. Needs the gptq extra (optimum + GPT-QModel)."""

from __future__ import annotations

import pytest

from replicator.core.config.recipe import resolve

from ..conftest import RECIPES
from ..helpers import FULLSIZE_TINY as TINY
from ..helpers import GPTQ

pytest.importorskip("optimum.gptq", reason="the gptq extra (optimum + gptqmodel)")


def test_1st_predicts_with_gptq_and_its_teachers_do_not():
    r = resolve(RECIPES / "1st.yaml", [], [], check_plugins=False)
    assert r.final.predict.load_in_8bit and r.final.predict.quantizer == "gptq"
    assert r.final.predict.gptq_calibration_rows == 128
    teachers = [s for s in r.stages if s.outputs]
    assert teachers and not any(s.predict.load_in_8bit for s in teachers)


def test_lora_merged_then_blocks_quantized_head_kept(tmp_path):
    """The quantized model has no adapters, 8-bit GPTQ linear layers in its blocks, the trained head in
    full precision, and predicts what the fp32 model with adapters predicts, up to rounding."""
    import numpy as np
    import torch
    from safetensors.torch import save_file

    from replicator.core.config.catalogue import build_plugins
    from replicator.core.model.gptq import gptq_8bit
    from replicator.core.model.loading import load_model
    from replicator.core.model.tensors import head_module, trainable_state

    r = resolve(RECIPES / "smoke.yaml", [], TINY + GPTQ, check_plugins=False)
    plugins = build_plugins(r.final.plugins, "x")
    torch.manual_seed(0)
    model, _, _ = load_model(r.final.model, plugins, train=False)
    for n, p in model.named_parameters():
        if "lora_B" in n or "score" in n:
            p.data.normal_(0, 0.05)  # trained adapters (B is zero at init) and head
    save_file(trainable_state(model), str(tmp_path / "final.safetensors"))
    ids = torch.randint(4, 60, (3, 24))
    model.eval()  # no LoRA dropout
    with torch.no_grad():
        want = torch.softmax(model(input_ids=ids).logits.float(), -1)
    calibration = [np.random.default_rng(i).integers(4, 60, 40).astype(np.int32) for i in range(8)]
    q, _ = gptq_8bit(r.final.model, plugins, tmp_path / "final.safetensors", calibration)
    assert not any("lora_" in n for n, _ in q.named_parameters())
    up = q.model.layers[0].mlp.up_proj
    assert not isinstance(up, torch.nn.Linear) and up.bits == 8 and up.group_size == 128
    _, head = head_module(q)
    assert isinstance(head, torch.nn.Linear) and head.weight.dtype == torch.float32
    with torch.no_grad():
        got = torch.softmax(q(input_ids=ids).logits.float(), -1)
    assert (got - want).abs().max().item() < 0.01


QUIET = """
import os
from replicator.core.config.catalogue import build_plugins
from replicator.core.model.loading import load_model
from replicator.core.config.recipe import resolve
r = resolve(os.environ["RECIPE"], ["single_split"], ["model.base=tiny:llama", \
"model.lora={r: 4, alpha: 8}"], check_plugins=False)
load_model(r.final.model, build_plugins(r.final.plugins, "x"), train=False)
print("env", os.environ.get("PYTORCH_ALLOC_CONF"), os.environ.get("CUDA_DEVICE_ORDER"))
"""


def test_installed_gptqmodel_leaves_stdout_and_the_allocator_alone():
    """peft would import GPT-QModel for every LoRA model once installed (its probe of GPT-QModel layers);
    its banner and warnings would land on the console and its import would set the CUDA allocator's settings
    for every run. The probe is kept off (core/model/loading.py): GPT-QModel is not imported at all."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("PYTORCH_ALLOC_CONF", "CUDA_DEVICE_ORDER")}
    out = subprocess.run([sys.executable, "-c", QUIET], capture_output=True, text=True, check=True,
                         env={**env, "RECIPE": str(RECIPES / "smoke.yaml")})
    assert out.stdout == "env None None\n", out.stdout[-500:]
    assert "GPT-QModel" not in out.stderr and "GIL" not in out.stderr, out.stderr[-500:]
