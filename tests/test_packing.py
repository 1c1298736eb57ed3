"""``train.packed``: a micro-batch's rows as one padding-free sequence (position ids restarting per row)
give the logits and gradients of the same rows right-padded, for every tiny architecture (sliding windows
included), and a run trains to the same numbers. On CUDA with flash attention this is transformers'
padding-free path; here (sdpa / eager) the same position ids become a block-diagonal causal mask."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from replicator.core.config.catalogue import build_plugins
from replicator.core.config.recipe import resolve
from replicator.core.data.files import data_dir
from replicator.core.model.loading import load_model
from replicator.core.model.tensors import head_module
from replicator.core.run.pipeline import run_recipe
from replicator.core.tokens.batches import collate, forward_logits, forward_packed_logits, pack

from .conftest import RECIPES, TINY

NO_DROPOUT = "model.lora={r: 4, alpha: 8, dropout: 0.0}"


def test_pack_restarts_positions_per_row():
    ids, pos, ends = pack([[5, 6, 7], [8], [9, 10]], "cpu")
    assert ids.tolist() == [[5, 6, 7, 8, 9, 10]] and pos.tolist() == [[0, 1, 2, 0, 0, 1]]
    assert ends.tolist() == [2, 3, 5]


@pytest.mark.parametrize("arch,head", [("llama", "default_head"), ("qwen2", "default_head"),
                                       ("gemma2", "mlp_head"), ("gemma3", "default_head")])
def test_packed_rows_give_the_logits_and_gradients_of_padded_rows(arch, head):
    r = resolve(RECIPES / "smoke.yaml", [],
                [f"model.base=tiny:{arch}", NO_DROPOUT, f"plugins.head.use={head}"])
    torch.manual_seed(0)
    model, tok, _ = load_model(r.final.model, build_plugins(r.final.plugins, r.file))
    model.eval()  # no dropout (the mlp head has its own); gradients flow all the same
    for p in head_module(model)[1].parameters():  # the default head starts at zero: every logit would be 0
        torch.nn.init.normal_(p, std=0.5)
    gen = torch.Generator().manual_seed(1)
    seqs = [torch.randint(4, 60, (n,), generator=gen).tolist() for n in (5, 23, 17, 40)]  # windows of 16
    labels = torch.tensor([0, 2, 1, 2])

    def run(fn):
        model.zero_grad()
        logits = fn()
        torch.nn.functional.cross_entropy(logits, labels).backward()
        grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.requires_grad}
        return logits.detach(), grads

    padded, g_pad = run(lambda: forward_logits(model, *collate(seqs, tok.pad_token_id, "cpu")))
    packed, g_pack = run(lambda: forward_packed_logits(model, head_module(model)[1], seqs, "cpu"))
    assert packed.shape == (4, 3) and torch.allclose(packed, padded, atol=1e-5), (packed - padded).abs().max()
    assert g_pad.keys() == g_pack.keys() and any(g.abs().max() > 0 for g in g_pad.values())
    for k in g_pad:
        assert torch.allclose(g_pack[k], g_pad[k], atol=1e-5, rtol=1e-4), k
    # without the restarting positions the rows would see each other: the check above can fail
    ids, _, ends = pack(seqs, "cpu")
    with torch.no_grad():
        joined = []
        h = head_module(model)[1].register_forward_hook(lambda m, a, o: joined.append(o))
        model(input_ids=ids, use_cache=False)
        h.remove()
    assert not torch.allclose(joined[-1][0, ends], padded, atol=1e-3)


def test_a_packed_run_trains_to_the_numbers_of_a_padded_one(isolated):
    quick = [*TINY, NO_DROPOUT, "train.epochs=1", "train.max_rows=48", "predict.max_rows=24"]
    out = []
    for extra in ([], ["train.packed=true"]):
        _, metrics, _ = run_recipe(resolve(RECIPES / "smoke.yaml", [], [*quick, *extra]), data_dir(),
                                   progress=False)
        out.append(metrics)
    a, b = (m["stages"]["main"] for m in out)
    assert a["optimizer_steps"] == b["optimizer_steps"] > 1
    assert np.allclose(a["train_loss_history"], b["train_loss_history"], atol=1e-5, rtol=0)
    assert abs(out[0]["log_loss"] - out[1]["log_loss"]) <= 1e-5 and out[0]["run_id"] != out[1]["run_id"]
