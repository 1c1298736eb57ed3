"""Synthetic run folders for the report tests: predictions that see a latent score with a given strength."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import yaml

from replicator.core.scoring.row_predictions import write_row_predictions
from replicator.core.scoring.stats import row_log_loss
from replicator.core.util.layout import ROW_PREDICTIONS

ENV = {"python": "3.11.7", "device": "cpu", "torch": "2.13.0+cpu", "transformers": "5.24.0", "peft": "0.21.2"}

N_ROWS, PER_GROUP = 240, 3


def valid_rows(n: int = N_ROWS, split: int = 0) -> list[dict]:
    """Synthetic validation rows, PER_GROUP rows per prompt group; lengths vary."""
    return [{"id": str(10_000 * split + i), "group": f"{split:02d}{i // PER_GROUP:014x}",
             "prompt": [f"Explain item {i // PER_GROUP}."], "response_a": ["a" * (20 + 7 * i)],
             "response_b": ["b" * (15 + (i * 37) % 400)]} for i in range(n)]


def synthetic(seed: int, strength: float, noise: float = 0.15, n: int = N_ROWS, split: int = 0):
    """Labels from a latent score; predictions that see it with ``strength`` (plus seed noise)."""
    rng = np.random.default_rng(1000 + split)
    latent = rng.normal(0, 1, (n, 3))
    labels = np.eye(3)[(latent + rng.gumbel(size=(n, 3))).argmax(1)]
    noise_rng = np.random.default_rng(seed)
    logits = strength * latent + noise * noise_rng.normal(0, 1, (n, 3))
    p = np.exp(logits - logits.max(1, keepdims=True))
    return p / p.sum(1, keepdims=True), labels


def make_run(root: Path, *, recipe: str = "toy", toggles=(), seed: int = 1, probs, labels, rows=None,
             data_hash: str = "d" * 64, env: dict | None = None, history: bool = True,
             prior=(0.35, 0.35, 0.30), variant: str | None = None, history_scale: float = 1.0,
             baselines: dict | None = None) -> Path:
    rows = rows if rows is not None else valid_rows(len(labels))
    key = json.dumps([sorted(toggles), data_hash, env, variant])
    run_id = f"{recipe}-{hashlib.sha256(key.encode()).hexdigest()[:8]}-s{seed}"
    d = root / recipe / run_id
    d.mkdir(parents=True)
    cfg = {"name": recipe, "seed": seed, "train": {"lr": 1e-4},
           "plugins": {"swap": {"use": "swap_ab"}} if not {"no_swap", "swap:off"} & set(toggles) else {}}
    if {"focal", "focal:on"} & set(toggles):
        cfg["plugins"]["loss"] = {"use": "focal_loss"}
    other = [t for t in toggles if t not in ("no_swap", "swap:off", "focal", "focal:on")]
    if other:  # any other toggle: a config of its own, so that its runs are a variant of their own
        cfg["model"] = {"features": {t: True for t in other}}
    (d / "resolved.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    fp = {"run_id": run_id, "recipe": recipe,
          "config_hash": hashlib.sha256(json.dumps(cfg).encode()).hexdigest(),
          "seed": seed, "data_hash": data_hash, "data_files": {"train.csv": data_hash},
          "toggles": list(toggles), "environment": env or ENV}
    if variant:
        fp["variant"] = variant
    (d / "fingerprint.json").write_text(json.dumps(fp, indent=2))
    ll = float(row_log_loss(probs, labels).mean())
    steps = 40
    stage = {"optimizer_steps": steps, "seconds": 300.0 + seed, "train_tokens": 200_000,
             "n_valid_rows": len(rows), "final_log_loss": ll, "train_label_prior": list(prior)}
    if history:
        stage["train_loss_history"] = [1.1 * math.exp(-history_scale * k / 50) + 0.02 * ((k * 7 + seed) % 5)
                                       for k in range(steps)]
    metrics = {"run_id": run_id, "recipe": recipe, "final_stage": "main", "final_log_loss": ll,
               "log_loss": ll, "n_valid_rows": len(rows), "train_label_prior": list(prior),
               "stages": {"main": stage}}
    (d / "metrics.json").write_text(json.dumps(metrics, indent=2))
    write_row_predictions(d / ROW_PREDICTIONS, rows, {"identity": probs, "final": probs, **(baselines or {})},
                          labels)
    return d


def ablation(root: Path, seeds=(1, 2)) -> dict[str, list[Path]]:
    """base (weak), +focal (clearly better), +no_swap (the same up to noise), over ``seeds``."""
    out: dict[str, list[Path]] = {"base": [], "focal": [], "no_swap": []}
    for s in seeds:
        p, y = synthetic(s, 0.4)
        out["base"].append(make_run(root, seed=s, probs=p, labels=y))
        p, y = synthetic(s, 1.0)
        out["focal"].append(make_run(root, toggles=("focal",), seed=s, probs=p, labels=y, history_scale=1.6))
        p, y = synthetic(s + 50, 0.4)
        out["no_swap"].append(make_run(root, toggles=("no_swap",), seed=s, probs=p, labels=y,
                                       history_scale=1.2))
    return out
