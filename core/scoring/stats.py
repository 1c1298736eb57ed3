"""Statistics for comparing runs row by row: per-row log loss, a paired cluster bootstrap over prompt
groups (and seeds), top-label calibration error. numpy only, vectorised."""

from __future__ import annotations

import numpy as np

from replicator.core.scoring.metrics import EPS


def row_log_loss(probs, labels) -> np.ndarray:
    """Per-row ``-sum(label * log p)``, clipped and renormalised exactly as
    :func:`replicator.core.scoring.metrics.log_loss`, so that its mean is that log loss."""
    p = np.clip(np.asarray(probs, dtype=np.float64), EPS, 1 - EPS)
    p = p / p.sum(axis=1, keepdims=True)
    y = np.asarray(labels, dtype=np.float64)
    return -(y * np.log(p)).sum(axis=1)


def _draw_counts(rng: np.random.Generator, n_boot: int, n: int) -> np.ndarray:
    """(n_boot, n) how often each of n units is drawn in n draws with replacement."""
    idx = rng.integers(0, n, size=(n_boot, n))
    flat = (idx + np.arange(n_boot)[:, None] * n).ravel()
    return np.bincount(flat, minlength=n_boot * n).reshape(n_boot, n).astype(np.float64)


def paired_bootstrap(loss_base, loss_var, groups, n_boot: int = 2000, seed: int = 0, seeds=None,
                     confidence: float = 0.95) -> dict:
    """Bootstrap interval of ``delta = mean(loss_var - loss_base)`` over paired rows.

    Rows are resampled by prompt group (a cluster bootstrap: draw groups with replacement, take all
    their rows), because rows of one prompt share their difficulty and are not independent. When
    ``seeds`` tags each row with the training seed of its pair of runs, seeds are resampled too
    (draw seeds with replacement) so that seed-to-seed noise widens the interval.

    With seeds, one draw of groups is shared by all drawn seeds (a crossed two-way bootstrap): runs
    of different seeds on the same split see the same validation prompts, so drawing groups again
    inside each seed would average the prompt sampling noise away and give too narrow an interval.
    When the seeds' splits do not overlap, a group only contributes rows to its own seed, which
    amounts to drawing groups within seeds. A row's weight in a resample is
    (times its seed was drawn) x (times its group was drawn); the resampled delta is the weighted mean.
    Resampling both levels counts the row-level noise a second time in the seed level, so with
    several seeds the interval errs on the wide side (up to about 1.5x when the seeds agree).

    Returns ``delta`` (lower = the variant has lower loss), ``lo``/``hi`` (percentile interval at
    ``confidence``), ``se`` (bootstrap standard deviation), ``p_better`` (share of resamples with
    delta < 0), ``n_rows``, ``n_groups``, ``n_seeds``, ``n_boot``. Deterministic for ``seed``.
    """
    d, gi, si = _paired_deltas(loss_base, loss_var, groups, seeds)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    sums, counts = _cell_totals(d, gi, si)
    boots = _resampled_deltas(sums, counts, n_boot, np.random.default_rng(seed))
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(boots, [alpha, 1 - alpha])
    n_seeds, n_groups = sums.shape
    return {
        "delta": float(d.mean()),
        "lo": float(lo),
        "hi": float(hi),
        "se": float(boots.std(ddof=1)) if n_boot > 1 else 0.0,
        "p_better": float((boots < 0).mean()),
        "n_rows": int(d.size),
        "n_groups": n_groups,
        "n_seeds": n_seeds,
        "n_boot": int(n_boot),
    }


def _paired_deltas(loss_base, loss_var, groups, seeds) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Checked inputs as (per-row ``loss_var - loss_base``, group index, seed index) of each row."""
    a = np.asarray(loss_base, dtype=np.float64)
    b = np.asarray(loss_var, dtype=np.float64)
    g = np.asarray(groups)
    if not (a.shape == b.shape == g.shape) or a.ndim != 1:
        raise ValueError(f"loss_base, loss_var and groups must be 1-D of one length, got {a.shape}, "
                         f"{b.shape}, {g.shape}")
    if a.size == 0:
        raise ValueError("no paired rows to bootstrap")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("per-row losses must be finite")
    d = b - a
    _, gi = np.unique(g, return_inverse=True)
    if seeds is None:
        return d, gi, np.zeros(d.size, dtype=np.int64)
    s = np.asarray(seeds)
    if s.shape != d.shape:
        raise ValueError(f"seeds must have one tag per row, got shape {s.shape} for {d.size} rows")
    _, si = np.unique(s, return_inverse=True)
    return d, gi, si


def _cell_totals(d: np.ndarray, gi: np.ndarray, si: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n_seeds, n_groups) sums of ``d`` and row counts per (seed, group) cell."""
    shape = (int(si.max()) + 1, int(gi.max()) + 1)
    sums, counts = np.zeros(shape), np.zeros(shape)
    np.add.at(sums, (si, gi), d)
    np.add.at(counts, (si, gi), 1.0)
    return sums, counts


def _resampled_deltas(sums: np.ndarray, counts: np.ndarray, n_boot: int,
                      rng: np.random.Generator) -> np.ndarray:
    """``n_boot`` crossed resamples (groups drawn once, shared by the drawn seeds) of the weighted mean
    delta."""
    n_seeds, n_groups = sums.shape

    def resample(m: int) -> tuple[np.ndarray, np.ndarray]:
        wg = _draw_counts(rng, m, n_groups)
        ws = _draw_counts(rng, m, n_seeds) if n_seeds > 1 else np.ones((m, 1))
        return ((wg @ sums.T) * ws).sum(axis=1), ((wg @ counts.T) * ws).sum(axis=1)

    num, den = resample(n_boot)
    for _ in range(100):  # a resample can miss every row (seeds with disjoint splits): draw it again
        empty = np.flatnonzero(den == 0)
        if not empty.size:
            break
        num[empty], den[empty] = resample(empty.size)
    else:
        raise ValueError("bootstrap resamples keep drawing no rows: seeds and groups barely overlap")
    return num / den


def _top_label(probs, labels) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if p.ndim != 2 or p.shape != y.shape:
        raise ValueError(f"probs and labels must be (N, C) of one shape, got {p.shape} and {y.shape}")
    return p.max(axis=1), (p.argmax(axis=1) == y.argmax(axis=1)).astype(np.float64)


def reliability_bins(probs, labels, bins: int = 10) -> dict:
    """Top-label reliability: ``bins`` equal-width confidence bins over [0, 1]; per bin the row count, mean
    confidence and accuracy (NaN where empty). The means are scikit-learn's
    ``sklearn.calibration.calibration_curve`` (``strategy="uniform"``) of "the top class is right" against
    the top-class probability, so its bins are closed on the right as there ([0, 0.1], (0.1, 0.2], ...,
    (0.9, 1]); the counts, which it does not return, are taken by the same rule."""
    from sklearn.calibration import calibration_curve

    conf, correct = _top_label(probs, labels)
    edges = np.linspace(0, 1, bins + 1)
    count = np.bincount(np.searchsorted(edges[1:-1], conf), minlength=bins).astype(np.float64)
    mean_conf, acc = np.full(bins, np.nan), np.full(bins, np.nan)
    if conf.size:
        acc_nonempty, conf_nonempty = calibration_curve(correct, conf, n_bins=bins, strategy="uniform")
        if acc_nonempty.size != int((count > 0).sum()):  # pragma: no cover - a changed binning rule
            raise RuntimeError("sklearn's calibration_curve bins rows otherwise than reliability_bins counts")
        acc[count > 0], mean_conf[count > 0] = acc_nonempty, conf_nonempty
    return {"edges": edges, "count": count, "confidence": mean_conf, "accuracy": acc}


def expected_calibration_error(probs, labels, bins: int = 10) -> float:
    """Top-label ECE: sum over equal-width confidence bins of |accuracy - mean confidence| weighted
    by the bin's share of rows. The label's class is its argmax (soft labels allowed)."""
    r = reliability_bins(probs, labels, bins)
    n = r["count"].sum()
    if n == 0:
        raise ValueError("no rows")
    nz = r["count"] > 0
    return float((np.abs(r["accuracy"][nz] - r["confidence"][nz]) * r["count"][nz]).sum() / n)
