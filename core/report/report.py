"""Compare runs: ``replicate report``.

Runs are grouped into *variants*: runs whose resolved config is the same except for the seed are
seeds of one variant (or the ``variant`` key of ``fingerprint.json`` names it). One variant is the
base (the base run's). For each variant the report gives the log loss (mean over seeds, ± their
standard deviation), the change against the base with a 95% paired bootstrap interval over prompt
groups and seeds (rows paired by (seed, id): only rows both runs predicted), accuracy, top-label
calibration error, wall time and tokens; and two reference rows on the same validation rows:
uniform (ln 3) and the class prior. It says in words which differences the intervals resolve.

Runs whose data hash, validation rows or environment (device, torch, transformers, peft) differ
from the base are flagged; ``strict`` refuses them.

Writes ``report.md``, one self-contained ``report.html`` (CSS inline, figures as SVG data URIs) and
``report.json`` (the numbers). The same inputs give byte-identical files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import html
import json
import math
import os
from pathlib import Path

import numpy as np

from replicator.core.errors import ReplicatorError
from replicator.core.scoring.row_predictions import RowPreds, read_row_predictions
from replicator.core.scoring.stats import (
    expected_calibration_error,
    paired_bootstrap,
    reliability_bins,
    row_log_loss,
)
from replicator.core.util.layout import ROW_PREDICTIONS as PREDICTIONS

VIEW_PREFERENCE = ("final", "tta", "identity")
ENV_KEYS = ("device", "torch", "transformers", "peft")
N_BOOT = 2000
BOOT_SEED = 0
LN3 = math.log(3.0)


# ---------------------------------------------------------------------------------------------
# loading


@dataclasses.dataclass
class Run:
    path: Path
    run_id: str
    recipe: str
    seed: int
    fingerprint: dict
    metrics: dict
    preds: RowPreds | None
    variant_key: str
    variant_name: str

    @property
    def view(self) -> str | None:
        if self.preds is None:
            return None
        return next((v for v in VIEW_PREFERENCE if v in self.preds.views), next(iter(self.preds.views)))

    def probs(self) -> np.ndarray:
        return self.preds.views[self.view]

    def row_losses(self) -> np.ndarray:
        return row_log_loss(self.probs(), self.preds.labels)

    def stages(self) -> dict:
        return self.metrics.get("stages") or {}

    def _stage_total(self, key: str) -> float | None:
        """The sum of ``key`` over the stages when every stage has it, else the run-level value."""
        vals = [s.get(key) for s in self.stages().values()]
        if vals and all(isinstance(v, int | float) for v in vals):
            return float(sum(vals))
        v = self.metrics.get(key)
        return float(v) if isinstance(v, int | float) else None

    def seconds(self) -> float | None:
        return self._stage_total("seconds")

    def train_tokens(self) -> float | None:
        return self._stage_total("train_tokens")

    def label_prior(self) -> list[float] | None:
        p = self.metrics.get("train_label_prior")
        if p is None:
            final = self.stages().get(self.metrics.get("final_stage", ""), {})
            p = final.get("train_label_prior")
        return [float(x) for x in p] if p is not None else None

    def loss_history(self) -> tuple[list[float], list[int]]:
        """Training losses of all stages in order, and the steps where each later stage starts."""
        losses: list[float] = []
        starts: list[int] = []
        for s in self.stages().values():
            h = s.get("train_loss_history") or []
            if h and losses:
                starts.append(len(losses) + 1)
            losses += [float(x) for x in h]
        return losses, starts


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReplicatorError(f"{path}: missing (is {path.parent} a finished run?)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ReplicatorError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ReplicatorError(f"{path}: expected a JSON object")
    return data


def _variant_of(path: Path, fp: dict) -> tuple[str, str]:
    """(key, display name): runs with the same key are seeds of one variant."""
    if fp.get("variant"):
        return f"variant:{fp['recipe']}:{fp['variant']}", str(fp["variant"])
    import yaml

    resolved = path / "resolved.yaml"
    try:
        cfg = yaml.safe_load(resolved.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReplicatorError(f"{resolved}: missing: it tells which runs differ only by seed "
                              "(or give fingerprint.json a 'variant' key)") from None
    except yaml.YAMLError as e:
        raise ReplicatorError(f"{resolved}: not valid YAML ({e})") from None
    if not isinstance(cfg, dict):
        raise ReplicatorError(f"{resolved}: expected a mapping")
    cfg = {k: v for k, v in cfg.items() if k != "seed"}
    key = hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:12]
    toggles = fp.get("toggles") or []
    name = fp.get("recipe", "?") + "".join(f" +{t}" for t in toggles)
    return f"config:{key}", name


def load_run(path: Path) -> Run:
    path = Path(path)
    fp = _read_json(path / "fingerprint.json")
    for k in ("run_id", "recipe", "seed"):
        if k not in fp:
            raise ReplicatorError(f"{path / 'fingerprint.json'}: no {k!r}")
    metrics = _read_json(path / "metrics.json")
    pf = path / PREDICTIONS
    preds = read_row_predictions(pf) if pf.exists() else None
    key, name = _variant_of(path, fp)
    return Run(path=path, run_id=str(fp["run_id"]), recipe=str(fp["recipe"]), seed=fp["seed"], fingerprint=fp,
               metrics=metrics, preds=preds, variant_key=key, variant_name=name)


def discover_runs(paths: list[Path]) -> list[Path]:
    """Run folders (holding ``fingerprint.json``) among ``paths`` and below them, in a stable order."""
    out: list[Path] = []
    for p in map(Path, paths):
        if (p / "fingerprint.json").is_file():
            found = [p]
        elif p.is_dir():
            found = sorted(f.parent for f in p.rglob("fingerprint.json"))
            if not found:
                raise ReplicatorError(f"{p}: no run folders in it (no fingerprint.json found)")
        else:
            raise ReplicatorError(f"{p}: no such folder")
        out += [f for f in found if f.resolve() not in {o.resolve() for o in out}]
    return out


def default_out_dir(run_dirs: list[Path], base: Path | None = None) -> Path:
    """``report-<hash8 of the sorted run ids>`` beside the base run (``reports/<recipe>/`` for usual runs)."""
    base = Path(base) if base is not None else Path(run_dirs[0])
    ids = sorted(_read_json(Path(d) / "fingerprint.json").get("run_id", Path(d).name) for d in run_dirs)
    return base.parent / f"report-{hashlib.sha256(chr(10).join(ids).encode()).hexdigest()[:8]}"


# ---------------------------------------------------------------------------------------------
# numbers


@dataclasses.dataclass
class Variant:
    key: str
    name: str
    runs: list[Run]  # by seed

    @property
    def seeds(self) -> list:
        return [r.seed for r in self.runs]


def _group_variants(runs: list[Run], base_run: Run) -> list[Variant]:
    variants: dict[str, Variant] = {}
    for r in [base_run] + [r for r in runs if r is not base_run]:
        key = r.variant_key
        if key in variants and r.seed in variants[key].seeds:  # same config and seed: a separate variant
            key = f"{key}@{r.run_id}"
            name = f"{r.variant_name} [{r.run_id}]"
        else:
            name = r.variant_name
        variants.setdefault(key, Variant(key, name, [])).runs.append(r)
    out = list(variants.values())
    names = [v.name for v in out]
    for v in out:
        v.runs.sort(key=lambda r: (str(type(r.seed)), r.seed))
        if names.count(v.name) > 1:  # same recipe and toggles, other overrides
            v.name = f"{v.name} #{v.key.split(':')[-1][:6]}"
    return out


def _mean_sd(values: list[float]) -> tuple[float | None, float | None]:
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None
    return float(np.mean(vals)), (float(np.std(vals, ddof=1)) if len(vals) > 1 else None)


def _confusion(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    m = np.zeros((3, 3), dtype=np.int64)
    np.add.at(m, (labels.argmax(1), probs.argmax(1)), 1)
    return m


def crossfit_prior(labels: np.ndarray, groups: list[str]) -> np.ndarray | None:
    """Per-row class-prior predictions: prompt groups (sorted by hash) split alternately in two halves,
    each half predicted by the label shares of the other. None with fewer than two groups."""
    ug = sorted(set(groups))
    if len(ug) < 2:
        return None
    half = {g: i % 2 for i, g in enumerate(ug)}
    h = np.array([half[g] for g in groups])
    out = np.empty_like(labels, dtype=np.float64)
    for k in (0, 1):
        out[h == k] = labels[h != k].mean(axis=0)
    return out


def _pairs(base: Variant, var: Variant) -> dict | None:
    """Rows paired by (seed, id) between ``base`` and ``var``: losses, groups, seed tags, chars."""
    parts = []
    for rv in var.runs:
        rb = next((r for r in base.runs if r.seed == rv.seed), None)
        if rb is None or rb.preds is None or rv.preds is None:
            continue
        pos = {i: k for k, i in enumerate(rv.preds.ids)}
        ib = [k for k, i in enumerate(rb.preds.ids) if i in pos]
        iv = [pos[rb.preds.ids[k]] for k in ib]
        if not ib:
            continue
        parts.append({
            "base": rb.row_losses()[ib], "var": rv.row_losses()[iv],
            "groups": np.array([rb.preds.groups[k] for k in ib]),
            "seeds": np.full(len(ib), str(rv.seed)), "chars": rb.preds.chars[ib],
            "label_mismatch": int((np.abs(rb.preds.labels[ib] - rv.preds.labels[iv]) > 1e-6).any(axis=1).sum()),
        })
    if not parts:
        return None
    return {k: (np.concatenate([p[k] for p in parts]) if k != "label_mismatch" else sum(p[k] for p in parts))
            for k in parts[0]}


def _boot(pairs: dict, mask=None) -> dict:
    sel = slice(None) if mask is None else mask
    return paired_bootstrap(pairs["base"][sel], pairs["var"][sel], pairs["groups"][sel], n_boot=N_BOOT,
                            seed=BOOT_SEED, seeds=pairs["seeds"][sel])


def _verdict(d: dict) -> str:
    if d["hi"] < 0:
        return "better"
    if d["lo"] > 0:
        return "worse"
    return "unresolved"


def _flags(runs: list[Run], base: Variant) -> tuple[list[dict], list[str]]:
    """Comparability problems against the base (same seed where the split is concerned)."""
    flags, notes = [], []
    b0 = base.runs[0]
    benv = b0.fingerprint.get("environment") or {}
    for r in runs:
        what = []
        if r.fingerprint.get("data_hash") != b0.fingerprint.get("data_hash"):
            what.append(f"data_hash {str(r.fingerprint.get('data_hash'))[:12]} vs "
                        f"{str(b0.fingerprint.get('data_hash'))[:12]} in {b0.run_id}")
        env = r.fingerprint.get("environment") or {}
        for k in ENV_KEYS:
            if env.get(k) != benv.get(k):
                what.append(f"environment {k} {env.get(k)} vs {benv.get(k)} in {b0.run_id}")
        rb = next((x for x in base.runs if x.seed == r.seed), None)
        if rb is not None and rb is not r and rb.preds is not None and r.preds is not None:
            a, b = set(r.preds.ids), set(rb.preds.ids)
            if a != b:
                what.append(f"validation rows (split) differ from {rb.run_id}: {len(a - b)} only here, "
                            f"{len(b - a)} only there, {len(a & b)} shared")
        if what:
            flags.append({"run": r.run_id, "differs": what})
        if r.preds is None:
            notes.append(f"{r.run_id}: no {PREDICTIONS} (an older run): its log loss and accuracy come from "
                         "metrics.json; no interval, calibration or plots for it")
    return flags, notes


def _load_runs(run_dirs: list[Path], base: Path | None) -> tuple[list[Run], Run]:
    """The runs of ``run_dirs`` and the base run (``base``, loaded too when not among them; default: the first)."""
    if not run_dirs:
        raise ReplicatorError("no runs to compare")
    runs = [load_run(d) for d in run_dirs]
    if base is None:
        return runs, runs[0]
    bres = Path(base).resolve()
    base_run = next((r for r in runs if r.path.resolve() == bres), None)
    if base_run is None:
        base_run = load_run(Path(base))
        runs.insert(0, base_run)
    return runs, base_run


def _run_numbers(r: Run) -> dict:
    """log loss, accuracy, ECE and rows of one run: from its per-row predictions, else metrics.json."""
    if r.preds is not None:
        p, y = r.probs(), r.preds.labels
        return {"log_loss": float(r.row_losses().mean()), "accuracy": float((p.argmax(1) == y.argmax(1)).mean()),
                "ece": expected_calibration_error(p, y), "n_rows": len(r.preds)}
    m = r.metrics
    return {"log_loss": m.get("final_log_loss", m.get("log_loss")), "accuracy": m.get("final_accuracy", m.get("accuracy")),
            "ece": None, "n_rows": m.get("n_valid_rows")}


def _variant_row(v: Variant, bvar: Variant, flags: list[dict]) -> dict:
    """The table line of variant ``v``: its numbers (mean over seeds) and its Δ against the base."""
    per_run = [_run_numbers(r) for r in v.runs]
    ll, ll_sd = _mean_sd([x["log_loss"] for x in per_run])
    row = {
        "name": v.name, "key": v.key, "runs": [r.run_id for r in v.runs], "seeds": v.seeds,
        "views": sorted({r.view for r in v.runs if r.view}),
        "log_loss": ll, "log_loss_sd": ll_sd,
        "accuracy": _mean_sd([x["accuracy"] for x in per_run])[0],
        "ece": _mean_sd([x["ece"] for x in per_run])[0],
        "seconds": _mean_sd([r.seconds() for r in v.runs])[0],
        "train_tokens": _mean_sd([r.train_tokens() for r in v.runs])[0],
        "n_rows": _mean_sd([x["n_rows"] for x in per_run])[0],
        "is_base": v is bvar, "delta": None, "verdict": None, "why_no_delta": None,
    }
    if v is bvar:
        return row
    pairs = _pairs(bvar, v)
    if pairs is None:
        row["why_no_delta"] = "no paired rows: no seed in common with the base, or no per-row predictions"
        return row
    row["delta"] = _boot(pairs)
    row["verdict"] = _verdict(row["delta"])
    if pairs["label_mismatch"]:
        flags.append({"run": ", ".join(row["runs"]), "differs": [
            f"labels differ from the base on {pairs['label_mismatch']} paired row(s)"]})
    return row


def compute(run_dirs: list[Path], base: Path | None = None) -> tuple[list[Variant], dict]:
    """Load the runs and compute every number of the report (``report.json``'s content)."""
    runs, base_run = _load_runs(run_dirs, base)
    variants = _group_variants(runs, base_run)
    bvar = variants[0]
    flags, notes = _flags(runs, bvar)
    rows = [_variant_row(v, bvar, flags) for v in variants]
    references = _references(bvar, notes)
    return variants, {
        "base": bvar.name, "base_runs": [r.run_id for r in bvar.runs],
        "bootstrap": {"n_boot": N_BOOT, "seed": BOOT_SEED, "confidence": 0.95,
                      "resamples": "prompt groups (and seeds when a variant has several)"},
        "variants": rows, "references": references, "per_seed": _per_seed(bvar, notes),
        "length_buckets": _length_buckets(variants),
        "flags": flags, "notes": notes, "stages": _stages(bvar), "substitutions": _substitutions(bvar),
    }


def _stages(bvar: Variant) -> list[dict]:
    """Each stage of the base's first run: its rows, its validation log loss without TTA, with TTA and
    postprocessed, the length baseline on the same rows, optimizer steps and wall time (metrics.json)."""
    run = bvar.runs[0]
    out = []
    for name, st in run.stages().items():
        out.append({"stage": name, "run": run.run_id, "n_train_rows": st.get("n_train_rows"),
                    "n_valid_rows": st.get("n_valid_rows"), "log_loss": st.get("log_loss"),
                    "tta_log_loss": st.get("tta_log_loss"), "final_log_loss": st.get("final_log_loss"),
                    "length_log_loss": st.get("baseline_length_log_loss"),
                    "optimizer_steps": st.get("optimizer_steps"), "seconds": st.get("seconds")})
    return out


def _substitutions(bvar: Variant) -> list[str]:
    """What the base run stands in for the original (the recipe's ``substitutions``, resolved.yaml)."""
    import yaml

    try:
        cfg = yaml.safe_load((bvar.runs[0].path / "resolved.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return []
    return [str(x) for x in cfg.get("substitutions") or []] if isinstance(cfg, dict) else []


def stage_rows(data: dict) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the per-stage table of the base run: each stage's log loss without and with TTA."""
    stages = data.get("stages") or []
    if not stages:
        return [], []
    header = ["stage", "train rows", "valid rows", "log loss (no TTA)", "with TTA", "final", "length baseline",
              "steps", "time"]
    return header, [[s["stage"], str(s["n_train_rows"]), str(s["n_valid_rows"]), _f(s["log_loss"]),
                     _f(s["tta_log_loss"]), _f(s["final_log_loss"]), _f(s["length_log_loss"]),
                     str(s["optimizer_steps"] if s["optimizer_steps"] is not None else "—"), _seconds(s["seconds"])]
                    for s in stages]


# reference rows: the name, and the view of valid_predictions.csv.gz that holds its per-row predictions
UNIFORM, PRIOR, LENGTH = "uniform (ln 3)", "class prior (training shares)", "length features (logistic regression)"
PRIOR_CROSSFIT = "class prior (cross-fitted validation shares)"
PRIOR_VIEW, LENGTH_VIEW = "baseline_prior", "baseline_length"


def _prior_reference(runs: list[Run]) -> tuple[str, str, dict] | None:
    """(name, source, per-run probabilities) of the class prior: the runs' ``baseline_prior`` view,
    else the training label shares in metrics.json, else validation shares cross-fitted."""
    if all(PRIOR_VIEW in r.preds.views for r in runs):
        return (PRIOR, f"label shares of each run's training rows (the {PRIOR_VIEW} view of {PREDICTIONS})",
                {r.run_id: r.preds.views[PRIOR_VIEW] for r in runs})
    priors = [r.label_prior() for r in runs]
    if all(p is not None for p in priors):
        return (PRIOR, "label shares of the training rows (metrics.json train_label_prior; these runs have no "
                f"{PRIOR_VIEW} view)", {r.run_id: np.tile(np.asarray(p) / sum(p), (len(r.preds), 1))
                                       for r, p in zip(runs, priors, strict=True)})
    probs = {r.run_id: crossfit_prior(r.preds.labels, r.preds.groups) for r in runs}
    if any(p is None for p in probs.values()):
        return None
    return (PRIOR_CROSSFIT, "validation-label shares cross-fitted over two halves of the prompt groups "
            "(metrics.json has no train_label_prior)", probs)


def _length_reference(runs: list[Run], notes: list[str]) -> tuple[str, str, dict] | None:
    """(name, source, per-run probabilities) of the length baseline, from the runs that have its view."""
    have = [r for r in runs if LENGTH_VIEW in r.preds.views]
    if len(have) < len(runs):
        missing = ", ".join(r.run_id for r in runs if r not in have)
        notes.append(f"{LENGTH}: no {LENGTH_VIEW} view in {PREDICTIONS} of {missing} (runs written before every "
                     "run computed the baselines; run them again to get it)"
                     + (f"; its reference row uses the other {len(have)} run(s) of the base" if have else ""))
    if not have:
        return None
    return (LENGTH, "multinomial logistic regression on response and prompt lengths fitted on each run's training "
            f"rows (the {LENGTH_VIEW} view of {PREDICTIONS}; core/baselines.py)", {r.run_id: r.preds.views[LENGTH_VIEW]
                                                                            for r in have})


def _reference_row(name: str, source: str, probs: dict[str, np.ndarray], runs: list[Run]) -> dict:
    """A reference line: its log loss on the base's rows and the paired interval against the base."""
    runs = [r for r in runs if r.run_id in probs]
    losses = {r.run_id: row_log_loss(probs[r.run_id], r.preds.labels) for r in runs}
    pairs = {"base": np.concatenate([r.row_losses() for r in runs]),
             "var": np.concatenate([losses[r.run_id] for r in runs]),
             "groups": np.concatenate([np.array(r.preds.groups) for r in runs]),
             "seeds": np.concatenate([np.full(len(r.preds), str(r.seed)) for r in runs])}
    d = _boot(pairs)
    return {"name": name, "source": source, "runs": [r.run_id for r in runs],
            "log_loss": float(np.mean([losses[r.run_id].mean() for r in runs])),
            "accuracy": float(np.mean([(probs[r.run_id].argmax(1) == r.preds.labels.argmax(1)).mean() for r in runs])),
            "delta": d, "verdict": _verdict(d),
            "base_minus_reference": {"delta": 0.0 - d["delta"], "lo": 0.0 - d["hi"], "hi": 0.0 - d["lo"]}}


def _references(bvar: Variant, notes: list[str]) -> list[dict]:
    """Reference lines on the base's validation rows, pooled over its seeds: uniform, the class prior
    and the length baseline. ``delta`` is reference − base (as the table's Δ column);
    ``base_minus_reference`` the same interval from the base's side."""
    runs = [r for r in bvar.runs if r.preds is not None]
    if not runs:
        return []
    out = [_reference_row(UNIFORM, "1/3 each", {r.run_id: np.full((len(r.preds), 3), 1 / 3) for r in runs}, runs)]
    prior = _prior_reference(runs)
    if prior is None:
        out.append({"name": PRIOR, "source": "not computable: fewer than two prompt groups", "runs": [],
                    "log_loss": None, "accuracy": None, "delta": None, "verdict": None, "base_minus_reference": None})
    else:
        out.append(_reference_row(*prior, runs))
    length = _length_reference(runs, notes)
    if length is not None:
        out.append(_reference_row(*length, runs))
    return out


def _per_seed(bvar: Variant, notes: list[str]) -> list[dict]:
    """The base on each of its seeds (split seeds) alone, with the reference rows of that seed: what a
    pooled interval can hide (one lucky split). Empty for a base of one seed (the table says it all)."""
    runs = sorted((r for r in bvar.runs if r.preds is not None), key=lambda r: str(r.seed))
    if len(runs) < 2:
        return []
    out = []
    for r in runs:
        refs = {ref["name"]: ref for ref in _references(Variant(bvar.key, bvar.name, [r]), [])}
        out.append({"seed": r.seed, "run": r.run_id, "n_rows": len(r.preds), "log_loss": float(r.row_losses().mean()),
                    "references": {name: {"log_loss": ref["log_loss"], "base_minus_reference": ref["base_minus_reference"],
                                          "verdict": ref["verdict"]} for name, ref in refs.items()}})
    return out


def per_seed_rows(data: dict) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the per-seed table: the base and each reference per seed, and the base's Δ
    against the length baseline (base − length) with its interval."""
    header = ["seed", "rows", "base", "uniform", "class prior", "length baseline", "Δ vs length (base − length)",
              "95% interval"]
    cells = []
    for s in data.get("per_seed") or []:
        refs = s["references"]
        length = refs.get(LENGTH, {}).get("base_minus_reference")
        prior = next((v for k, v in refs.items() if k.startswith("class prior")), {})
        cells.append([str(s["seed"]), str(s["n_rows"]), _f(s["log_loss"]), _f(refs.get(UNIFORM, {}).get("log_loss")),
                      _f(prior.get("log_loss")), _f(refs.get(LENGTH, {}).get("log_loss")),
                      _signed(length["delta"]) if length else "—",
                      f"[{_signed(length['lo'])}, {_signed(length['hi'])}]" if length else "—"])
    return header, cells


def _length_buckets(variants: list[Variant]) -> dict | None:
    """Δ per quartile of row characters (quartiles of the base's rows), for every variant with pairs."""
    bvar = variants[0]
    chars = np.concatenate([r.preds.chars for r in bvar.runs if r.preds is not None] or [np.zeros(0)])
    if chars.size < 8 or len(variants) < 2:
        return None
    edges = np.unique(np.quantile(chars, [0.25, 0.5, 0.75]).round())
    edges = edges[edges < chars.max()]  # no empty top bucket when many rows share the longest length
    bounds = [int(chars.min())] + [int(e) for e in edges] + [int(chars.max())]
    counts = np.bincount(np.searchsorted(edges, chars, side="left"), minlength=len(bounds) - 1)
    labels = []
    for k in range(len(bounds) - 1):
        lo = bounds[k] if k == 0 else bounds[k] + 1
        labels.append(f"{lo:,}–{bounds[k + 1]:,}\n{counts[k]} rows")
    out = {"labels": labels, "edges": [int(e) for e in edges], "variants": []}
    for v in variants[1:]:
        pairs = _pairs(bvar, v)
        if pairs is None:
            continue
        b = np.searchsorted(edges, pairs["chars"], side="left")  # bucket k holds chars <= edges[k]
        pts = []
        for k in range(len(labels)):
            mask = b == k
            if not mask.any():
                pts.append(None)
                continue
            d = _boot(pairs, mask)
            pts.append({k2: d[k2] for k2 in ("delta", "lo", "hi", "n_rows", "n_groups")})
        out["variants"].append({"name": v.name, "points": pts})
    return out


# ---------------------------------------------------------------------------------------------
# text


def _f(x, fmt="{:.4f}", none="—") -> str:
    return none if x is None else fmt.format(x)


def _signed(x: float) -> str:
    s = f"{x:+.4f}"
    return "+0.0000" if s == "-0.0000" else s  # no negative zero


def _seconds(s) -> str:
    if s is None:
        return "—"
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def _tokens(t) -> str:
    if t is None:
        return "—"
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if t >= div:
            return f"{t / div:.3g}{unit}"
    return f"{t:.0f}"


VERDICT_WORDS = {"better": "lower loss (real)", "worse": "higher loss (real)", "unresolved": "not resolved"}
# reference rows are read from the base's side: a reference with higher loss is good news for the base
REF_WORDS = {"better": "base loses to it", "worse": "base beats it", "unresolved": "not resolved"}
REF_CLASS = {"better": "worse", "worse": "better", "unresolved": "unresolved"}


def table_rows(data: dict) -> tuple[list[str], list[list[str]], list[str | None]]:
    """Header, cells and the verdict of each line of the comparison table (variants, then references)."""
    header = ["variant", "seeds", "log loss", "Δ vs base", "95% interval", "P(lower)", "verdict", "accuracy",
              "ECE", "time/run", "tokens/run", "rows/run (paired)"]
    cells, verdicts = [], []
    for v in data["variants"]:
        ll = _f(v["log_loss"]) + (f" ± {v['log_loss_sd']:.4f}" if v["log_loss_sd"] is not None else "")
        d = v["delta"]
        if v["is_base"]:
            dcols = ["base", "", "", "base"]
        elif d is None:
            dcols = ["—", "—", "—", "no pairs"]
        else:
            dcols = [_signed(d["delta"]), f"[{_signed(d['lo'])}, {_signed(d['hi'])}]", f"{d['p_better']:.2f}",
                     VERDICT_WORDS[v["verdict"]]]
        rows_txt = _f(v["n_rows"], "{:.0f}") + (f" ({d['n_rows']} paired)" if d else "")
        cells.append([v["name"], ", ".join(map(str, v["seeds"])), ll, *dcols, _f(v["accuracy"], "{:.3f}"),
                      _f(v["ece"], "{:.3f}"), _seconds(v["seconds"]), _tokens(v["train_tokens"]), rows_txt])
        verdicts.append(v["verdict"])
    for r in data["references"]:
        d = r["delta"]
        if d is None:
            dcols = ["—", "—", "—", "—"]
        else:
            dcols = [_signed(d["delta"]), f"[{_signed(d['lo'])}, {_signed(d['hi'])}]", f"{d['p_better']:.2f}",
                     REF_WORDS[r["verdict"]]]
        cells.append([f"*{r['name']}*", "", _f(r["log_loss"]), *dcols, _f(r["accuracy"], "{:.3f}"), "", "", "",
                      "same rows"])
        verdicts.append(REF_CLASS[r["verdict"]] if r["verdict"] else None)
    return header, cells, verdicts


def markdown_table(data: dict) -> str:
    header, cells, _ = table_rows(data)
    right = {"log loss", "Δ vs base", "P(lower)", "accuracy", "ECE", "time/run", "tokens/run"}
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---:" if h in right else "---" for h in header) + "|"]
    for c in cells:
        lines.append("| " + " | ".join(x.replace("|", "\\|") for x in c) + " |")
    return "\n".join(lines)


def verdict_lines(data: dict) -> list[str]:
    out = []
    base = data["base"]
    for v in data["variants"]:
        if v["is_base"]:
            continue
        d = v["delta"]
        if d is None:
            out.append(f"{v['name']}: no Δ against the base ({v['why_no_delta']}).")
            continue
        ci = f"Δ {_signed(d['delta'])} [{_signed(d['lo'])}, {_signed(d['hi'])}]"
        size = f"{d['n_rows']} rows, {d['n_groups']} prompt groups, {d['n_seeds']} seed(s)"
        if v["verdict"] == "unresolved":
            half = (d["hi"] - d["lo"]) / 2
            out.append(f"{v['name']}: {ci}: the interval includes 0: not resolved at this sample size ({size}); "
                       f"a difference smaller than about ±{half:.4f} cannot be told from noise here.")
        else:
            how = "lower log loss than" if v["verdict"] == "better" else "higher log loss than"
            out.append(f"{v['name']}: {ci}: {how} {base}; the interval excludes 0: a real difference at this "
                       f"sample size ({size}).")
    return out + [_reference_line(base, r) for r in data["references"] if r["delta"] is not None]


def _reference_line(base: str, r: dict) -> str:
    """``<base> beats the <reference> reference: Δ vs <reference> (base − reference) -0.0120 [...] excludes 0.``"""
    d = r["base_minus_reference"]
    ci = f"Δ vs {r['name']} (base − reference) {_signed(d['delta'])} [{_signed(d['lo'])}, {_signed(d['hi'])}]"
    if d["hi"] < 0:
        return f"{base} beats the {r['name']} reference: {ci} excludes 0."
    if d["lo"] > 0:
        return f"{base} is worse than the {r['name']} reference: {ci} excludes 0."
    return f"{base} is not distinguishable from the {r['name']} reference: {ci} includes 0."


def _compared_lines(data: dict, variants: list[Variant], out_dir: Path) -> list[str]:
    lines = []
    for v in variants:
        for r in v.runs:
            rel = os.path.relpath(r.path.resolve(), out_dir.resolve())
            lines.append(f"{v.name}: {r.run_id} (seed {r.seed}, view {r.view or 'metrics.json'}, "
                         f"data {str(r.fingerprint.get('data_hash'))[:12]}, "
                         f"{(r.fingerprint.get('environment') or {}).get('device', '?')}) at {rel}")
    return lines


# ---------------------------------------------------------------------------------------------
# writing


def _atomic_text(path: Path, text: str) -> None:
    from replicator.core.util.atomic import atomic_write_text

    atomic_write_text(path, text)


def _plots(data: dict, variants: list[Variant]) -> list[dict]:
    """The figures: dicts with ``id``, ``title``, ``alt``, ``caption`` and ``src`` (or ``missing``)."""
    from replicator.core.report import plots

    colors = dict(zip([v.name for v in variants], plots.palette(len(variants)), strict=True))
    return [_delta_fig(data), *_calibration_figs(variants, colors), _loss_fig(variants, colors),
            _length_fig(data, colors)]


def _delta_fig(data: dict) -> dict:
    from replicator.core.report import plots

    entries = [{"name": v["name"], **{k: v["delta"][k] for k in ("delta", "lo", "hi")}}
               for v in data["variants"] if v["delta"] is not None]
    xlabel = "Δ log loss vs base (variant − base; below 0: the variant has lower loss)"
    if not entries:  # nothing but the base: show how it compares with the references
        entries = [{"name": f"{r['name']} − base", **{k: r["delta"][k] for k in ("delta", "lo", "hi")}}
                   for r in data["references"] if r["delta"] is not None]
        xlabel = "reference − base log loss (above 0: the base beats the reference)"
    return {"id": "plot-delta", "title": "Δ log loss with 95% bootstrap intervals",
            "alt": "Delta log loss versus the base with 95% paired bootstrap intervals, one line per variant",
            "caption": "Green: the interval lies below 0 (lower loss than the base), red: above 0, "
                       "grey: it crosses 0 (not resolved at this sample size).",
            **({"src": plots.delta_plot(entries, xlabel)} if entries else
               {"missing": "no interval to draw (no per-row predictions)"})}


def _calibration_figs(variants: list[Variant], colors: dict) -> list[dict]:
    """The reliability diagrams and the confusion matrices, seeds pooled."""
    from replicator.core.report import plots

    rel, conf = [], []
    for v in variants:
        runs = [r for r in v.runs if r.preds is not None]
        if not runs:
            continue
        p = np.concatenate([r.probs() for r in runs])
        y = np.concatenate([r.preds.labels for r in runs])
        b = reliability_bins(p, y)
        rel.append({"name": v.name, "color": colors[v.name], "ece": expected_calibration_error(p, y),
                    "count": b["count"], "confidence": b["confidence"], "accuracy": b["accuracy"]})
        conf.append({"name": v.name, "counts": _confusion(p, y)})
    pooled = " (seeds pooled)" if any(len(v.runs) > 1 for v in variants) else ""
    return [{"id": "plot-reliability", "title": "Reliability (top-label calibration)",
             "alt": "Reliability diagrams: accuracy against confidence of the top class, one panel per variant",
             "caption": "Points on the diagonal are calibrated; point size is the share of rows in the bin" + pooled + ".",
             **({"src": plots.reliability_plot(rel)} if rel else {"missing": "no per-row predictions"})},
            {"id": "plot-confusion", "title": "Confusion matrices",
             "alt": "Confusion matrices of true against predicted class, one panel per variant",
             "caption": "Rows: the true class; cells: share of the row and count" + pooled + ".",
             **({"src": plots.confusion_plot(conf)} if conf else {"missing": "no per-row predictions"})}]


def _loss_fig(variants: list[Variant], colors: dict) -> dict:
    from replicator.core.report import plots

    series = []
    for v in variants:
        for r in v.runs:
            losses, starts = r.loss_history()
            if losses:
                series.append({"name": v.name, "color": colors[v.name], "seed": r.seed, "losses": losses,
                               "boundaries": starts})
    return {"id": "plot-loss", "title": "Training loss", "alt": "Training loss per optimizer step, one line per run",
            "caption": "Thin: per step; thick: running mean; dotted: a stage starts.",
            **({"src": plots.loss_plot(series)} if series else
               {"missing": "no loss history: metrics.json of these runs has no stages[*].train_loss_history"})}


def _length_fig(data: dict, colors: dict) -> dict:
    from replicator.core.report import plots

    lb = data["length_buckets"]
    if not (lb and lb["variants"]):
        return {"id": "plot-length", "title": "Δ by prompt length", "alt": "", "caption": "",
                "missing": "no variant to compare with the base row by row"}
    lines = [{"name": x["name"], "color": colors[x["name"]], "points": x["points"]} for x in lb["variants"]]
    return {"id": "plot-length", "title": "Δ by prompt length",
            "alt": "Delta log loss versus the base per quartile of characters of prompt and responses",
            "caption": "Buckets: quartiles of the characters of prompt + both responses of the base's "
                       "validation rows (row counts over all its seeds).",
            "src": plots.length_plot(lb["labels"], lines, "characters of prompt + responses")}


CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:24px auto;max-width:1150px;
color:#1f2328;line-height:1.45;padding:0 16px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #d0d7de;
padding-bottom:4px}.sub{color:#59636e;margin:0 0 16px}
table{border-collapse:collapse;font-size:13px;width:100%}th,td{padding:5px 8px;border-bottom:1px solid #d0d7de;
text-align:left;white-space:nowrap}th{background:#f6f8fa}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.base td{font-weight:600}tr.ref td{color:#59636e;font-style:italic}
.better{color:#1a7f37;font-weight:600}.worse{color:#cf222e;font-weight:600}.unresolved{color:#6e7781}
.badge{display:inline-block;border-radius:10px;padding:1px 8px;font-size:12px;font-style:normal;color:#fff}
.badge.better{background:#1a7f37;color:#fff}.badge.worse{background:#cf222e;color:#fff}
.badge.unresolved{background:#8c959f;color:#fff}
ul.verdicts{padding-left:18px}ul.verdicts li{margin:4px 0}
.flags{background:#fff8c5;border:1px solid #d4a72c;border-radius:6px;padding:8px 14px;margin:12px 0}
.flags h2{border:none;margin:4px 0}.ok{color:#1a7f37}
figure{margin:10px 0 22px}figure img{max-width:100%;height:auto;display:block}
figcaption{color:#59636e;font-size:13px}.missing{color:#59636e;font-style:italic}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px}
"""


def render_markdown(data: dict, compared: list[str], title: str) -> str:
    out = [f"# {title}", "", f"Base: **{data['base']}** ({', '.join(data['base_runs'])}). Δ = variant − base "
           "log loss on the same validation rows (lower is better), with a 95% paired bootstrap interval "
           f"({data['bootstrap']['n_boot']} resamples of {data['bootstrap']['resamples']}).", "",
           markdown_table(data), "", "## Verdicts", ""]
    out += [f"- {line}" for line in verdict_lines(data)] or ["- only the base: nothing to compare"]
    header, cells = per_seed_rows(data)
    if cells:
        out += ["", f"## {data['base']} per split seed", "", "| " + " | ".join(header) + " |",
                "|" + "---|" * len(header)] + ["| " + " | ".join(c) + " |" for c in cells]
    header, cells = stage_rows(data)
    if cells:
        out += ["", f"## Stages of {data['base']}", "", "| " + " | ".join(header) + " |",
                "|" + "---|" * len(header)] + ["| " + " | ".join(c) + " |" for c in cells]
    if data.get("substitutions"):
        out += ["", "## Substitutions (what this run stands in for the original)", ""]
        out += [f"- {x}" for x in data["substitutions"]]
    out += ["", "## Comparability", ""]
    if data["flags"]:
        for f in data["flags"]:
            out.append(f"- **{f['run']}** differs from the base: " + "; ".join(f["differs"]))
    else:
        out.append("- all runs share the base's data hash, validation rows (per seed) and environment")
    out += [f"- {n}" for n in data["notes"]]
    out += [f"- {r['name']}: {r['source']}" for r in data["references"] if r["name"] != UNIFORM]
    out += ["", "## What was compared", ""] + [f"- {c}" for c in compared] + [""]
    return "\n".join(out)


def render_html(data: dict, compared: list[str], title: str, figs: list[dict]) -> str:
    e = html.escape
    header, cells, verdicts = table_rows(data)
    numeric = {"log loss", "Δ vs base", "P(lower)", "accuracy", "ECE", "time/run", "tokens/run"}
    n_var = len(data["variants"])
    trs = []
    for k, (c, verdict) in enumerate(zip(cells, verdicts, strict=True)):
        cls = "base" if k == 0 else "ref" if k >= n_var else ""
        tds = []
        for h, x in zip(header, c, strict=True):
            klass = ["num"] if h in numeric else []
            if h in ("Δ vs base", "95% interval") and verdict and not cls:
                klass.append(verdict)
            text = e(x.strip("*"))
            if h == "verdict" and verdict:
                text = f'<span class="badge {verdict}">{text}</span>'
            tds.append(f'<td class="{" ".join(klass)}">{text}</td>' if klass else f"<td>{text}</td>")
        trs.append(f'<tr class="{cls}">' + "".join(tds) + "</tr>" if cls else "<tr>" + "".join(tds) + "</tr>")
    table = ('<table id="results-table"><thead><tr>' + "".join(f"<th>{e(h)}</th>" for h in header)
             + "</tr></thead><tbody>" + "".join(trs) + "</tbody></table>")
    vl = verdict_lines(data)
    items = []
    for v, line in zip([v for v in data["variants"] if not v["is_base"]], vl, strict=False):
        badge = f'<span class="badge {v["verdict"]}">{e(VERDICT_WORDS[v["verdict"]])}</span> ' if v["verdict"] else ""
        items.append(f"<li>{badge}{e(line)}</li>")
    items += [f"<li>{e(line)}</li>" for line in vl[len(items):]]
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">', f"<title>{e(title)}</title>",
        f"<style>{CSS}</style></head><body>", f"<h1>{e(title)}</h1>",
        f'<p class="sub">Base: <b>{e(data["base"])}</b> ({e(", ".join(data["base_runs"]))}). Δ = variant − base '
        "log loss on the same validation rows; lower is better. 95% paired bootstrap intervals over "
        f'{e(data["bootstrap"]["resamples"])}, {data["bootstrap"]["n_boot"]} resamples.</p>',
    ]
    if data["flags"]:
        parts.append('<div class="flags" id="flags"><h2>Not comparable as they stand</h2><ul>' + "".join(
            f"<li><b>{e(f['run'])}</b>: {e('; '.join(f['differs']))}</li>" for f in data["flags"]) + "</ul></div>")
    parts += ['<h2>Verdicts</h2><ul class="verdicts" id="verdicts">'
              + ("".join(items) or "<li>only the base: nothing to compare</li>") + "</ul>"]
    fig0 = figs[0]
    parts.append(_figure_html(fig0))
    parts += ["<h2>Comparison</h2>", table, _per_seed_html(data), _stages_html(data)]
    if data.get("substitutions"):
        parts.append('<h2>Substitutions</h2><ul id="substitutions">'
                     + "".join(f"<li>{e(x)}</li>" for x in data["substitutions"]) + "</ul>")
    for fig in figs[1:]:
        parts.append(f"<h2>{e(fig['title'])}</h2>" + _figure_html(fig, title=False))
    parts.append("<h2>Comparability</h2><ul>")
    if not data["flags"]:
        parts.append('<li class="ok">all runs share the base\'s data hash, validation rows (per seed) and '
                     "environment</li>")
    parts += [f"<li>{e(n)}</li>" for n in data["notes"]]
    parts += [f"<li>{e(r['name'])}: {e(r['source'])}</li>" for r in data["references"] if r["name"] != UNIFORM]
    parts.append("</ul><h2>What was compared</h2><ul>" + "".join(f'<li class="mono">{e(c)}</li>' for c in compared)
                 + "</ul></body></html>")
    return "\n".join(parts) + "\n"


def _per_seed_html(data: dict) -> str:
    return _small_table_html(f"{data['base']} per split seed", "per-seed", *per_seed_rows(data))


def _stages_html(data: dict) -> str:
    return _small_table_html(f"Stages of {data['base']}", "stages", *stage_rows(data), text_columns=1)


def _small_table_html(title: str, table_id: str, header: list[str], cells: list[list[str]],
                      text_columns: int = 0) -> str:
    """A titled table of numbers (the first ``text_columns`` columns are text); '' without rows."""
    if not cells:
        return ""
    e = html.escape

    def td(k: int, x: str) -> str:
        return f"<td>{e(x)}</td>" if k < text_columns else f'<td class="num">{e(x)}</td>'

    return (f'<h2>{e(title)}</h2><table id="{table_id}"><thead><tr>'
            + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr></thead><tbody>"
            + "".join("<tr>" + "".join(td(k, x) for k, x in enumerate(c)) + "</tr>" for c in cells)
            + "</tbody></table>")


def _figure_html(fig: dict, title: bool = True) -> str:
    e = html.escape
    if "missing" in fig:
        return f'<p class="missing" id="{fig["id"]}-missing">{e(fig["missing"])}</p>'
    head = f"<h2>{e(fig['title'])}</h2>" if title else ""
    return (f'{head}<figure><img id="{fig["id"]}" alt="{e(fig["alt"])}" src="{fig["src"]}">'
            f"<figcaption>{e(fig['caption'])}</figcaption></figure>")


def _rounded(x, nd: int = 10):
    if isinstance(x, float):
        return round(x, nd)
    if isinstance(x, dict):
        return {k: _rounded(v, nd) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_rounded(v, nd) for v in x]
    return x


def build_report(run_dirs: list[Path], out_dir: Path, base: Path | None = None, strict: bool = False,
                 title: str | None = None) -> dict:
    """Compare ``run_dirs`` against ``base`` (default: the first) and write ``report.md``,
    ``report.html`` and ``report.json`` into ``out_dir``. Returns the numbers, the Markdown table
    (``table_md``) and the files written (``files``). ``strict``: refuse runs not comparable with the base."""
    out_dir = Path(out_dir)
    variants, data = compute([Path(d) for d in run_dirs], base)
    if strict and data["flags"]:
        lines = [f"{f['run']}: " + "; ".join(f["differs"]) for f in data["flags"]]
        raise ReplicatorError("runs not comparable with the base " f"({', '.join(data['base_runs'])}), "
                              "refused (--strict):\n" + "\n".join(lines))
    recipes = sorted({r.recipe for v in variants for r in v.runs})
    n_runs = sum(len(v.runs) for v in variants)
    title = title or f"{', '.join(recipes)}: {len(variants)} variant(s), {n_runs} run(s)"
    data = _rounded(data)
    compared = _compared_lines(data, variants, out_dir)
    figs = _plots(data, variants)
    md = render_markdown(data, compared, title)
    page = render_html(data, compared, title, figs)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"md": out_dir / "report.md", "html": out_dir / "report.html", "json": out_dir / "report.json"}
    payload = {"title": title, **data, "compared": compared}
    _atomic_text(files["json"], json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    _atomic_text(files["md"], md)
    _atomic_text(files["html"], page)
    return {**payload, "table_md": markdown_table(data), "files": files}
