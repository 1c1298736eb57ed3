"""Baselines: what a model must beat, computed on the same validation rows as the model.

Every run fits three baselines (:data:`EVERY_RUN`) on its stage's **training** rows and predicts its
validation rows with them (seconds, no model involved); the predictions are the ``baseline_prior``,
``baseline_length`` and ``baseline_style`` views of ``valid_predictions.csv.gz`` and their scores are
``baseline_prior_log_loss`` / ``baseline_length_log_loss`` / ``baseline_style_log_loss`` in
``metrics.json``. They are never averaged into ``tta`` nor postprocessed into ``final``: they do not
change the model's numbers.

``prior``
    the training label shares (soft labels count fractionally): the best constant prediction.
``length_lr``
    "the longer answer wins": a multinomial logistic regression
    (``make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))``) on
    :func:`length_features`. It is **symmetric under the A/B swap**: it is fitted on the training
    rows plus their swapped copies (A and B exchanged, label flipped), as the LM is with swap
    augmentation, and it predicts the mean of a row and of its swapped copy (flipped back), so it
    cannot exploit which side a response is on, only how long and how structured it is. Soft
    labels become weighted samples (one sample per class with mass > 0, weight = that mass), so
    hard labels are plain samples. lbfgs on fixed data: deterministic.
``style_lr``
    "the longer, better-formatted, non-refusing answer wins": the same swap-symmetric multinomial
    logistic regression as ``length_lr`` (rows plus swapped copies, the mean of a row and its swapped
    copy predicted, soft labels as weighted samples) on :data:`STYLE_FEATURES`:
    :func:`style_features` of a row, :data:`FEATURES` plus, per response, the :data:`STYLE` counts
    (refusal phrases, ``**`` bold marks, markdown headers, question marks, digits, blank-line paragraph
    breaks, links; :func:`style_counts`), with the A - B difference and the swap-invariant
    ``|A - B|`` of every count (lengths as ``|log-ratio|``, style counts of ``log(1 + n)``), whether
    the two responses are identical and whether both refuse. Standardised; the L2 strength ``C`` is
    chosen from :data:`STYLE_C_GRID` by a grouped :data:`STYLE_CV_FOLDS`-fold cross-validation
    **inside the training rows** (prompt groups kept whole, folds seeded with 0; never the validation
    rows), falling back to ``C = 1`` when the training rows hold fewer prompt groups than folds.
    lbfgs on fixed data, fixed folds: deterministic.
``uniform``
    1/3 each (ln 3 = 1.0986); only as a baseline run (the report shows it as a reference anyway).

A recipe with ``model.base: baseline:<name>`` (``baseline:length_lr``, ``baseline:style_lr``,
``baseline:prior``, ``baseline:uniform``) is a **baseline run**: the pipeline loads no LM and trains
nothing but the baseline; it writes the same outputs as any run (``metrics.json`` with ``log_loss``,
``tta_log_loss`` and ``final_log_loss`` all equal to the baseline's; ``valid_predictions.csv.gz``
with the ``identity``, ``tta`` and ``final`` views) and saves the fitted parameters as JSON
(``baseline.json`` in the stage's artifacts folder), which ``replicate predict`` applies to a test
CSV. ``recipes/baseline_length.yaml`` and ``recipes/baseline_style.yaml`` are.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from pathlib import Path

import numpy as np

from replicator.core.errors import ReplicatorError
from replicator.core.predict.evaluate import label_prior, scores, write_valid_predictions
from replicator.core.stages.result import StageResult
from replicator.core.util.atomic import atomic_write_text
from replicator.core.util.layout import BASELINE_PARAMS, VALID_PREDICTIONS

log = logging.getLogger(__name__)

PREFIX = "baseline:"
KINDS = ("uniform", "prior", "length_lr", "style_lr")
#: the baselines every run computes, as (kind, view name in valid_predictions.csv.gz)
EVERY_RUN = (("prior", "baseline_prior"), ("length_lr", "baseline_length"), ("style_lr", "baseline_style"))

COUNTS = ("chars", "words", "lines", "list_items", "code_blocks")
FEATURES = (tuple(f"log1p_a_{c}" for c in COUNTS) + tuple(f"log1p_b_{c}" for c in COUNTS)
            + tuple(f"diff_{c}" for c in COUNTS) + tuple(f"log_ratio_{c}" for c in COUNTS)
            + ("log1p_prompt_chars",))
LIST_ITEM = re.compile(r"^\s*(?:[-*]|\d+\.)\s", re.M)
SWAP = (1, 0, 2)  # A<->B, tie stays

#: a response that declines (the arena's voters mostly punish it; two refusals often tie)
REFUSAL = re.compile(r"\b(?:I'?m sorry|I apologi[sz]e|as an AI|I cannot|I can'?t|I am unable|I'?m unable|"
                     r"I'?m not able to|not able to provide)", re.I)
STYLE = ("refusal", "bold", "headers", "questions", "digits", "paragraphs", "links")
#: ``style_lr``'s inputs: the length features, then |log-ratio| of each length count, then A - B and
#: |A - B| of each style count (as ``log(1 + n)``), then two pair flags
STYLE_FEATURES = (FEATURES + tuple(f"abs_log_ratio_{c}" for c in COUNTS)
                  + tuple(f"diff_{s}" for s in STYLE) + tuple(f"abs_diff_{s}" for s in STYLE)
                  + ("identical", "both_refuse"))
#: measured on the 1,478 competition rows (5 grouped folds): the CV optimum is about 0.002 - 0.003 on
#: 200 - 1,478 rows (1.0400 against 1.0506 at C = 1); strong shrinkage, which also keeps the fits fast
STYLE_C_GRID = (0.001, 0.003, 0.01, 0.03, 0.1)
STYLE_CV_FOLDS = 5


def is_baseline(base: str) -> bool:
    return isinstance(base, str) and base.startswith(PREFIX)


def baseline_kind(base: str, where: str = "model.base") -> str:
    """``length_lr`` for ``baseline:length_lr``; a ReplicatorError naming ``where`` for an unknown one."""
    kind = base[len(PREFIX):]
    if kind not in KINDS:
        raise ReplicatorError(f"{where}: unknown baseline {base!r}; known: "
                              + ", ".join(PREFIX + k for k in KINDS))
    return kind


# ---------------------------------------------------------------- features


def text_counts(turns) -> np.ndarray:
    """characters, words, lines, list items (lines starting with ``-``, ``*`` or ``N.``) and code
    blocks (pairs of ````` fences, an unclosed one counting) of a response, summed over turns."""
    out = np.zeros(len(COUNTS))
    for t in turns:
        t = t or ""
        out += (len(t), len(t.split()), len(t.splitlines()), len(LIST_ITEM.findall(t)),
                (t.count("```") + 1) // 2)
    return out


def length_features(row: dict) -> np.ndarray:
    """The :data:`FEATURES` of a row: the counts of each response (as ``log(1 + n)``: lengths are
    heavy-tailed), their A - B differences, their log-ratios ``log((1 + A) / (1 + B))`` and the prompt's
    characters (``log(1 + n)``); all turns summed. Swapping A and B exchanges the first two blocks
    and negates the next two. (Raw counts instead of logs: 0.006 worse on the real rows, mean of 4 splits.)"""
    a, b = text_counts(row["response_a"]), text_counts(row["response_b"])
    prompt = sum(len(t or "") for t in row["prompt"])
    la, lb = np.log1p(a), np.log1p(b)
    return np.concatenate([la, lb, a - b, la - lb, [math.log1p(prompt)]])


def swap_features(x: np.ndarray) -> np.ndarray:
    """The features of the swapped rows (A and B exchanged), from theirs."""
    n = len(COUNTS)
    a, b, d, r, p = x[:, :n], x[:, n:2 * n], x[:, 2 * n:3 * n], x[:, 3 * n:4 * n], x[:, 4 * n:]
    return np.concatenate([b, a, -d, -r, p], axis=1)


def feature_matrix(rows: list[dict]) -> np.ndarray:
    return np.array([length_features(r) for r in rows], dtype=np.float64).reshape(len(rows), len(FEATURES))


def joined(turns) -> str:
    """A response's turns as one text (None turns as empty)."""
    return "\n".join(t or "" for t in turns)


def style_counts(turns) -> np.ndarray:
    """A response's :data:`STYLE` counts, as ``log(1 + n)``: whether it refuses, ``**`` bold marks,
    markdown headers, question marks, digits, blank-line paragraph breaks, links."""
    t = joined(turns)
    n = (bool(REFUSAL.search(t)), t.count("**"), len(re.findall(r"^#+ ", t, re.M)), t.count("?"),
         sum(map(str.isdigit, t)), len(re.findall(r"\n\s*\n", t)), t.count("http"))
    return np.log1p(np.array(n, dtype=np.float64))


def style_features(row: dict) -> np.ndarray:
    """The :data:`STYLE_FEATURES` of a row: :func:`length_features`, the absolute log-ratios of the
    length counts, the A - B differences and their absolute values of the :func:`style_counts`, whether
    the two responses are identical (after stripping) and whether both refuse. Swapping A and B acts on
    the length block as :func:`swap_features`, negates the style differences and leaves the rest."""
    x = length_features(row)
    n = len(COUNTS)
    a, b = joined(row["response_a"]), joined(row["response_b"])
    sa, sb = style_counts(row["response_a"]), style_counts(row["response_b"])
    d = sa - sb
    both = bool(sa[0]) and bool(sb[0])  # log1p(1) > 0: refuses
    return np.concatenate([x, np.abs(x[3 * n:4 * n]), d, np.abs(d),
                           [float(a.strip() == b.strip()), float(both)]])


def swap_style_features(x: np.ndarray) -> np.ndarray:
    """The :func:`style_features` of the swapped rows (A and B exchanged), from theirs."""
    m, k = len(FEATURES), len(STYLE)
    ls, ar, d, rest = x[:, :m], x[:, m:m + len(COUNTS)], x[:, m + len(COUNTS):m + len(COUNTS) + k], \
        x[:, m + len(COUNTS) + k:]
    return np.concatenate([swap_features(ls), ar, -d, rest], axis=1)


def style_matrix(rows: list[dict]) -> np.ndarray:
    return np.array([style_features(r) for r in rows], dtype=np.float64).reshape(len(rows),
                                                                                 len(STYLE_FEATURES))


def labels_of(rows: list[dict]) -> np.ndarray:
    return np.array([r["label"] for r in rows], dtype=np.float64).reshape(len(rows), 3)


def training_samples(rows: list[dict], kind: str = "length_lr") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(X, class, weight): the rows and their swapped copies, one sample per class with label mass > 0
    (the features of ``kind``: ``length_lr`` or ``style_lr``)."""
    matrix, swap = _FEATURES_OF[kind]
    return _samples(matrix(rows), labels_of(rows), swap)


def _samples(x: np.ndarray, y: np.ndarray, swap) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, y = np.concatenate([x, swap(x)]), np.concatenate([y, y[:, SWAP]])
    i, k = np.nonzero(y > 0)
    return x[i], k, y[i, k]


#: per fitted kind: (rows -> feature matrix, features -> the swapped rows' features)
_FEATURES_OF = {"length_lr": (feature_matrix, swap_features),
                "style_lr": (style_matrix, swap_style_features)}


# ---------------------------------------------------------------- fitted baselines


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit(kind: str, train_rows: list[dict]) -> dict:
    """The fitted parameters of baseline ``kind`` (plain JSON: what ``baseline.json`` holds)."""
    if kind == "uniform":
        return {"kind": kind, "probs": [1 / 3] * 3}
    if not train_rows:
        raise ReplicatorError(f"baseline {kind}: no training rows to fit on")
    if kind == "prior":
        return {"kind": kind, "probs": [float(v) for v in labels_of(train_rows).mean(axis=0)]}
    if kind == "length_lr":
        return _fit_length(train_rows)
    if kind == "style_lr":
        return _fit_style(train_rows)
    raise ReplicatorError(f"unknown baseline {kind!r}; known: {', '.join(KINDS)}")


def fit_linear(x: np.ndarray, k: np.ndarray, w: np.ndarray, C: float, max_iter: int) -> dict:
    """A standardised multinomial logistic regression of classes ``k`` (weights ``w``) on ``x``, as
    plain JSON-able numbers (``mean``, ``scale``, (3, D) ``coef``, ``intercept``, ``n_iter``). A class
    absent from ``k`` gets an intercept of -inf (None in JSON). lbfgs on fixed data: deterministic."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x)
    lr = LogisticRegression(C=C, max_iter=max_iter).fit(scaler.transform(x), k, sample_weight=w)
    classes = lr.classes_.tolist()
    coef, intercept = np.zeros((3, x.shape[1])), np.full(3, -np.inf)
    if len(classes) == 2:  # binary: sklearn keeps one row of coefficients for the second class
        coef[classes[1]], intercept[classes[1]], intercept[classes[0]] = lr.coef_[0], lr.intercept_[0], 0.0
    else:
        coef[classes], intercept[classes] = lr.coef_, lr.intercept_
    return {"mean": scaler.mean_.tolist(), "scale": scaler.scale_.tolist(), "coef": coef.tolist(),
            "intercept": [v if math.isfinite(v) else None for v in intercept.tolist()],
            "n_iter": int(np.max(lr.n_iter_))}


def linear_probs(params: dict, x: np.ndarray) -> np.ndarray:
    """(N, 3) probabilities of a :func:`fit_linear` model on ``x``."""
    mean, scale = np.asarray(params["mean"]), np.asarray(params["scale"])
    coef = np.asarray(params["coef"])
    intercept = np.array([-np.inf if v is None else v for v in params["intercept"]])
    return _softmax(((x - mean) / scale) @ coef.T + intercept)


def _fit_length(train_rows: list[dict]) -> dict:
    x, k, w = training_samples(train_rows)
    classes = sorted(set(k.tolist()))
    if len(classes) < 2:  # one class only: nothing to regress, the prior says it all
        return _prior_fallback("length_lr", train_rows, classes)
    return {"kind": "length_lr", "features": list(FEATURES), **fit_linear(x, k, w, C=1.0, max_iter=1000),
            "n_samples": int(x.shape[0]), "C": 1.0}


def _symmetric_probs(params: dict, x: np.ndarray, swap) -> np.ndarray:
    """The mean of a row's and its swapped copy's probabilities (flipped back)."""
    return (linear_probs(params, x) + linear_probs(params, swap(x))[:, SWAP]) / 2


def _prior_fallback(kind: str, train_rows: list[dict], classes: list[int]) -> dict:
    return {"kind": "prior", "probs": [float(v) for v in labels_of(train_rows).mean(axis=0)],
            "note": f"{kind} fell back to the prior: the training labels have one class ({classes})"}


def _fit_style(train_rows: list[dict]) -> dict:
    x, y = style_matrix(train_rows), labels_of(train_rows)
    xs, k, w = _samples(x, y, swap_style_features)
    classes = sorted(set(k.tolist()))
    if len(classes) < 2:
        return _prior_fallback("style_lr", train_rows, classes)
    groups = np.array([str(r.get("group", r["id"])) for r in train_rows])
    C, cv = choose_style_c(x, y, groups)
    return {"kind": "style_lr", "features": list(STYLE_FEATURES), **fit_linear(xs, k, w, C=C, max_iter=2000),
            "n_samples": int(xs.shape[0]), "C": C, "cv_log_loss": cv}


def choose_style_c(x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> tuple[float, dict]:
    """(``C``, {C: mean held-out log loss}): the :data:`STYLE_C_GRID` value with the lowest grouped
    :data:`STYLE_CV_FOLDS`-fold log loss of the swap-symmetric ``style_lr`` on these (training) rows,
    folds seeded with 0; ``C = 1`` and no table when there are fewer prompt groups than folds."""
    from sklearn.model_selection import GroupKFold

    if len(set(groups.tolist())) < STYLE_CV_FOLDS:
        return 1.0, {}
    splits = list(GroupKFold(n_splits=STYLE_CV_FOLDS, shuffle=True, random_state=0).split(x, groups=groups))
    cv = {}
    for C in STYLE_C_GRID:
        losses = []
        for tr, va in splits:
            xs, k, w = _samples(x[tr], y[tr], swap_style_features)
            if len(set(k.tolist())) < 2:
                p = np.tile(y[tr].mean(axis=0), (len(va), 1))
            else:
                p = _symmetric_probs(fit_linear(xs, k, w, C=C, max_iter=2000), x[va], swap_style_features)
            losses.append(-np.mean(np.sum(y[va] * np.log(np.clip(p, 1e-15, 1)), axis=1)))
        cv[C] = float(np.mean(losses))
    best = min(cv, key=cv.get)  # the first (smallest) C on a tie
    return best, {str(c): round(v, 6) for c, v in cv.items()}


def predict(params: dict, rows: list[dict]) -> np.ndarray:
    """(N, 3) probabilities of the fitted baseline ``params`` on ``rows`` (no labels needed).
    ``length_lr`` and ``style_lr`` average a row and its swapped copy (flipped back): exactly
    swap-symmetric."""
    if params["kind"] in ("uniform", "prior"):
        return np.tile(np.asarray(params["probs"], dtype=np.float64), (len(rows), 1))
    if params["kind"] not in _FEATURES_OF:
        raise ReplicatorError(f"{BASELINE_PARAMS}: unknown baseline kind {params['kind']!r}")
    matrix, swap = _FEATURES_OF[params["kind"]]
    return _symmetric_probs(params, matrix(rows), swap)


def log_probs(params: dict):
    """rows -> (N, 3) log-probabilities of a fitted baseline (clipped at 1e-6): a model's offset
    (``model.offset``)."""
    def fn(rows: list[dict]) -> np.ndarray:
        return np.log(np.clip(predict(params, rows), 1e-6, 1.0))
    return fn


def every_run(train_rows: list[dict], valid_rows: list[dict],
              done: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """The baseline views every run adds (:data:`EVERY_RUN`): ``baseline_prior``, ``baseline_length`` and
    ``baseline_style`` on ``valid_rows``. ``done``: predictions per kind already fitted on the same
    ``train_rows`` and made on ``valid_rows`` (a baseline run's own), used as they are."""
    t0 = time.time()
    done = done or {}
    out = {view: done[kind] if kind in done else predict(fit(kind, train_rows), valid_rows)
           for kind, view in EVERY_RUN}
    log.info("baselines fitted on %d rows, predicted on %d in %.1f s", len(train_rows),
                                     len(valid_rows), time.time() - t0)
    return out


# ---------------------------------------------------------------- baseline runs


def save_params(params: dict, path: Path) -> None:

    atomic_write_text(path, json.dumps(params, indent=1) + "\n")


def load_params(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ReplicatorError(f"{path} is missing: run `replicate run` for this recipe first") from None
    except (OSError, ValueError) as e:
        raise ReplicatorError(f"{path}: not valid JSON ({e})") from None


def run_baseline(stage, train_rows: list[dict], valid_rows: list[dict], stage_artifacts: Path) -> StageResult:
    """Fit the stage's baseline (``model.base: baseline:<kind>``) and score it: (results, predictions
    per view, labels), shaped like a trained stage's. Writes ``baseline.json`` under
    ``stage_artifacts``."""

    if stage.outputs:
        raise ReplicatorError(f"stage {stage.name}: a baseline ({stage.model.base}) writes no outputs for "
                              f"later stages (outputs: {list(stage.outputs)})")
    kind = baseline_kind(stage.model.base, f"stage {stage.name}: model.base")
    params = fit(kind, train_rows)
    p = predict(params, valid_rows)
    labels = labels_of(valid_rows)
    preds = {"identity": p, "tta": p, "final": p, **every_run(train_rows, valid_rows, {kind: p})}
    stage_artifacts.mkdir(parents=True, exist_ok=True)
    save_params(params, stage_artifacts / BASELINE_PARAMS)
    write_valid_predictions(stage_artifacts / VALID_PREDICTIONS, valid_rows, preds, labels)
    result = {"baseline": kind, "n_train_rows": len(train_rows),
              "n_train_rows_augmented": 2 * len(train_rows),
              "optimizer_steps": params.get("n_iter", 0), "train_tokens": 0,
              "train_label_prior": label_prior(train_rows), **scores(preds, labels)}
    result["model"] = {"base": stage.model.base, "kind": params["kind"],
                       "n_features": len(params.get("features", ())) or None}
    return StageResult(result, preds, labels, valid_rows)
