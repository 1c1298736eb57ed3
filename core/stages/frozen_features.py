"""Frozen-backbone feature stages: the language model reads each response once, a small head learns.

A stage whose ``model.features`` is set does not fine-tune the backbone. It encodes every
(prompt, response) pair of its rows **separately** with the frozen model (the prompt's last
``prompt_tokens`` tokens, then the response's first tokens, ``max_length`` in all), pools the
response tokens' hidden states of the chosen ``layers`` (mean over the response, or the last
token) and trains a multinomial logistic regression on

* ``h(A) - h(B)``: which response the model's representation prefers (antisymmetric under A/B),
* ``|h(A) - h(B)|``: how different they are (symmetric: evidence for or against a tie),
* with ``lengths: true``, the length features of :mod:`replicator.core.stages.baseline` (the stacking of
  "the model's view" with "the longer answer wins" that several teams ran as a second stage), without
  their raw A - B count differences unless ``raw_diffs: true``.

With ``clip: true`` (the default) every input is clipped to its range over the training rows before
the regression. Both defaults are about rows unlike the training rows: a linear head extrapolates a
heavy-tailed input (a raw difference of characters) without bound. On the real rows, a model trained on
the rows with the shorter responses and scored on those with the longer ones shows it
(``benchmarks/length_shift.py``). On 981 rows held back by others, the recipe without them scored 1.0453
against its cross-fitted 1.0307, behind a plain regression on log-scale length and style counts (1.0404).

The head is fitted on the training rows and their swapped copies and predicts the mean of a row and
its swapped copy (flipped back): exactly swap-symmetric, and the swap TTA costs nothing because the
two responses were encoded apart. Its L2 strength ``C`` is chosen by grouped cross-validation on the
**training** rows (never on the validation rows) unless the recipe fixes it. lbfgs on fixed data:
deterministic; the whole head trains in seconds, so many settings can be tried on one cache.

Cost: one forward pass per response (no backward), so about a third of a fine-tuning epoch per pass.
Features are cached per text under ``REPLICATOR_CACHE/features/<key>/`` where the key covers the
model folder's weights, the layers, pooling, budgets and this module's encoding version: a second
split seed or an ablation of the head recomputes nothing, and a changed model or encoding never
reuses old vectors.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import itertools
import json
import logging
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from replicator.core.errors import ReplicatorError
from replicator.core.model.cached_layers import weights_digest
from replicator.core.model.loading import device_type, load_tokenizer, resolve_base, torch_dtype
from replicator.core.predict.evaluate import label_prior, labels_of, scores, write_valid_predictions
from replicator.core.predict.postprocess import crossfit_postprocess
from replicator.core.stages import baseline as B
from replicator.core.stages.result import StageResult
from replicator.core.tokens.batches import collate
from replicator.core.util.atomic import atomic_write_bytes, atomic_write_text
from replicator.core.util.distributed import world_size
from replicator.core.util.layout import HEAD_FILE, VALID_PREDICTIONS, cache_root
from replicator.core.util.logs import quiet_transformers

log = logging.getLogger(__name__)

#: bump when the encoding or pooling changes: the cache key includes it
ENCODING_VERSION = 1
SWAP = B.SWAP


# ---------------------------------------------------------------- encoding


def encode_response(tokenizer, prompt: list, response: list, max_length: int,
                    prompt_tokens: int) -> tuple[list[int], int]:
    """(token ids, index of the first response token): BOS, the prompt's last ``prompt_tokens``
    tokens (turns as ``User: ...``), the response's first tokens (turns as ``Assistant: ...``)."""
    p_ids: list[int] = []
    r_ids: list[int] = []
    for p, r in itertools.zip_longest(prompt, response, fillvalue=""):
        p_ids += tokenizer("User: " + (p or "") + "\n\n", add_special_tokens=False)["input_ids"]
        r_ids += tokenizer("Assistant: " + (r or "") + "\n\n", add_special_tokens=False)["input_ids"]
    budget = max_length - 1
    # a short response lends the prompt room
    p_keep = min(len(p_ids), max(prompt_tokens, budget - len(r_ids)))
    p_ids = p_ids[len(p_ids) - p_keep:] if p_keep else []
    r_ids = r_ids[: budget - len(p_ids)]
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    ids = [bos] + p_ids + r_ids
    return ids, len(ids) - len(r_ids)


def text_key(prompt: list, response: list) -> str:
    return hashlib.sha1(json.dumps([prompt, response], ensure_ascii=False).encode()).hexdigest()


# ---------------------------------------------------------------- the frozen backbone


def cache_folder(model_path: str, features_config, *, dtype: str, device: str) -> Path:
    """``REPLICATOR_CACHE/features/<key>``: the key covers the weights, the dtype and device type they
    compute in (bf16 vectors differ from fp32 ones), the feature settings that change a vector (layers,
    pooling, budgets) and :data:`ENCODING_VERSION`."""

    folder = Path(model_path)
    ident = weights_digest(folder) if folder.is_dir() else model_path
    key = json.dumps({"model": ident, "dtype": dtype, "device": device,
                      "layers": list(features_config.layers), "pool": features_config.pool,
                      "max_length": features_config.max_length,
                      "prompt_tokens": features_config.prompt_tokens, "version": ENCODING_VERSION},
                     sort_keys=True)
    return cache_root() / "features" / hashlib.sha1(key.encode()).hexdigest()[:16]


def read_cache(folder: Path) -> dict[str, np.ndarray]:
    """Every cached vector under ``folder`` (a shard that cannot be read is skipped with a warning)."""
    out: dict[str, np.ndarray] = {}
    for shard in sorted(folder.glob("*.npz")) if folder.exists() else []:
        try:
            with np.load(shard) as z:
                out.update(zip(z["keys"].tolist(), z["vectors"], strict=True))
        except (OSError, ValueError, KeyError) as e:
            log.warning("feature cache %s unreadable (%s): its texts are encoded again", shard, e)
    return out


def write_shard(folder: Path, keys: list[str], vectors: np.ndarray) -> None:

    buf = io.BytesIO()
    np.savez(buf, keys=np.array(keys), vectors=vectors.astype(np.float32))
    name = hashlib.sha1("".join(keys).encode()).hexdigest()[:16]
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(folder / f"{name}.npz", buf.getvalue())


def load_backbone(model_cfg):
    """(frozen base model in eval mode, tokenizer, local path or hub id) of ``model.base``."""
    from transformers import AutoModel

    path = resolve_base(model_cfg.base)
    with quiet_transformers():
        model = AutoModel.from_pretrained(path, dtype=torch_dtype(model_cfg), revision=model_cfg.revision)
    model.to(device_type()).eval().requires_grad_(False)
    return model, load_tokenizer(path), path


def _pool(hidden, layers, pool: str, n: int, start: int, length: int) -> np.ndarray:
    """The vector of row ``n`` of a batch: per layer, the mean of the response tokens
    (``start:length``) and/or the last token's state, concatenated."""
    parts = []
    for li in layers:
        h = hidden[li][n].float()
        if pool in ("mean", "mean+last"):
            parts.append(h[start:length].mean(0) if length > start else h[length - 1])
        if pool in ("last", "mean+last"):
            parts.append(h[length - 1])
    return np.concatenate([p.cpu().numpy() for p in parts])


def token_batches(lengths: list[int], batch_tokens: int) -> list[list[int]]:
    """Indices sorted by length, cut into batches of at most ``batch_tokens`` padded tokens (one
    item at least)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches, cur, longest = [], [], 0
    for i in order:
        if cur and max(longest, lengths[i]) * (len(cur) + 1) > batch_tokens:
            batches.append(cur)
            cur, longest = [], 0
        cur.append(i)
        longest = max(longest, lengths[i])
    return batches + ([cur] if cur else [])


def encode_texts(model, tokenizer, items: list[tuple[list[int], int]], features_config,
                 progress: bool) -> np.ndarray:
    """Pooled vectors of the encoded ``items`` ((ids, response start) pairs), in their order."""
    import torch

    device = next(model.parameters()).device
    out: list[np.ndarray | None] = [None] * len(items)
    batches = token_batches([len(ids) for ids, _ in items], features_config.batch_tokens)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    last_only = list(features_config.layers) == [-1]
    with torch.inference_mode(), tqdm(total=len(items), desc="features", disable=not progress,
                                      mininterval=5) as bar:
        for batch in batches:
            ids, mask = collate([items[i][0] for i in batch], pad, device)
            if last_only:  # the final state alone: no other layer's states are kept
                hidden = {-1: model(input_ids=ids, attention_mask=mask).last_hidden_state}
            else:
                hidden = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
            for n, i in enumerate(batch):
                out[i] = _pool(hidden, features_config.layers, features_config.pool, n, items[i][1],
                               len(items[i][0]))
            bar.update(len(batch))
    return np.stack(out) if out else np.zeros((0, 0), dtype=np.float32)


def row_features(model, tokenizer, path: str, rows: list[dict], features_config,
                 progress: bool) -> np.ndarray:
    """(N, 2, D) pooled vectors of each row's response A and B, from the cache where they are and
    computed (then cached) where not; None for no rows."""
    if not rows:
        return None
    weight = next(model.parameters())  # the vectors are those of the dtype and device the model computes in
    folder = cache_folder(path, features_config, dtype=str(weight.dtype).removeprefix("torch."),
                          device=weight.device.type)
    cache = read_cache(folder)
    texts = [(r["prompt"], r[side]) for r in rows for side in ("response_a", "response_b")]
    keys = [text_key(p, t) for p, t in texts]
    todo = sorted({k: i for i, k in enumerate(keys) if k not in cache}.values())
    log.info("features: %d texts (%d distinct), %d to encode, cache %s", len(keys), len(set(keys)), len(todo),
             folder)
    t0 = time.time()
    # a shard at a time: an interrupted run keeps what it did
    for start in range(0, len(todo), features_config.shard_size):
        part = todo[start:start + features_config.shard_size]
        items = [encode_response(tokenizer, *texts[i], features_config.max_length,
                                 features_config.prompt_tokens) for i in part]
        vectors = encode_texts(model, tokenizer, items, features_config, progress)
        write_shard(folder, [keys[i] for i in part], vectors)
        cache.update(zip([keys[i] for i in part], vectors, strict=True))
    if todo:
        log.info("features: encoded %d texts in %.0f s", len(todo), time.time() - t0)
    return np.stack([cache[k] for k in keys]).reshape(len(rows), 2, -1)


# ---------------------------------------------------------------- the head's inputs

# the refusal pattern, the style counts and their names are shared with the ``style_lr`` baseline
REFUSAL, STYLE, style_counts, _joined = B.REFUSAL, B.STYLE, B.style_counts, B.joined
PAIR = ("word_jaccard", "identical", "both_refuse")


def pair_features(row: dict) -> np.ndarray:
    """The :data:`PAIR` features (symmetric in A and B): the Jaccard overlap of the two responses'
    lower-cased words, whether they are identical, whether both refuse."""
    a, b = _joined(row["response_a"]), _joined(row["response_b"])
    wa, wb = set(a.lower().split()), set(b.lower().split())
    both = bool(REFUSAL.search(a)) and bool(REFUSAL.search(b))
    return np.array([len(wa & wb) / max(1, len(wa | wb)), float(a.strip() == b.strip()), float(both)])


#: the columns of :data:`replicator.core.stages.baseline.FEATURES` that are raw A - B count differences
RAW_DIFFS = [i for i, name in enumerate(B.FEATURES) if name.startswith("diff_")]


def length_inputs(rows: list[dict], raw_diffs: bool) -> tuple[np.ndarray, np.ndarray]:
    """(the rows', the swapped rows') length features of :mod:`replicator.core.stages.baseline`, without
    the raw A - B count differences (:data:`RAW_DIFFS`) unless ``raw_diffs``: those grow with the texts'
    lengths, unbounded, where the log counts and log-ratios grow slowly."""
    x = B.feature_matrix(rows)
    xs = B.swap_features(x)
    if raw_diffs:
        return x, xs
    return np.delete(x, RAW_DIFFS, axis=1), np.delete(xs, RAW_DIFFS, axis=1)


def row_inputs(rows: list[dict], features_config) -> dict:
    """What the head reads besides the model's vectors: the length features of
    :mod:`replicator.core.stages.baseline` (``lengths``; with ``raw_diffs`` their raw count differences,
    ``lens_swapped`` the swapped rows'), and with ``text`` the style counts of each response and the pair
    features; None where switched off."""
    text = features_config.text
    lens, lens_swapped = (length_inputs(rows, features_config.raw_diffs) if features_config.lengths
                          else (None, None))
    return {"lens": lens, "lens_swapped": lens_swapped,
            "style": np.array([[style_counts(r["response_a"]), style_counts(r["response_b"])] for r in rows])
            .reshape(len(rows), 2, len(STYLE)) if text else None,
            "pair": np.array([pair_features(r) for r in rows]).reshape(len(rows), len(PAIR))
            if text else None}


def _take(inputs: dict, ix) -> dict:
    return {k: None if v is None else v[ix] for k, v in inputs.items()}


def design(z: np.ndarray | None, inputs: dict, swapped: bool = False) -> np.ndarray:
    """The head's inputs, or those of the swapped rows: ``[z(A) - z(B), |z(A) - z(B)|]`` of the
    projected vectors ``z`` (N, 2, k) when the model is used, then the length features, then the
    style counts' A - B differences and A + B sums, then the pair features. Swapping A and B negates
    the differences, exchanges the length blocks and leaves the rest."""
    sign = -1.0 if swapped else 1.0
    parts = []
    if z is not None:
        d = z[:, 0] - z[:, 1]
        parts += [sign * d, np.abs(d)]
    if inputs["lens"] is not None:
        parts.append(inputs["lens_swapped"] if swapped else inputs["lens"])
    if inputs["style"] is not None:
        s = inputs["style"]
        parts += [sign * (s[:, 0] - s[:, 1]), s[:, 0] + s[:, 1], inputs["pair"]]
    if not parts:
        raise ReplicatorError("model.features: the head has no inputs (lm, lengths and text are all off)")
    return np.concatenate(parts, axis=1)


# ---------------------------------------------------------------- the head


def fit_projection(f: np.ndarray | None, k: int, seed: int) -> dict | None:
    """PCA of the training responses' vectors (both sides) to ``k`` components (``k = 0``: none)."""
    if f is None:
        return None
    if not k:
        return {"mean": np.zeros(f.shape[-1]).tolist(), "components": np.eye(f.shape[-1]).tolist()}
    from sklearn.decomposition import PCA

    flat = f.reshape(-1, f.shape[-1])
    k = min(k, *flat.shape)
    pca = PCA(k, random_state=seed).fit(flat)
    return {"mean": pca.mean_.tolist(), "components": pca.components_.tolist()}


def project(proj: dict | None, f: np.ndarray | None) -> np.ndarray | None:
    if proj is None or f is None:
        return None
    return (f - np.asarray(proj["mean"])) @ np.asarray(proj["components"]).T


def _samples(z, inputs, y):
    """(X, class, weight): the rows and their swapped copies, one sample per class with mass > 0."""
    x = np.concatenate([design(z, inputs), design(z, inputs, swapped=True)])
    y2 = np.concatenate([y, y[:, SWAP]])
    i, k = np.nonzero(y2 > 0)
    return x[i], k, y2[i, k]


def fit_head(f, inputs: dict, y, C: float, k: int, seed: int = 0, clip: bool = False) -> dict:
    """The fitted head as plain JSON-able numbers: the projection and the standardised logistic
    regression of :func:`replicator.core.stages.baseline.fit_linear` (a class absent from the training
    labels gets an intercept of -inf, None in JSON); with ``clip``, each input's range over the training
    samples (both orders: the range is swap-symmetric), which :func:`head_probs` clips new inputs to."""
    proj = fit_projection(f, k, seed)
    x, cls, w = _samples(project(proj, f), inputs, y)
    bounds = {"clip": [x.min(axis=0).tolist(), x.max(axis=0).tolist()]} if clip else {}
    return {"projection": proj, **B.fit_linear(x, cls, w, C=C, max_iter=2000), "C": C,
            "n_samples": int(len(cls)), **bounds}


def _clipped(params: dict, x: np.ndarray) -> np.ndarray:
    """``x`` clipped to the training range saved in ``params`` (unchanged for a head saved without one)."""
    if "clip" not in params:
        return x
    lo, hi = params["clip"]
    return np.clip(x, lo, hi)


def head_probs(params: dict, f: np.ndarray | None, inputs: dict) -> np.ndarray:
    """(N, 3) probabilities of the fitted head: the mean of a row's and its swapped copy's
    (flipped back), so exactly swap-symmetric."""
    z = project(params["projection"], f)
    return (B.linear_probs(params, _clipped(params, design(z, inputs)))
            + B.linear_probs(params, _clipped(params, design(z, inputs, swapped=True)))[:, SWAP]) / 2


def choose_c(f, inputs: dict, y, groups, features_config, seed: int) -> tuple[float, dict]:
    """The ``C`` of ``features_config.c_grid`` with the lowest grouped ``features_config.cv_folds``-fold log
    loss on the training rows (the projection refitted in each fold)."""
    from sklearn.model_selection import GroupKFold

    cv = {}
    splits = list(GroupKFold(n_splits=features_config.cv_folds, shuffle=True,
                             random_state=seed).split(y, groups=groups))
    for C in features_config.c_grid:
        losses = []
        for tr, va in splits:
            params = fit_head(None if f is None else f[tr], _take(inputs, tr), y[tr], C, features_config.pca,
                              seed, features_config.clip)
            p = head_probs(params, None if f is None else f[va], _take(inputs, va))
            losses.append(-np.mean(np.sum(y[va] * np.log(np.clip(p, 1e-15, 1)), axis=1)))
        cv[C] = float(np.mean(losses))
    best = min(cv, key=cv.get)
    return best, {str(c): round(v, 5) for c, v in cv.items()}


# ---------------------------------------------------------------- a stage, and predict


def run_features_stage(stage, plugins, train_rows: list[dict], valid_rows: list[dict], stage_artifacts: Path,
                       seed: int, progress: bool) -> StageResult:
    """Encode, fit the head (``C`` by grouped CV on the training rows unless fixed), score: a
    :class:`StageResult` (predictions per view with the baselines'), shaped like a trained stage's. Writes
    :data:`HEAD_FILE` under ``stage_artifacts``. With ``features.crossfit: K`` the scored rows are every
    row of the validation rows' sources (training and validation alike), each predicted by a head fitted
    without its fold (grouped K-fold, seeded), the baselines likewise; the saved head is fitted on all."""

    features_config = stage.model.features
    if world_size() > 1:
        raise ReplicatorError(f"stage {stage.name}: a frozen-feature stage runs in one process (it trains "
                              f"no network; the encoding is cached), not {world_size()}: start it without "
                              "torchrun")
    if stage.outputs:
        raise ReplicatorError(f"stage {stage.name}: a frozen-feature stage writes no outputs for later "
                              f"stages (outputs: {list(stage.outputs)})")
    t0 = time.time()
    if features_config.crossfit:
        scored, extra = scored_pool(train_rows, valid_rows)
        f_sc, f_ex = model_vectors(stage, [scored, extra], progress)
        t1 = time.time()
        p, refs, folds = crossfit_predictions(features_config, scored, f_sc, extra, f_ex, seed)
        train_all, f_all = scored + extra, _stack(f_sc, f_ex)
    else:
        scored, refs, folds = valid_rows, B.every_run(train_rows, valid_rows), None
        f_all, f_sc = model_vectors(stage, [train_rows, valid_rows], progress)
        t1, train_all = time.time(), train_rows
    params, cv = _fit_final(features_config, train_all, f_all, seed)
    stage_artifacts.mkdir(parents=True, exist_ok=True)
    saved = {**params, "base": stage.model.base, "raw_diffs": features_config.raw_diffs}
    atomic_write_text(stage_artifacts / HEAD_FILE, json.dumps(saved) + "\n")
    labels = labels_of(scored)
    if folds is None:
        p = head_probs(params, f_sc, row_inputs(scored, features_config))
    preds = {"identity": p, "tta": p, "final": crossfit_postprocess(plugins, p, scored, labels), **refs}
    write_valid_predictions(stage_artifacts / VALID_PREDICTIONS, scored, preds, labels)
    result = {"n_train_rows": len(train_all), "n_train_rows_augmented": 2 * len(train_all),
              "optimizer_steps": params["n_iter"], "train_tokens": 0,
              "train_label_prior": label_prior(train_all),
              "feature_seconds": round(t1 - t0, 1), "head_seconds": round(time.time() - t1, 1),
              "head_C": params["C"], "head_cv_log_loss": cv, "crossfit_folds": folds, **scores(preds, labels)}
    result["model"] = {"base": stage.model.base, "kind": "frozen_features", "lm": features_config.lm,
                       "n_inputs": len(params["mean"])}
    if features_config.lm:  # the dtype the LM encoded in
        result["model"]["dtype"] = str(torch_dtype(stage.model)).removeprefix("torch.")
    return StageResult(result, preds, labels, scored)


def _stack(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    """The vectors of two row lists one after the other (None: no model, or no rows in ``b``)."""
    if a is None or b is None or len(b) == 0:
        return a
    return np.concatenate([a, b])


def _fit_final(features_config, rows: list[dict], f, seed: int) -> tuple[dict, dict]:
    """The head fitted on ``rows`` (``C`` fixed, or chosen by grouped CV on them) and the CV table."""

    y, groups, inputs = (labels_of(rows), np.array([r["group"] for r in rows]),
                         row_inputs(rows, features_config))
    C, cv = features_config.C, {}
    if C is None:
        C, cv = choose_c(f, inputs, y, groups, features_config, seed)
        log.info("features: C=%g chosen by %d-fold grouped CV on %d training rows (%s)", C,
                 features_config.cv_folds, len(rows), cv)
    return fit_head(f, inputs, y, C, features_config.pca, seed, features_config.clip), cv


def scored_pool(train_rows: list[dict], valid_rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """(rows to score by cross-fitting: the validation rows and the training rows of the same
    sources; extra training rows of other sources, minus those sharing a prompt group with a scored row)."""
    sources = {r["source"] for r in valid_rows}
    scored = [r for r in train_rows if r["source"] in sources] + list(valid_rows)
    groups = {r["group"] for r in scored}
    extra = [r for r in train_rows if r["source"] not in sources and r["group"] not in groups]
    dropped = sum(1 for r in train_rows if r["source"] not in sources) - len(extra)
    if dropped:
        log.info("features: %d extra training row(s) share a prompt group with a scored row: left out",
                 dropped)
    if not scored:
        raise ReplicatorError("model.features.crossfit: no rows to score (no validation rows)")
    return scored, extra


def crossfit_predictions(features_config, scored, f_sc, extra, f_ex, seed: int, baselines: bool = True):
    """Out-of-fold predictions of the head and of the baselines on ``scored``: grouped
    ``features_config.crossfit``-fold partition seeded with ``seed``; each fold's head (its ``C`` chosen by CV
    inside the fold's training rows) and baselines are fitted on the other folds plus ``extra``
    (``baselines=False``: the head's only, the baselines' views left at zero)."""
    from sklearn.model_selection import GroupKFold

    groups = np.array([r["group"] for r in scored])
    k = min(features_config.crossfit, len(set(groups)))
    if k < 2:
        raise ReplicatorError(f"model.features.crossfit: {len(set(groups))} prompt group(s) cannot make "
                              "2 folds")
    p = np.zeros((len(scored), 3))
    refs = {view: np.zeros((len(scored), 3)) for _, view in B.EVERY_RUN}
    for n, (tr, va) in enumerate(
            GroupKFold(n_splits=k, shuffle=True, random_state=seed).split(groups, groups=groups)):
        rows = [scored[i] for i in tr] + extra
        params, _ = _fit_final(features_config, rows, _stack(None if f_sc is None else f_sc[tr], f_ex), seed)
        held = [scored[i] for i in va]
        p[va] = head_probs(params, None if f_sc is None else f_sc[va], row_inputs(held, features_config))
        for view, q in B.every_run(rows, held).items() if baselines else ():
            refs[view][va] = q
        log.info("features: fold %d/%d fitted on %d rows (C=%g), predicted %d", n + 1, k, len(rows),
                 params["C"], len(va))
    return p, refs, k


def model_vectors(stage, row_sets: list[list[dict]], progress: bool) -> list[np.ndarray | None]:
    """The model's (N, 2, D) vectors of each list of rows; Nones without loading anything when
    ``features.lm`` is off."""
    if not stage.model.features.lm:
        return [None for _ in row_sets]
    model, tokenizer, path = load_backbone(stage.model)
    return [row_features(model, tokenizer, path, rows, stage.model.features, progress) for rows in row_sets]


def predict_rows(stage, stage_artifacts: Path, rows: list[dict], progress: bool) -> np.ndarray:
    """(N, 3) probabilities of a finished frozen-feature stage on ``rows`` (before postprocessing)."""
    head = stage_artifacts / HEAD_FILE
    try:
        params = json.loads(head.read_text())
    except FileNotFoundError:
        raise ReplicatorError(f"{head} is missing: run `replicate run` for this recipe first") from None
    except (OSError, ValueError) as e:
        raise ReplicatorError(f"{head}: not valid JSON ({e})") from None
    [f] = model_vectors(stage, [rows], progress)
    # the head reads the inputs it was fitted on: a head saved before `raw_diffs` existed had them
    features_config = dataclasses.replace(stage.model.features, raw_diffs=params.get("raw_diffs", True))
    return head_probs(params, f, row_inputs(rows, features_config))
