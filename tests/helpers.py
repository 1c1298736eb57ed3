"""Helpers shared by several test modules (the fixtures are in conftest.py)."""

from __future__ import annotations

import random
import re

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from replicator.core.config.catalogue import build_plugins
from replicator.core.config.recipe import resolve
from replicator.core.data.files import data_dir
from replicator.core.predict.views import Identity
from replicator.core.scoring.row_predictions import RowPreds
from replicator.plugins.swap_ab import SwapView

from .conftest import QUICK, RECIPES, SINGLE_SPLIT, TINY

PLAN_LINE = re.compile(r"^  (base|swap:off|tta:off)\s+seed (\d)\s+(smoke-[0-9a-f]{8}-s\d)\s+"
                       r"(exists: reuse|will compute|will predict \(base's training\))"
                       r"\s+est\. (.+)$", re.M)


def _rows_and_lengths(n=120, seed=3, paired=30):
    rng = random.Random(seed)
    rows = [{"id": str(i)} for i in range(n)]
    for i in range(n - paired, n, 2):  # the last rows in pairs, as swap_ab train: full makes them
        rows[i]["pair"] = rows[i + 1]["pair"] = f"p{i}"
    return rows, [rng.randint(5, 400) for _ in rows]


def _recipe(tmp_path, name: str, **sections):
    """smoke.yaml in its single-split form (a fold or ensemble member validates on its own rows), named
    ``name``, with ``sections`` (folds:, ensemble:) added."""
    cfg = yaml.safe_load((RECIPES / "smoke.yaml").read_text())
    cfg["train"]["crossfit"] = None
    cfg["model"].update(offset=None, freeze_layers=0, cache_frozen=False)
    cfg["plugins"]["head"]["init"] = "zeros"
    cfg["toggles"]["tiny"] = {"model": {"base": "tiny:llama"}, "train": {"max_rows": 64},
                              "predict": {"max_rows": 32}}
    cfg.update(name=name, **sections)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _preds(ids, views=("identity", "swap_ab", "tta", "final"), seed=0, labels=None) -> RowPreds:
    rng = np.random.default_rng(seed)
    n = len(ids)
    y = labels if labels is not None else np.eye(3)[rng.integers(0, 3, n)]

    def probs():
        p = rng.random((n, 3)) + 0.1
        return p / p.sum(axis=1, keepdims=True)

    return RowPreds(ids=list(ids), groups=[f"g{i}" for i in ids], labels=y, views={v: probs() for v in views},
                    chars=np.array([100 * (k + 1) for k in range(n)]))


#: the tiny settings of the full-size checks and GPTQ (imported there as TINY; not conftest.TINY)
FULLSIZE_TINY = [*SINGLE_SPLIT, "model.base=tiny:llama", "model.dtype=float32", "model.lora={r: 4, alpha: 8}",
                 "train.batch_size=8", "train.max_length=64", "predict.max_length=64",
                 "predict.batch_tokens=512", "train.warmup_steps=0"]


GPTQ = ["model.base=tiny:llama128", "predict.load_in_8bit=true", "predict.quantizer=gptq"]


NO_DROPOUT = "model.lora={r: 4, alpha: 8, dropout: 0.0}"


#: one realistic 3-turn row, written for this test; B's second turn was `null` (-> "" by our data rule)
ROW = {
    "id": "fmt-1",
    "prompt": [
        "What's the difference between a list and a tuple in Python?",
        "Which one can I use as a dictionary key?",
        "Thanks! Show me a one-line example.",
    ],
    "response_a": [
        "A list is mutable: you can append, remove or change items after creating it. A tuple is "
        "immutable, so its contents are fixed once it is created. Lists use square brackets, "
        "e.g. [1, 2, 3]; tuples use parentheses, e.g. (1, 2, 3).",
        "Use a tuple. Dictionary keys must be hashable, and a tuple is hashable as long as "
        "everything inside it is; a list is not.",
        'Sure: `capitals = {(48.85, 2.35): "Paris"}`',
    ],
    "response_b": [
        "Both store sequences of items. The main difference is that lists can be changed and "
        "tuples cannot.",
        "",
        "d = {(1, 2): 'point'}",
    ],
    "label": [1.0, 0.0, 0.0],
    "model_a": "gpt-4-0613",
    "model_b": "vicuna-13b",
    "source": "test",
    "group": "g",
}


def text(tok, enc) -> str:
    return tok.decode(enc.input_ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def _resolved(toggles=(), overrides=(), recipe="smoke.yaml"):
    return resolve(RECIPES / recipe, list(toggles), QUICK + list(overrides), data_dir=data_dir())


def _logits_labels(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, 3, generator=g) * 2
    hard = F.one_hot(torch.randint(0, 3, (n,), generator=g), 3).float()
    soft = torch.softmax(torch.randn(n, 3, generator=g), dim=-1)
    return logits, hard, soft


VIEWS = [Identity(), SwapView()]

BUDGET = 128


def _plugins(toggles=(), overrides=()):
    r = resolve(RECIPES / "smoke.yaml", list(toggles), TINY + list(overrides), check_plugins=False)
    return build_plugins(r.final.plugins, "smoke.yaml"), r


def _rows():
    from replicator.core.data.competition import read_competition_csv
    from replicator.core.data.files import data_dir

    return read_competition_csv(data_dir() / "lmsys-chatbot-arena" / "train.csv", require_labels=True)


def _count_format_calls(plugins) -> list:
    calls: list = []

    def before(hook_name, impls, kwargs):
        if hook_name == "prompt_format":
            calls.append(kwargs["row"].get("id"))

    plugins.pm.add_hookcall_monitoring(before, lambda *a: None)
    return calls


def _fresh(plugins, tok, row, max_length=BUDGET) -> list[int]:
    return list(plugins.one("prompt_format", row=row, tokenizer=tok, max_length=max_length).input_ids)


def _view_rows(rows):
    return [dict(v.apply(r), view=v.name) for v in VIEWS for r in rows]
