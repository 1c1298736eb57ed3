"""Postprocessing of probabilities (the ``postprocess`` chain) and its honest cross-fit on the
validation rows."""

from __future__ import annotations

import numpy as np

from replicator.core.errors import ReplicatorError


def postprocess(plugins, probs, rows, fit=None) -> np.ndarray:
    """The ``postprocess`` chain on ``probs``; ``fit`` = (probabilities, labels) calibrators may fit on."""
    out = plugins.chain("postprocess", "probs", np.asarray(probs, dtype=np.float64), rows=rows, fit=fit)
    out = np.asarray(out, dtype=np.float64)
    if out.shape != (len(rows), 3) or not np.isfinite(out).all() or (out < 0).any():
        raise ReplicatorError("postprocess returned invalid probabilities (shape, NaN or negative)")
    return out


def crossfit_postprocess(plugins, probs, rows, labels) -> np.ndarray:
    """Postprocess validation predictions honestly: fit on one half of the prompt groups, apply to
    the other, and vice versa (calibrators never see the rows they are scored on)."""
    halves = np.array([int(r["group"], 16) % 2 for r in rows])
    out = np.zeros_like(probs)
    for h in (0, 1):
        tgt, src = halves == h, halves != h
        fit = (probs[src], labels[src]) if src.any() else None
        if tgt.any():
            out[tgt] = postprocess(plugins, probs[tgt], [r for r, m in zip(rows, tgt, strict=True) if m],
                                   fit=fit)
    return out
