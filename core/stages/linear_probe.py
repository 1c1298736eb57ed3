"""A head initialised by a linear probe of the model's own features before fine-tuning (LP-FT).

The solutions start from a random head (or zeros): its first steps spend the learning rate on a head
that says nothing yet, while the backbone's adapters move under its noisy gradients. Here the head's
input (the hidden state the classifier pools: the last non-pad token, after the final norm) is computed
for every training row by the model as loaded (LoRA's B matrices are zero: the base model's features),
a standardised multinomial logistic regression is fitted on it (L2 strength by grouped cross-validation
on the same training rows), and its coefficients, mapped back to the raw features, become the head's
weight and bias. Fine-tuning then starts from the best linear reading of the frozen features.

A head that pools each response (``response_pool`` ``init: lp``) is probed in its own form: its features
are ``d = a - b``, ``|d|`` and ``(a + b) / 2`` of the two responses' pooled states, the probe is
``logit_A = w . d``, ``logit_B = -w . d``, ``logit_tie = v . [|d|, (a + b) / 2] + c``, fitted with the
stage's ``model.offset`` (the style regression's log-probabilities) added to its logits, as training adds
them: fine-tuning starts from the offset plus the best linear reading of the residual, not from the
offset alone (:func:`fit_pair_probe`).
"""

from __future__ import annotations

import contextlib
import logging
import sys

import numpy as np
from tqdm.auto import tqdm

from replicator.core.errors import ReplicatorError
from replicator.core.model.tensors import head_module
from replicator.core.stages.baseline import fit_linear, linear_probs
from replicator.core.tokens.batches import collate, forward_logits

log = logging.getLogger(__name__)

#: L2 strengths tried (on standardised features), by grouped CV on the training rows
C_GRID = (0.0003, 0.001, 0.003, 0.01, 0.03)
CV_FOLDS = 3
#: the logit given to a class absent from the probe's training labels (-inf would not train)
ABSENT = -30.0
#: L2 strengths tried for a pair head's probe: :data:`C_GRID` and five steps stronger. On top of the offset
#: the residual needs far stronger shrinkage than a probe alone: with 0.0001 as the strongest, the CV chose
#: it in every fold of three split seeds (4a76ee9); from this grid it chooses 1e-5 to 1e-4
#: (benchmarks/pair_probe.py)
PAIR_C_GRID = (1e-6, 3e-6, 1e-5, 3e-5, 1e-4) + C_GRID


def _pair_heads(model) -> list:
    """The modules of ``model`` that are probed in the pair form (``response_pool``: they have
    ``load_probe``); the head and peft's copy of it alike."""
    return [m for m in model.modules() if callable(getattr(m, "load_probe", None))]


def wants_probe(model) -> bool:
    """Whether the recipe's head asks for a linear-probe init (``default_head`` or ``response_pool``
    ``init: lp``)."""
    _, head = head_module(model)
    inner = getattr(head, "original_module", head)  # peft's modules_to_save wrapper keeps the module there
    return bool(getattr(inner, "linear_probe", False) or getattr(head, "linear_probe", False))


@contextlib.contextmanager
def _head_as_identity(model):
    """Inside the block the classifier's head gives its features instead of logits: the identity (the
    pooled state), or a pair head's own features (``emit_features``)."""
    import torch

    pair = _pair_heads(model)
    if pair:
        try:
            for m in pair:
                m.emit_features = True
            yield
        finally:
            for m in pair:
                m.emit_features = False
        return
    name, head = head_module(model)
    parents = [m for m in model.modules() if getattr(m, name, None) is head]
    if not parents:
        raise ReplicatorError(f"head init lp: cannot find the module holding {name!r}")
    try:
        for p in parents:
            setattr(p, name, torch.nn.Identity())
        yield
    finally:
        for p in parents:
            setattr(p, name, head)


def pooled_features(model, tokenizer, seqs: list, batch_tokens: int, progress: bool = True) -> np.ndarray:
    """(N, F) float64: the head's input for each token sequence of ``seqs`` (F = H, or a pair head's 3 H
    features; length-sorted batches of at most ``batch_tokens`` padded tokens), the model in eval mode."""
    import torch

    device = next(model.parameters()).device
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    out = None
    was_training = model.training
    model.eval()
    with torch.inference_mode(), _head_as_identity(model), \
            tqdm(total=len(seqs), desc="probe features", disable=not progress, mininterval=5,
                 file=sys.stderr) as bar:
        i = 0
        while i < len(order):
            j = i + 1  # ascending lengths: the j-th row is the longest of the batch
            while j < len(order) and len(seqs[order[j]]) * (j - i + 1) <= batch_tokens:
                j += 1
            idx = order[i:j]
            ids, mask = collate([seqs[j] for j in idx], tokenizer.pad_token_id, device)
            got = forward_logits(model, ids, mask).float().cpu().numpy()
            if out is None:
                out = np.zeros((len(seqs), got.shape[1]))
            out[idx] = got
            i += len(idx)
            bar.update(len(idx))
    model.train(was_training)
    return out if out is not None else np.zeros((0, model.config.hidden_size))


def fit_probe(x: np.ndarray, y: np.ndarray, groups: np.ndarray, seed: int) -> tuple[dict, dict]:
    """The standardised logistic regression of the soft labels ``y`` (N, 3) on ``x`` with the ``C`` of
    :data:`C_GRID` of lowest grouped :data:`CV_FOLDS`-fold log loss; (its parameters, the CV table)."""
    from sklearn.model_selection import GroupKFold

    def log_loss(p, ix):
        return float(-np.mean(np.sum(y[ix] * np.log(np.clip(p, 1e-15, 1)), axis=1)))

    def fit(ix, C):
        i, k = np.nonzero(y[ix] > 0)
        return fit_linear(x[ix][i], k, y[ix][i, k], C=C, max_iter=2000)

    cv = {}
    if len(set(groups.tolist())) >= CV_FOLDS:
        splits = list(GroupKFold(n_splits=CV_FOLDS, shuffle=True, random_state=seed).split(x, groups=groups))
        for C in C_GRID:
            cv[C] = float(np.mean([log_loss(linear_probs(fit(tr, C), x[va]), va) for tr, va in splits]))
    best = min(cv, key=cv.get) if cv else C_GRID[len(C_GRID) // 2]
    return fit(np.arange(len(x)), best) | {"C": best}, {str(c): round(v, 5) for c, v in cv.items()}


def _pair_logits(params: dict, x: np.ndarray, offset: np.ndarray | None) -> np.ndarray:
    h = len(params["w"])
    la = x[:, :h] @ np.asarray(params["w"])
    lt = x[:, h:] @ np.asarray(params["v"]) + params["c"]
    z = np.stack([la, -la, lt], 1)
    return z if offset is None else z + offset


def pair_probs(params: dict, x: np.ndarray, offset: np.ndarray | None = None) -> np.ndarray:
    """(N, 3) probabilities of a :func:`fit_pair_probe` model on the pair features ``x`` (raw: ``w``,
    ``v``, ``c`` are in raw units), plus ``offset`` ((N, 3) log-probabilities) when given."""
    z = _pair_logits(params, x, offset)
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def _fit_pair(zd: np.ndarray, zt: np.ndarray, y: np.ndarray, off: np.ndarray, C: float) -> tuple:
    """(w, v, c) minimising the mean soft cross-entropy of ``[zd w, -zd w, zt v + c] + off`` plus
    ``(|w|^2 + |v|^2) / (2 C N)`` (scikit-learn's scaling of C); L-BFGS in float64 from zero."""
    import torch

    n = len(y)
    Zd, Zt, Y, Off = (torch.as_tensor(a, dtype=torch.float64) for a in (zd, zt, y, off))
    w = torch.zeros(zd.shape[1], dtype=torch.float64, requires_grad=True)
    v = torch.zeros(zt.shape[1], dtype=torch.float64, requires_grad=True)
    c = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, v, c], lr=1, max_iter=500, tolerance_grad=1e-9, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        la = Zd @ w
        z = torch.stack([la, -la, Zt @ v + c], 1) + Off
        loss = -(Y * torch.log_softmax(z, 1)).sum(1).mean() + (w @ w + v @ v) / (2 * C * n)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach().numpy(), v.detach().numpy(), float(c.detach())


def fit_pair_probe(x: np.ndarray, y: np.ndarray, offset: np.ndarray | None, groups: np.ndarray,
                   seed: int, grid: tuple = PAIR_C_GRID) -> tuple[dict, dict]:
    """The pair head's regression of the soft labels ``y`` (N, 3) on its features ``x`` (N, 3 H: ``d``,
    ``|d|``, ``(a + b) / 2``) with ``offset`` ((N, 3) log-probabilities, or None) added to its logits; the
    ``C`` of ``grid`` (default :data:`PAIR_C_GRID`) of lowest grouped :data:`CV_FOLDS`-fold log loss
    (offset included). ``d`` is scaled, not centred (a mean would be a bias for A over B, which the head
    has not); the rest is standardised. Returns (raw-unit ``w``, ``v``, ``c`` and ``C``, the CV table)."""
    from sklearn.model_selection import GroupKFold

    if x.shape[1] % 3:
        raise ReplicatorError(f"head init lp: a pair head's features are d, |d| and (a + b) / 2 "
                              f"(3 H wide); got {x.shape[1]}")
    h = x.shape[1] // 3
    off = np.zeros_like(y) if offset is None else np.asarray(offset, dtype=np.float64)
    xd, xt = x[:, :h], x[:, h:]
    sd = np.sqrt(np.mean(xd ** 2, 0))
    sd[sd == 0] = 1.0
    mt, st = xt.mean(0), xt.std(0)
    st[st == 0] = 1.0
    zd, zt = xd / sd, (xt - mt) / st

    def log_loss(w, v, c, ix):  # of standardised weights on the standardised features
        p = pair_probs({"w": w, "v": v, "c": c}, np.hstack([zd[ix], zt[ix]]), off[ix])
        return float(-np.mean(np.sum(y[ix] * np.log(np.clip(p, 1e-15, 1)), 1)))

    cv = {}
    if len(set(groups.tolist())) >= CV_FOLDS:
        splits = list(GroupKFold(n_splits=CV_FOLDS, shuffle=True, random_state=seed).split(x, groups=groups))
        for C in grid:
            cv[C] = float(np.mean([log_loss(*_fit_pair(zd[tr], zt[tr], y[tr], off[tr], C), va)
                                   for tr, va in splits]))
    best = min(cv, key=cv.get) if cv else grid[len(grid) // 2]
    if cv and best in (grid[0], grid[-1]):
        log.warning("head init lp: the CV chose C=%g, the edge of the grid %s: the best may lie beyond it",
                    best, grid)
    w, v, c = _fit_pair(zd, zt, y, off, best)
    params = {"w": (w / sd).tolist(), "v": (v / st).tolist(), "c": c - float((v / st) @ mt), "C": best}
    return params, {str(k): round(val, 5) for k, val in cv.items()}


def set_pair_head(model, params: dict) -> None:
    """Write a :func:`fit_pair_probe` regression into every pair head of ``model`` (its ``load_probe``)."""
    heads = _pair_heads(model)
    if not heads:
        raise ReplicatorError("head init lp: the model has no pair head (response_pool) to write the "
                              "probe into")
    for m in heads:
        m.load_probe(params["w"], params["v"], params["c"])


def set_head(model, params: dict) -> None:
    """Write a :func:`fit_probe` regression into the trainable head: ``W = coef / scale``,
    ``b = intercept - W @ mean`` (an absent class gets :data:`ABSENT`)."""
    import torch

    name, _ = head_module(model)
    mean, scale = np.asarray(params["mean"]), np.asarray(params["scale"])
    w = np.asarray(params["coef"]) / scale
    b = np.array([ABSENT if v is None else v for v in params["intercept"]]) - w @ mean
    found = {}
    for n, p in model.named_parameters():
        if p.requires_grad and f".{name}." in f".{n}" and n.rsplit(".", 1)[-1] in ("weight", "bias"):
            found[n.rsplit(".", 1)[-1]] = p
    if set(found) != {"weight", "bias"} or found["weight"].shape[0] < 3:
        raise ReplicatorError(f"head init lp: the trainable head {name!r} needs a weight and a bias "
                              f"(found {sorted(found) or 'none'}): use default_head with init: lp")
    with torch.no_grad():
        found["weight"].zero_()
        found["weight"][:3] = torch.as_tensor(w, dtype=found["weight"].dtype)
        found["bias"].zero_()
        found["bias"][:3] = torch.as_tensor(b, dtype=found["bias"].dtype)


def memoised_features(model, tokenizer, seqs: list, batch_tokens: int, progress: bool,
                      memo: dict | None) -> np.ndarray:
    """:func:`pooled_features` of ``seqs``, computing only the sequences ``memo`` (token bytes -> features)
    lacks and adding them to it. Valid while the features do not change between calls: a cross-fitted
    stage probes every fold from the same initial weights (LoRA's B zero), so a row's sequence probed in
    one fold has the same features in the next."""
    if memo is None:
        return pooled_features(model, tokenizer, seqs, batch_tokens, progress)
    keys = [np.asarray(s, dtype=np.int32).tobytes() for s in seqs]
    todo = {k: s for k, s in zip(keys, seqs, strict=True) if k not in memo}
    if todo:
        memo.update(zip(todo, pooled_features(model, tokenizer, list(todo.values()), batch_tokens, progress),
                        strict=True))
    log.info("head init lp: features of %d sequence(s), %d computed, %d from earlier folds", len(seqs),
             len(todo), sum(k not in todo for k in keys))
    return np.stack([memo[k] for k in keys])


def init_head_by_probe(model, tokenizer, encoder, rows: list[dict], max_length: int, batch_tokens: int,
                       seed: int, progress: bool = True, offset=None, memo: dict | None = None) -> dict:
    """Fit the probe on ``rows`` (their features at ``max_length``) and write it into the head; what the
    run reports of it (C, CV table, training log loss of the probe). ``offset``: rows -> (N, 3)
    log-probabilities (``model.offset``), which only a pair head's probe is fitted with. ``memo``: the
    features of sequences probed before, from the same weights (:func:`memoised_features`)."""
    pair = bool(_pair_heads(model))
    if offset is not None and not pair:
        raise ReplicatorError("head init lp with model.offset: default_head's probe is fitted without the "
                              "offset; start the head at zero (init: zeros), which predicts the offset "
                              "baseline, or probe a response_pool head (init: lp), which is fitted with it")
    seqs = [encoder(r, max_length) for r in rows]
    x = memoised_features(model, tokenizer, seqs, batch_tokens, progress, memo)
    y = np.array([r["label"] for r in rows], dtype=np.float64)
    groups = np.array([str(r.get("group", r["id"])) for r in rows])
    if pair:
        off = None if offset is None else np.asarray(offset(rows), dtype=np.float64)
        params, cv = fit_pair_probe(x, y, off, groups, seed)
        set_pair_head(model, params)
        p = pair_probs(params, x, off)
    else:
        params, cv = fit_probe(x, y, groups, seed)
        set_head(model, params)
        p = linear_probs(params, x)
    fit_loss = float(-np.mean(np.sum(y * np.log(np.clip(p, 1e-15, 1)), axis=1)))
    log.info("head init lp: C=%g by %d-fold grouped CV on %d rows (%s); training log loss %.4f", params["C"],
             CV_FOLDS, len(rows), cv, fit_loss)
    return {"C": params["C"], "cv_log_loss": cv, "train_log_loss": round(fit_loss, 5), "rows": len(rows)}
