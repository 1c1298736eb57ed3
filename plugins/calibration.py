"""Calibration fitted on validation predictions: temperature scaling and (multinomial) Platt scaling.

Both are "reported not to help" by the write-ups we read, so they exist to be measured: the
runner fits them on one half of the validation prompt groups and scores them on the other
(``crossfit_postprocess``), and at prediction time fits them on all validation predictions.
Only numpy/scipy are used.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from replicator.core.hookspecs import hookimpl
from replicator.core.lib.toggles import SharedToggle, ToggleView, plugins_patch
from replicator.core.params import param
from replicator.core.scoring.metrics import log_loss

#: probabilities are clipped to this before their log is taken (the log loss itself is the project's
#: one, :func:`replicator.core.scoring.metrics.log_loss`)
EPS = 1e-12


def _log(probs):

    return np.log(np.clip(np.asarray(probs, dtype=np.float64), EPS, 1.0))


def _softmax(z):

    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def apply_temperature(probs, temperature: float):
    """``softmax(log p / T)``; T = 1 returns the input (renormalised) unchanged."""

    p = np.asarray(probs, dtype=np.float64)
    if temperature == 1.0:
        return p / p.sum(axis=1, keepdims=True)
    return _softmax(_log(p) / temperature)


def fit_temperature(probs, labels, bounds=(0.05, 20.0)) -> float:
    """The T in ``bounds`` minimising the log loss of ``softmax(log p / T)`` (bounded 1-D search on log T)."""
    from scipy.optimize import minimize_scalar

    lo, hi = np.log(bounds[0]), np.log(bounds[1])
    res = minimize_scalar(lambda lt: log_loss(apply_temperature(probs, float(np.exp(lt))), labels),
                          bounds=(lo, hi), method="bounded", options={"xatol": 1e-6})
    return float(np.exp(res.x))


def apply_platt(probs, a, b):
    """``softmax(a ⊙ log p + b)`` per class (vector scaling); a = 1, b = 0 changes nothing."""

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    p = np.asarray(probs, dtype=np.float64)
    if np.all(a == 1.0) and np.all(b == 0.0):
        return p / p.sum(axis=1, keepdims=True)
    return _softmax(_log(p) * a + b)


def fit_platt(probs, labels, l2: float = 1e-4):
    """Fit (a, b) of :func:`apply_platt` by L-BFGS on the log loss (+ ``l2``·(|a-1|² + |b|²)); b is
    centred (softmax ignores a common shift)."""
    from scipy.optimize import minimize

    z = _log(probs)
    y = np.asarray(labels, dtype=np.float64)
    k = z.shape[1]

    def objective(theta):
        a, b = theta[:k], theta[k:]
        logits = z * a + b
        logits = logits - logits.max(axis=1, keepdims=True)
        lse = np.log(np.exp(logits).sum(axis=1, keepdims=True))
        logp = logits - lse
        loss = -(y * logp).sum(axis=1).mean() + l2 * (((a - 1) ** 2).sum() + (b ** 2).sum())
        g_logits = (np.exp(logp) * y.sum(axis=1, keepdims=True) - y) / len(z)
        ga = (g_logits * z).sum(axis=0) + 2 * l2 * (a - 1)
        gb = g_logits.sum(axis=0) + 2 * l2 * b
        return loss, np.concatenate([ga, gb])

    theta0 = np.concatenate([np.ones(k), np.zeros(k)])
    res = minimize(objective, theta0, jac=True, method="L-BFGS-B")
    a, b = res.x[:k], res.x[k:]
    return a, b - b.mean()


def _check_interval(bounds: list[float]) -> None:
    if len(bounds) != 2 or not 0 < bounds[0] < bounds[1]:
        raise ValueError(f"bounds must be [low, high] with 0 < low < high, got {bounds}")


@dataclasses.dataclass(frozen=True)
class TemperatureScaling:
    """Divide log-probabilities by a temperature T and renormalise: ``softmax(log p / T)``.

    T is fitted on validation predictions (``fit``) by minimising log loss, unless
    ``fixed_temperature`` is given; with neither (no ``fit``), T = 1 and nothing changes.
    No top solution used it: a public TF-IDF baseline reported 1.025 -> 1.022 with T = 1.2
    (SOLUTIONS.md §4, secondary); the issue asks for it to be measurable. Put it before
    ``clip_probs`` and rules in the chain: ``fit`` holds the raw (TTA) validation predictions.
    """

    fixed_temperature: float | None = param(None, "use this T instead of fitting one "
                                                  "(null = fit on validation)", gt=0)
    bounds: list[float] = param([0.05, 20.0], "search interval of the fitted T", check=_check_interval)

    def temperature(self, fit) -> float:
        if self.fixed_temperature is not None:
            return float(self.fixed_temperature)
        if fit is None or len(fit[0]) == 0:
            return 1.0
        return fit_temperature(fit[0], fit[1], tuple(self.bounds))

    @hookimpl
    def postprocess(self, probs, rows, fit):
        return apply_temperature(probs, self.temperature(fit))


@dataclasses.dataclass(frozen=True)
class PlattScaling:
    """Multinomial Platt scaling (vector scaling): ``softmax(a ⊙ log p + b)`` with a per-class scale
    ``a`` and offset ``b`` fitted on validation predictions (``fit``) by minimising log loss
    (L-BFGS, a small L2 pull towards the identity ``a = 1, b = 0``). Without ``fit`` the identity
    is used and nothing changes. Not used by any top solution (our addition, to measure it).
    """

    l2: float = param(1e-4, "L2 penalty pulling (a, b) towards the identity (a=1, b=0)", ge=0)

    def parameters(self, fit):

        if fit is None or len(fit[0]) == 0:
            return np.ones(3), np.zeros(3)
        return fit_platt(fit[0], fit[1], self.l2)

    @hookimpl
    def postprocess(self, probs, rows, fit):
        a, b = self.parameters(fit)
        return apply_platt(probs, a, b)


# ---------------------------------------------------------------- shared toggle: temperature


def _has_temperature(v: ToggleView) -> bool:
    return bool(v.by_use("temperature_scaling"))


def _temperature_off(v: ToggleView) -> list[dict]:
    return [plugins_patch({a: None for a in v.by_use("temperature_scaling")})]


def _temperature_on(v: ToggleView) -> list[dict]:
    """The block added as ``temp`` before the first postprocess block (calibrate, then clip)."""
    alias = v.free_alias("temp", "temperature_scaling")
    top = v.cfg.get("plugins") or {}
    post = set(v.by_hook("postprocess"))
    first = next((i for i, a in enumerate(top) if a in post), len(top))
    later = {a: top[a] for a in list(top)[first:]}
    # merge patches append new keys: take the later blocks out, then put them back after ``temp``
    return [plugins_patch({a: None for a in later}),
            plugins_patch({alias: {"use": "temperature_scaling"}, **later})]


#: acts on the predictions, so it applies to a final stage without a fine-tuned LM too (``lm_free``)
SHARED_TOGGLES = [
    SharedToggle("temperature", "temperature scaling", _has_temperature, _temperature_off, _temperature_on,
                 "removing temperature scaling", "adding temperature scaling (fitted on validation)",
                 rank=120, lm_free=True,
                 claimed="no number given; temperature and Platt scaling did not work for the write-up's "
                 "author [JP]; a TF-IDF + GBDT notebook: old LB 1.025 at T=1, 1.022 at T=1.2 (secondary)"),
]
