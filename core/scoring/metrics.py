"""Metrics on 3-class probabilities: multi-class log loss (natural log, as the Kaggle/mle-bench
grader computes it with sklearn) and accuracy against the argmax of the label."""

from __future__ import annotations

import numpy as np

EPS = float(np.finfo(np.float64).eps)


def log_loss(probs, labels) -> float:
    """Mean of -sum(label * log p); labels may be soft. Probabilities clipped to [eps, 1-eps] like sklearn."""
    p = np.clip(np.asarray(probs, dtype=np.float64), EPS, 1 - EPS)
    p = p / p.sum(axis=1, keepdims=True)
    y = np.asarray(labels, dtype=np.float64)
    return float(-(y * np.log(p)).sum(axis=1).mean())


def accuracy(probs, labels) -> float:
    return float((np.asarray(probs).argmax(1) == np.asarray(labels).argmax(1)).mean())


def summarize(probs, labels, prefix: str = "") -> dict:
    return {f"{prefix}log_loss": log_loss(probs, labels), f"{prefix}accuracy": accuracy(probs, labels)}


UNIFORM_LOG_LOSS = float(np.log(3.0))
