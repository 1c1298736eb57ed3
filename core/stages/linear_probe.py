"""A head initialised by a linear probe of the model's own features before fine-tuning (LP-FT).

The solutions start from a random head (or zeros): its first steps spend the learning rate on a head
that says nothing yet, while the backbone's adapters move under its noisy gradients. Here the head's
input (the hidden state the classifier pools: the last non-pad token, after the final norm) is computed
for every training row by the model as loaded (LoRA's B matrices are zero: the base model's features),
a standardised multinomial logistic regression is fitted on it (L2 strength by grouped cross-validation
on the same training rows), and its coefficients, mapped back to the raw features, become the head's
weight and bias. Fine-tuning then starts from the best linear reading of the frozen features.
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


def wants_probe(model) -> bool:
    """Whether the recipe's head asks for a linear-probe init (``default_head`` ``init: lp``)."""
    _, head = head_module(model)
    inner = getattr(head, "original_module", head)  # peft's modules_to_save wrapper keeps the module there
    return bool(getattr(inner, "linear_probe", False) or getattr(head, "linear_probe", False))


@contextlib.contextmanager
def _head_as_identity(model):
    """Inside the block the classifier's head is the identity: its "logits" are the pooled features."""
    import torch

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
    """(N, H) float64: the head's input for each token sequence of ``seqs`` (length-sorted batches of at
    most ``batch_tokens`` padded tokens), the model in eval mode."""
    import torch

    device = next(model.parameters()).device
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    out = np.zeros((len(seqs), model.config.hidden_size))
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
            out[idx] = forward_logits(model, ids, mask).float().cpu().numpy()
            i += len(idx)
            bar.update(len(idx))
    model.train(was_training)
    return out


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


def init_head_by_probe(model, tokenizer, encoder, rows: list[dict], max_length: int, batch_tokens: int,
                       seed: int, progress: bool = True) -> dict:
    """Fit the probe on ``rows`` (their features at ``max_length``) and write it into the head; what the
    run reports of it (C, CV table, training log loss of the probe)."""
    seqs = [encoder(r, max_length) for r in rows]
    x = pooled_features(model, tokenizer, seqs, batch_tokens, progress)
    y = np.array([r["label"] for r in rows], dtype=np.float64)
    groups = np.array([str(r.get("group", r["id"])) for r in rows])
    params, cv = fit_probe(x, y, groups, seed)
    set_head(model, params)
    fit_loss = float(-np.mean(np.sum(y * np.log(np.clip(linear_probs(params, x), 1e-15, 1)), axis=1)))
    log.info("head init lp: C=%g by %d-fold grouped CV on %d rows (%s); training log loss %.4f", params["C"],
             CV_FOLDS, len(rows), cv, fit_loss)
    return {"C": params["C"], "cv_log_loss": cv, "train_log_loss": round(fit_loss, 5), "rows": len(rows)}
