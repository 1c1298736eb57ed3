"""Weighted ensembles as a recipe construct: the schema of the ``ensemble:`` section and the pure
functions that blend members' per-row predictions.

::

    ensemble:
      members:
        gemma:  {weight: 2}                                          # the recipe as is
        armorm: {toggles: [armorm, tta], weight: 1, input: swapped}   # 2nd [P2]: ArmoRM fed A/B-swapped rows
        llama:  {toggles: [llama3], gate: {tokens_le: 512, tokens_ge: 1500}}   # 9th [P9]
        other:  {recipe: 3rd.yaml, toggles: [raja]}                  # a member of another recipe file
      weights: fixed        # or fit: fitted on the members' common validation rows (3rd [P3])

A member is a run of the recipe (or of ``recipe``) with extra ``toggles`` and ``overrides``; when its
config has a ``folds:`` section it is that fold combination (its out-of-fold rows). Its ``input`` is
which of its predictions the blend reads:

* ``final`` (default): what its own submission would be (TTA mean, then postprocessing);
* ``identity``: the original A/B order only; ``swapped``: the A/B-swapped rows, columns swapped back
  (the ``swap_ab`` view); ``both``: the mean of the two (its ``tta`` view). ``swapped`` and ``both``
  need the member's swap TTA view: enable it for that member (e.g. ``toggles: [tta]``).

A ``gate`` uses a member only on some rows: 9th place used its Llama member only for rows of at most
512 or at least 1500 tokens [P9]. Token counts here are a stated proxy: the characters of the prompt
and both responses (every turn) divided by ``chars_per_token`` (default 4.0). Measured on the 1,478
shared rows with the Gemma-3 tokenizer: 4.42 characters per token; with 4.0 the proxy puts 93 % of rows
on the same side of 512 and 96 % on the same side of 1500 as the real count. It is the whole text, not
the member's truncated prompt; a member's own tokenizer may differ.

The blend of row i is ``sum_m w_m g_im p_im / sum_m w_m g_im`` (``g_im`` = 1 when member m's gate
admits row i; ungated members always do). ``weights: fit`` minimises the log loss of that blend on the
members' common validation rows (weights >= 0 summing to 1, scipy SLSQP from equal weights), and
scores it honestly by fitting out of fold over prompt groups (:func:`crossfit_blend`): in-sample
weights overfit the rows they are scored on.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from replicator.core.config.sections import EnsembleConfig, GateConfig, MemberConfig
from replicator.core.errors import ReplicatorError
from replicator.core.rows import SWAP_PERM, SWAPPED_VIEW
from replicator.core.scoring.metrics import EPS, accuracy
from replicator.core.scoring.row_predictions import RowPreds
from replicator.core.scoring.stats import paired_bootstrap, row_log_loss

log = logging.getLogger(__name__)

INPUTS = ("final", "identity", "swapped", "both")
#: the per-row prediction view each input reads (core/predict/evaluate.py, core/predict/views.py name them)
INPUT_VIEW = {"final": "final", "identity": "identity", "swapped": SWAPPED_VIEW, "both": "tta"}
MISS = float(-np.log(EPS))  # the log loss of a certain miss, as metrics.log_loss clips it


# ---------------------------------------------------------------- pure functions over per-row predictions


def member_view(name: str, preds: RowPreds, member: MemberConfig, where: str) -> np.ndarray:
    """The (N, 3) predictions member ``name`` contributes: the view its ``input`` names."""
    view = INPUT_VIEW[member.input]
    if member.input in ("swapped", "both") and SWAPPED_VIEW not in preds.views:
        raise ReplicatorError(f"ensemble member {name}: input {member.input} needs its A/B-swapped "
                              f"predictions (the {SWAPPED_VIEW} view) and {where} has only "
                              f"{', '.join(preds.views)}: enable swap TTA for that member, e.g. "
                              "toggles: [..., tta]")
    if view not in preds.views:
        raise ReplicatorError(f"ensemble member {name}: {where} has no {view!r} view (it has "
                              f"{', '.join(preds.views)})")
    return preds.views[view]


def align_members(preds: dict[str, tuple[str, RowPreds]]) -> dict[str, np.ndarray]:
    """Row positions of each member in the first member's row order; members must have the same
    validation rows (ids), else an error naming the two members and what differs."""
    (first, (where0, p0)), *rest = preds.items()
    ids0 = set(p0.ids)
    out = {first: np.arange(len(p0))}
    for name, (where, p) in rest:
        ids = set(p.ids)
        if ids != ids0:
            only_here, only_first = sorted(ids - ids0), sorted(ids0 - ids)
            example = (only_here or only_first)[0]
            raise ReplicatorError(
                f"ensemble members {first} ({where0}) and {name} ({where}) do not share their validation "
                f"rows: {len(ids & ids0)} shared, {len(only_first)} only in {first}, {len(only_here)} only "
                f"in {name} (e.g. id {example!r}); members must validate on the same rows (same data, split "
                "seed and fold)")
        if len(p.ids) != len(ids):
            raise ReplicatorError(f"ensemble member {name} ({where}): a validation row id appears twice")
        pos = {rid: k for k, rid in enumerate(p.ids)}
        out[name] = np.array([pos[rid] for rid in p0.ids], dtype=np.int64)
    return out


def estimated_tokens(chars, chars_per_token: float) -> np.ndarray:
    """The token-count proxy of rows with ``chars`` characters (prompt + both responses)."""
    return np.ceil(np.asarray(chars, dtype=np.float64) / chars_per_token)


def gate_mask(chars, gate: GateConfig | None) -> np.ndarray:
    """Whether the gate admits each row (all True without a gate): tokens <= le or tokens >= ge."""
    chars = np.asarray(chars)
    if gate is None:
        return np.ones(chars.shape, dtype=bool)
    tokens = estimated_tokens(chars, gate.chars_per_token)
    mask = np.zeros(chars.shape, dtype=bool)
    if gate.tokens_le is not None:
        mask |= tokens <= gate.tokens_le
    if gate.tokens_ge is not None:
        mask |= tokens >= gate.tokens_ge
    return mask


def blend(probs: list[np.ndarray], weights, masks: list[np.ndarray] | None = None) -> np.ndarray:
    """Per-row weighted mean of the members' (N, 3) probabilities over the members each row admits:
    ``sum_m w_m g_im p_im / sum_m w_m g_im``. A row with no positive weight is an error."""
    w = np.asarray(weights, dtype=np.float64)
    p = np.stack([np.asarray(x, dtype=np.float64) for x in probs])  # (M, N, 3)
    g = np.ones(p.shape[:2]) if masks is None else np.stack(masks).astype(np.float64)
    wg = w[:, None] * g  # (M, N)
    total = wg.sum(axis=0)
    if (total <= 0).any():
        raise ReplicatorError(f"{int((total <= 0).sum())} row(s) have no member with a positive weight "
                              f"(weights {np.round(w, 6).tolist()}): the gated members alone cannot predict "
                              "them")
    return (wg[:, :, None] * p).sum(axis=0) / total[:, None]


def _blend_loss(w, p: np.ndarray, g: np.ndarray, y: np.ndarray) -> float:
    """Mean log loss of the blend; a row no positive weight reaches counts as a certain miss
    (``-log(eps)``), so the optimiser never leaves rows without a member."""
    wg = np.maximum(w, 0)[:, None] * g
    total = wg.sum(axis=0)
    q = (wg[:, :, None] * p).sum(axis=0) / np.maximum(total, 1e-300)[:, None]
    return float(np.where(total > 0, row_log_loss(q, y), MISS).mean())


def fit_weights(probs: list[np.ndarray], labels, masks: list[np.ndarray] | None = None) -> np.ndarray:
    """Blend weights (>= 0, summing to 1) minimising the blend's log loss on these rows (scipy SLSQP
    from equal weights; deterministic)."""
    from scipy.optimize import minimize

    p = np.stack([np.asarray(x, dtype=np.float64) for x in probs])
    g = np.ones(p.shape[:2]) if masks is None else np.stack(masks).astype(np.float64)
    y = np.asarray(labels, dtype=np.float64)
    m = len(p)
    x0 = np.full(m, 1.0 / m)
    if m == 1:
        return x0
    res = minimize(_blend_loss, x0, args=(p, g, y), method="SLSQP", bounds=[(0.0, 1.0)] * m,
                   constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0}],
                   options={"ftol": 1e-12, "maxiter": 1000})
    w = np.clip(res.x, 0.0, None)
    w = w / w.sum()
    if _blend_loss(w, p, g, y) > _blend_loss(x0, p, g, y) + 1e-12:
        raise ReplicatorError(f"fitting the blend weights failed ({res.message}): the fit is worse than "
                              "equal weights")
    return w


def group_folds(groups: list[str], k: int, seed: int) -> np.ndarray:
    """A fold number per row: the sorted prompt groups shuffled with ``seed`` and dealt into ``k``
    folds (rows of one prompt stay together). At least ``k`` groups are needed."""
    unique = sorted(set(groups))
    if len(unique) < k:
        raise ReplicatorError(f"weights: fit scores the blend with {k} folds over prompt groups, but the "
                              f"members' common rows have only {len(unique)} group(s); lower "
                              "ensemble.fit_folds or use more rows")
    order = np.random.default_rng(seed).permutation(len(unique))
    fold_of = {unique[j]: i % k for i, j in enumerate(order)}
    return np.array([fold_of[g] for g in groups], dtype=np.int64)


def crossfit_blend(probs: list[np.ndarray], labels, masks, groups: list[str], k: int,
                   seed: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """The honest blend: each fold's rows blended with weights fitted on the other folds. Returns
    (per-row blend, the weights fitted for each fold)."""
    y = np.asarray(labels, dtype=np.float64)
    g = [np.ones(len(y), dtype=bool) for _ in probs] if masks is None else masks
    fold = group_folds(groups, k, seed)
    out = np.zeros((len(y), 3))
    fitted = []
    for f in range(k):
        train, test = fold != f, fold == f
        w = fit_weights([p[train] for p in probs], y[train], [m[train] for m in g])
        out[test] = blend([p[test] for p in probs], w, [m[test] for m in g])
        fitted.append(w)
    return out, fitted


def swap_back(probs: np.ndarray) -> np.ndarray:
    """Probabilities predicted on A/B-swapped rows, in the original rows' column order."""
    return np.asarray(probs)[:, list(SWAP_PERM)]


# ---------------------------------------------------------------- a set of members blended, and the report


def blend_members(specs: dict[str, MemberConfig], inputs: dict[str, tuple[str, RowPreds]],
                  cfg: EnsembleConfig, seed: int) -> tuple[RowPreds, dict]:
    """Blend the members' per-row predictions (``inputs``: name -> (where they come from, RowPreds)),
    in the first member's row order. Returns the ensemble's per-row predictions (views ``final``: the
    blend, honest; ``insample`` with ``weights: fit``; ``member_<name>``: each member's input; the
    first member's ``baseline_*`` views) and what was decided (weights, coverage of the gates)."""
    pos = align_members(inputs)
    p0 = next(iter(inputs.values()))[1]
    names = list(specs)
    probs, masks = [], []
    for name in names:
        where, p = inputs[name]
        idx = pos[name]
        if not np.allclose(p.labels[idx], p0.labels, atol=1e-6):
            raise ReplicatorError(f"ensemble member {name} ({where}): its labels differ from {names[0]}'s on "
                                  "the same row ids: the members read different data")
        probs.append(member_view(name, p, specs[name], where)[idx])
        masks.append(gate_mask(p0.chars, specs[name].gate))
    info: dict = {"weights_mode": cfg.weights,
                  "coverage": {n: float(m.mean()) for n, m in zip(names, masks, strict=True)},
                  "gates": {n: dataclasses.asdict(specs[n].gate) for n in names if specs[n].gate is not None}}
    if cfg.weights == "fixed":
        w = np.array([specs[n].weight for n in names], dtype=np.float64)
        w = w / w.sum()
        views = {"final": blend(probs, w, masks)}
    else:
        w = fit_weights(probs, p0.labels, masks)
        honest, per_fold = crossfit_blend(probs, p0.labels, masks, p0.groups, cfg.fit_folds, seed)
        views = {"final": honest, "insample": blend(probs, w, masks)}
        info["fold_weights"] = [{n: float(x) for n, x in zip(names, fw, strict=True)} for fw in per_fold]
    info["weights"] = {n: float(x) for n, x in zip(names, w, strict=True)}
    views.update({f"member_{n}": p for n, p in zip(names, probs, strict=True)})
    views.update({v: m for v, m in p0.views.items() if v.startswith("baseline_")})
    out = RowPreds(ids=list(p0.ids), groups=list(p0.groups), chars=p0.chars, labels=p0.labels, views=views)
    return out, info


def summarize_blend(preds: RowPreds, info: dict, n_boot: int = 2000) -> dict:
    """Each member's score and the blend's on the same rows, with the blend − member difference and its
    95 % paired bootstrap interval over prompt groups
    (:func:`replicator.core.scoring.stats.paired_bootstrap`)."""

    y = preds.labels
    blend_rows = row_log_loss(preds.views["final"], y)
    out: dict = {"n_rows": len(preds), "members": {},
                 "blend": {"log_loss": float(blend_rows.mean()),
                           "accuracy": accuracy(preds.views["final"], y)}}
    for name, w in info["weights"].items():
        p = preds.views[f"member_{name}"]
        rows = row_log_loss(p, y)
        d = paired_bootstrap(rows, blend_rows, preds.groups, n_boot=n_boot, seed=0)
        entry = {"weight": w, "coverage": info["coverage"][name], "log_loss": float(rows.mean()),
                 "accuracy": accuracy(p, y),
                 "blend_minus_member": {k: d[k] for k in ("delta", "lo", "hi", "p_better")}}
        gated = gate_rows(preds, info, name)
        if gated is not None:
            entry["log_loss_on_its_rows"] = float(rows[gated].mean()) if gated.any() else None
        out["members"][name] = entry
    if "insample" in preds.views:
        out["insample"] = {"log_loss": float(row_log_loss(preds.views["insample"], y).mean()),
                           "accuracy": accuracy(preds.views["insample"], y)}
    return out


def gate_rows(preds: RowPreds, info: dict, name: str) -> np.ndarray | None:
    """The rows a gated member predicts (None for an ungated member)."""
    gate = (info.get("gates") or {}).get(name)
    return None if gate is None else gate_mask(preds.chars, GateConfig(**gate))


def blend_markdown(title: str, summary: dict, info: dict, n_folds: int) -> str:
    """``ensemble.md``: the members and the blend on the same rows."""
    lines = [f"# {title}", "",
             f"{summary['n_rows']} validation rows shared by every member. Δ = blend − member log loss "
             "with a 95 % paired bootstrap interval over prompt groups (below 0: the blend is better).", "",
             "| member | weight | rows used | log loss | accuracy | Δ blend − member | 95 % interval |",
             "|---|---|---|---|---|---|---|"]
    for name, m in summary["members"].items():
        d = m["blend_minus_member"]
        lines.append(f"| {name} | {m['weight']:.4f} | {m['coverage']:.0%} | {m['log_loss']:.4f} | "
                     f"{m['accuracy']:.4f} | {d['delta']:+.4f} | [{d['lo']:+.4f}, {d['hi']:+.4f}] |")
    b = summary["blend"]
    lines += [f"| **blend** | | | **{b['log_loss']:.4f}** | {b['accuracy']:.4f} | | |", ""]
    for name, m in summary["members"].items():
        if m.get("log_loss_on_its_rows") is not None:
            lines.append(f"- {name} is gated ({info['gates'][name]}): log loss "
                         f"{m['log_loss_on_its_rows']:.4f} on the {m['coverage']:.0%} of rows it predicts; "
                         "its row above scores it on all rows.")
    if info["weights_mode"] == "fit":
        lines.append("- Weights fitted on these rows (what `replicate predict` uses). The blend's score "
                     f"above is out of fold: each of {n_folds} folds of prompt groups blended with weights "
                     "fitted on the others. In-sample (weights fitted on the rows they score, optimistic): "
                     f"{summary['insample']['log_loss']:.4f}.")
    else:
        lines.append("- Fixed weights from the recipe: not fitted on these rows, so the blend's score is "
                     "honest as long as they were not tuned on them.")
    return "\n".join(lines) + "\n"
