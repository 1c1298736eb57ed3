"""16th place's auxiliary model-name heads (plugins/aux_model_heads.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from replicator.core.config.catalogue import build_plugins
from replicator.core.config.recipe import resolve
from replicator.core.data.files import data_dir
from replicator.plugins.aux_model_heads import (
    ARENA_NAMES,
    COMPETITION_MODELS,
    IGNORE_INDEX,
    AuxModelHeads,
    arena_name,
    family_index,
    model_family,
)

from ..conftest import RECIPES, TINY


def test_model_family_normalisation():
    cases = {"gpt-4-0613": "gpt-4", "gpt-4-1106-preview": "gpt-4", "gpt-3.5-turbo-0125": "gpt-3.5-turbo",
             "claude-1": "claude-v1", "claude-instant-1": "claude-instant-v1", "claude-2.1": "claude-2",
             "claude-3-opus-20240229": "claude-3-opus", "mixtral-8x7b-instruct-v0.1": "mixtral-8x7b-instruct",
             "gemini-1.5-pro-api-0409-preview": "gemini-1.5-pro-api", "openchat-3.5-0106": "openchat-3.5",
             " Llama-2-70B-Chat ": "llama-2-70b-chat", None: None, "": None}
    assert {k: model_family(k) for k in cases} == cases
    fams = ["gpt-4", "claude-2"]
    assert ([family_index(n, fams) for n in ("gpt-4-0314", "claude-2.0", "vicuna-13b", None)]
            == [0, 1, 2, IGNORE_INDEX])


def _tiny_model(head_block, seed=0):
    from replicator.core.model.loading import load_model

    r = resolve(RECIPES / "smoke.yaml", [], TINY + [f"plugins.head={head_block}"], check_plugins=False)
    plugins = build_plugins(r.final.plugins, "x")
    torch.manual_seed(seed)
    model, tok, info = load_model(r.final.model, plugins, train=True)
    return model, tok, info, plugins, r.final


def test_aux_model_heads_train_and_are_absent_at_prediction(isolated):
    from replicator.core.data.competition import read_competition_csv
    from replicator.core.predict.views import predict_probs
    from replicator.core.tokens.batches import Encoder, collate

    torch.set_num_threads(1)
    model, tok, info, plugins, stage = _tiny_model(
        "{use: aux_model_heads, families: [gpt-4, claude-2, vicuna-13b]}")
    assert "aux_loss" in info
    rows = read_competition_csv(data_dir() / "lmsys-chatbot-arena" / "train.csv", require_labels=True)[:32]
    for r in rows:  # names the model can learn: a refusal comes from "vicuna", a full answer from "gpt-4"
        for side in ("a", "b"):
            r[f"model_{side}"] = "vicuna-13b" if "sorry" in r[f"response_{side}"][0] else "gpt-4-0613"
    enc = Encoder(plugins, tok)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    loss_fn = plugins.one("loss")
    aux_hist = []
    model.train()
    for step in range(40):
        batch = rows[(step * 8) % 32:(step * 8) % 32 + 8]
        ids, mask = collate([enc(r, 128) for r in batch], tok.pad_token_id, "cpu")
        logits = model(input_ids=ids, attention_mask=mask).logits
        assert logits.shape == (8, 3 + 2 * 4)
        labels = torch.tensor([r["label"] for r in batch])
        extra = {"rows": batch, "input_ids": ids, "attention_mask": mask}
        aux = info["aux_loss"](logits, extra)
        (loss_fn(logits, labels, extra) + aux).backward()
        opt.step()
        opt.zero_grad()
        aux_hist.append(aux.item())
    assert np.mean(aux_hist[-4:]) < 0.5 * np.mean(aux_hist[:4]), [round(x, 3) for x in aux_hist[::4]]
    # prediction: 3 columns, independent of the auxiliary weights
    preds = predict_probs(model, tok, plugins, rows[:8], 128, 4096, progress=False, use_tta=False)["identity"]
    assert preds.shape == (8, 3)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if ".model_a." in n or ".model_b." in n:
                p.add_(torch.randn_like(p) * 5)
    again = predict_probs(model, tok, plugins, rows[:8], 128, 4096, progress=False, use_tta=False)["identity"]
    np.testing.assert_allclose(again, preds, atol=1e-6)


def test_aux_loss_ignores_unknown_names():
    head = AuxModelHeads(families=["gpt-4"]).head(hidden_size=4, num_labels=3, model=None)
    logits = torch.randn(2, 3 + 4)
    rows = [{"model_a": None, "model_b": " "}, {"model_a": None, "model_b": None}]
    assert head.aux_loss(logits, {"rows": rows}).item() == 0.0
    rows[0]["model_a"] = "gpt-4-0314"
    expected = 0.1 * F.cross_entropy(logits[:1, 3:5], torch.tensor([0]))
    assert head.aux_loss(logits, {"rows": rows}).item() == pytest.approx(expected.item(), rel=1e-6)


#: the model names of the external 33k set (lmsys/chatbot_arena_conversations)
ARENA_33K_MODELS = ["alpaca-13b", "chatglm-6b", "claude-instant-v1", "claude-v1", "dolly-v2-12b",
                    "fastchat-t5-3b", "gpt-3.5-turbo", "gpt-4", "gpt4all-13b-snoozy", "guanaco-33b",
                    "koala-13b", "llama-13b", "mpt-7b-chat", "oasst-pythia-12b", "palm-2", "RWKV-4-Raven-14B",
                    "stablelm-tuned-alpha-7b", "vicuna-13b", "vicuna-7b", "wizardlm-13b"]


def test_arena_naming_gives_the_58_classes_of_16th_place():
    """[P16] (secondary copy): the model names normalised (gpt-4* -> gpt-4, gpt-3.5* -> gpt-3.5-turbo,
    claude-1 -> claude-v1, ...) to 58 classes: the competition's 64 names so normalised are 58."""
    assert len(COMPETITION_MODELS) == 64 == len(set(COMPETITION_MODELS))
    assert len(ARENA_NAMES) == 58 == len({arena_name(n) for n in COMPETITION_MODELS})
    assert {arena_name(n) for n in ARENA_33K_MODELS} <= set(ARENA_NAMES)
    assert [arena_name(n) for n in ("gpt-4-0613", "GPT-3.5-turbo-0125", "claude-1", "claude-instant-1",
                                    "claude-2.1", None, " ")] == [
        "gpt-4", "gpt-3.5-turbo", "claude-v1", "claude-instant-v1", "claude-2.1", None, None]
    # no "other" class: a name outside the 58 is left out of the auxiliary loss
    assert family_index("llama-3-70b-instruct", ARENA_NAMES, "arena") == IGNORE_INDEX
    assert family_index("gpt-4-0314", ARENA_NAMES, "arena") == ARENA_NAMES.index("gpt-4")
    head = AuxModelHeads(naming="arena").head(hidden_size=4, num_labels=3, model=None)
    assert head.k == 58 and head(torch.zeros(1, 4)).shape == (1, 3 + 2 * 58)
    with pytest.raises(ValueError, match="naming arena"):
        AuxModelHeads(naming="arena", families=["gpt-4"])


@pytest.mark.real_data
def test_competition_models_are_the_names_of_the_shared_rows():
    import pandas as pd

    names = pd.read_csv(data_dir() / "lmsys-chatbot-arena" / "train.csv", usecols=["model_a", "model_b"])
    assert set(names.stack()) == set(COMPETITION_MODELS)
