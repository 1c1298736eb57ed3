"""The numbers of a report (``report.json``'s content): each variant against the base and the
reference rows, with 95% paired bootstrap intervals over prompt groups and seeds (rows paired by
(seed, id): only rows both runs predicted), and the comparability flags.

Each variant also gets what it stands for (its toggles' descriptions and directions,
:func:`replicator.core.config.toggles.describe`), what the write-ups claim its technique is worth, the
gain from its technique (the same sign whether its toggle switches the technique on or off: log loss
without the technique − with it), its Δ on each seed,
the config keys it changed, and a warning where its predictions are degenerate. Seeds are pooled only
where every variant has them: runs on other seeds are left out, named in a note."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import yaml

from replicator.core.config.recipe import load_yaml
from replicator.core.config.toggles import ToggleInfo, config_diff, describe, recipe_toggle_info
from replicator.core.errors import ReplicatorError
from replicator.core.report.runs import Run, Variant, base_ties, group_variants, load_runs
from replicator.core.scoring.stats import expected_calibration_error, paired_bootstrap, row_log_loss
from replicator.core.util.layout import ROW_PREDICTIONS

#: the environment a run is compared on: a difference is flagged (``auto_dtype``: what ``model.dtype: auto``
#: computes in on that machine, bf16 on a CPU with bf16 units, else fp32)
ENV_KEYS = ("device", "auto_dtype", "torch", "transformers", "peft")
N_BOOT = 2000
BOOT_SEED = 0
#: a run is flagged as degenerate when one class is the argmax of more than this share of its rows
ONE_CLASS_SHARE = 0.9
CLASS_NAMES = ("A wins", "B wins", "tie")
#: the suffix that tells apart variants of one recipe and toggles (core/report/runs.py group_variants)
HASH_SUFFIX = r" #[0-9a-f]{6}$"


def _mean_sd(values: list[float]) -> tuple[float | None, float | None]:
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None
    return float(np.mean(vals)), (float(np.std(vals, ddof=1)) if len(vals) > 1 else None)


def crossfit_prior(labels: np.ndarray, groups: list[str]) -> np.ndarray | None:
    """Per-row class-prior predictions: prompt groups (sorted by hash) split alternately in two halves,
    each half predicted by the label shares of the other. None with fewer than two groups."""
    unique_groups = sorted(set(groups))
    if len(unique_groups) < 2:
        return None
    half = {g: i % 2 for i, g in enumerate(unique_groups)}
    half_of_row = np.array([half[g] for g in groups])
    out = np.empty_like(labels, dtype=np.float64)
    for k in (0, 1):
        out[half_of_row == k] = labels[half_of_row != k].mean(axis=0)
    return out


def _pairs(base: Variant, var: Variant) -> dict | None:
    """Rows paired by (seed, id) between ``base`` and ``var``: losses, groups, seed tags, chars."""
    parts = []
    for var_run in var.runs:
        base_run = next((r for r in base.runs if r.seed == var_run.seed), None)
        if base_run is None or base_run.preds is None or var_run.preds is None:
            continue
        pos = {i: k for k, i in enumerate(var_run.preds.ids)}
        base_idx = [k for k, i in enumerate(base_run.preds.ids) if i in pos]
        var_idx = [pos[base_run.preds.ids[k]] for k in base_idx]
        if not base_idx:
            continue
        label_gap = np.abs(base_run.preds.labels[base_idx] - var_run.preds.labels[var_idx])
        parts.append({
            "base": base_run.row_losses()[base_idx], "var": var_run.row_losses()[var_idx],
            "groups": np.array([base_run.preds.groups[k] for k in base_idx]),
            "seeds": np.full(len(base_idx), str(var_run.seed)), "chars": base_run.preds.chars[base_idx],
            "label_mismatch": int((label_gap > 1e-6).any(axis=1).sum()),
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


def _flags(runs: list[Run], base: Variant, declared: Mapping[str, tuple[str, ...]]
           ) -> tuple[list[dict], list[dict], list[str]]:
    """Comparability problems against the base (same seed where the split is concerned): (flags, expected,
    notes). A difference that a run's own toggle declares it makes on purpose (``declared``: run id ->
    :data:`~replicator.core.lib.toggles.CHANGES` keys, e.g. ``data`` for a toggle that adds data) is
    ``expected``, not a flag."""
    flags, expected, notes = [], [], []
    base_run = base.runs[0]
    base_env = base_run.fingerprint.get("environment") or {}
    for r in runs:
        what, meant = [], []
        on_purpose = declared.get(r.run_id, ())
        if r.fingerprint.get("data_hash") != base_run.fingerprint.get("data_hash"):
            (meant if "data" in on_purpose else what).append(
                f"data_hash {str(r.fingerprint.get('data_hash'))[:12]} vs "
                f"{str(base_run.fingerprint.get('data_hash'))[:12]} in {base_run.run_id}")
        env = r.fingerprint.get("environment") or {}
        for k in ENV_KEYS:
            if env.get(k) != base_env.get(k):
                what.append(f"environment {k} {env.get(k)} vs {base_env.get(k)} in {base_run.run_id}")
        same_seed = next((x for x in base.runs if x.seed == r.seed), None)
        if (same_seed is not None and same_seed is not r and same_seed.preds is not None
                and r.preds is not None):
            a, b = set(r.preds.ids), set(same_seed.preds.ids)
            if a != b:
                (meant if "split" in on_purpose else what).append(
                    f"validation rows (split) differ from {same_seed.run_id}: {len(a - b)} only "
                    f"here, {len(b - a)} only there, {len(a & b)} shared")
        if what:
            flags.append({"run": r.run_id, "differs": what})
        if meant:
            expected.append({"run": r.run_id, "differs": meant, "declared": list(on_purpose)})
        if r.preds is None:
            notes.append(f"{r.run_id}: no {ROW_PREDICTIONS} (an older run): its log loss and accuracy come "
                         "from its metrics.json; no interval, calibration or plots for it")
    return flags, expected, notes


def _run_numbers(r: Run) -> dict:
    """log loss, accuracy, ECE and rows of one run: from its per-row predictions, else metrics.json."""
    if r.preds is not None:
        p, y = r.probs(), r.preds.labels
        return {"log_loss": float(r.row_losses().mean()),
                "accuracy": float((p.argmax(1) == y.argmax(1)).mean()),
                "ece": expected_calibration_error(p, y), "n_rows": len(r.preds)}
    m = r.metrics
    return {"log_loss": m.get("final_log_loss", m.get("log_loss")),
            "accuracy": m.get("final_accuracy", m.get("accuracy")),
            "ece": None, "n_rows": m.get("n_valid_rows")}


def _variant_row(v: Variant, base_variant: Variant, flags: list[dict], meaning: dict) -> dict:
    """The table line of variant ``v``: its numbers (mean over seeds), its Δ against the base, the gain
    from its technique, its Δ per seed, and what it stands for (``meaning``: :func:`_meaning`)."""
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
        "is_base": v is base_variant, "delta": None, "verdict": None, "why_no_delta": None,
        "gain": None, "delta_per_seed": [], **meaning,
    }
    if v is base_variant:
        return row
    pairs = _pairs(base_variant, v)
    if pairs is None:
        row["why_no_delta"] = "no paired rows: no seed in common with the base, or no per-row predictions"
        return row
    row["delta"] = _boot(pairs)
    row["verdict"] = _verdict(row["delta"])
    row["gain"] = _gain(row["delta"], meaning["direction"])
    seeds = list(dict.fromkeys(pairs["seeds"]))
    if len(seeds) > 1:
        for seed in seeds:
            d = _boot(pairs, pairs["seeds"] == seed)
            row["delta_per_seed"].append({"seed": seed, **{k: d[k] for k in ("delta", "lo", "hi", "n_rows")},
                                          "gain": _gain(d, meaning["direction"])})
    if pairs["label_mismatch"]:
        flags.append({"run": ", ".join(row["runs"]), "differs": [
            f"labels differ from the base on {pairs['label_mismatch']} paired row(s)"]})
    return row


def _gain(d: dict, direction: str | None) -> dict | None:
    """The gain from the technique a toggle switches, with its interval: log loss without the technique −
    with it (above 0: the technique helps). A toggle that switches it on: base − variant = −Δ; off:
    variant − base = Δ. None for a variant that switches no technique (an alternative, a scale, an
    override)."""
    if direction == "off":
        return {"gain": d["delta"], "lo": d["lo"], "hi": d["hi"]}
    if direction == "on":
        return {"gain": 0.0 - d["delta"], "lo": 0.0 - d["hi"], "hi": 0.0 - d["lo"]}
    return None


# ---------------------------------------------------------------- what each variant stands for


def recipe_infos(runs: list[Run], notes: list[str]) -> dict[str, dict[str, ToggleInfo]]:
    """recipe name -> its own toggles' descriptions, read from the recipe of that name
    (``recipes/<name>.yaml`` in the current folder, else the shipped one); a note names a recipe that cannot
    be read."""
    out: dict[str, dict[str, ToggleInfo]] = {}
    for recipe in sorted({r.recipe for r in runs}):
        if not any(t.partition(":")[2] not in ("on", "off") for r in runs if r.recipe == recipe
                   for t in r.toggles):
            continue
        try:
            raw = load_yaml(Path("recipes") / f"{recipe}.yaml")
            out[recipe] = recipe_toggle_info(raw, f"recipes/{recipe}.yaml")
        except ReplicatorError as e:
            why = ("no recipe file of that name here (recipes/) or shipped" if "not found" in str(e)
                   else f"its recipe file could not be read ({e})")
            notes.append(f"the toggles of recipe {recipe!r} are not described: {why}")
    return out


def _short(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def config_changes(base: Run, run: Run) -> list[dict]:
    """The config keys ``run`` sets otherwise than ``base`` (the seed left out): key, base value, variant
    value ([] when either has no resolved config, e.g. a combination folder)."""
    if base.config is None or run.config is None:
        return []
    a = {k: v for k, v in base.config.items() if k != "seed"}
    b = {k: v for k, v in run.config.items() if k != "seed"}
    return [{"key": k, "base": x, "variant": y} for k, x, y in config_diff(a, b)]


def _meaning(v: Variant, base_variant: Variant, infos: Mapping[str, Mapping[str, ToggleInfo]],
             given: Mapping[str, ToggleInfo]) -> dict:
    """What variant ``v`` stands for against the base: its toggles beyond the base's (each described,
    ``given`` first: labels the caller knows, e.g. ``ablate``'s overrides), the one direction of the
    technique it switches (None unless it switches exactly one), what it changes on purpose, what the
    write-ups claim about it (:func:`_claimed`) and the config keys that differ from the base's."""
    run, base_run = v.runs[0], base_variant.runs[0]
    same_seed = next((r for r in base_variant.runs if r.seed == run.seed), base_run)
    changes = config_changes(same_seed, run)
    if v is base_variant:
        labels, reverse = [], []
    elif run.recipe != base_run.recipe:  # another recipe: its toggles are not the base recipe's to flip
        return _other_recipe(run, changes)
    else:
        labels = [t for t in run.toggles if t not in base_run.toggles]
        reverse = [t for t in base_run.toggles if t not in run.toggles]  # the base's toggles this one lacks
    recipe_info = infos.get(run.recipe, {})
    about = []
    for t in labels + reverse:
        info = given.get(t) or describe(t, recipe_info)
        if t in reverse:  # going without the base's toggle: the other direction
            flipped = {"on": "off", "off": "on"}.get(info.direction)
            info = ToggleInfo(t, f"without the base's {t}: {info.about}", flipped, info.changes, info.kind,
                              info.claimed)
        about.append(info.to_dict())
    if v is not base_variant and not about and v.name in given:  # an override variant (ablate --vary)
        about.append(given[v.name].to_dict())
    elif v is not base_variant and not about and changes:  # same toggles, other settings
        text = ", ".join(f"{c['key']}={_short(c['variant'])}" for c in changes[:3])
        about.append(ToggleInfo(text, f"the base with {text}" + (" ..." if len(changes) > 3 else ""),
                                kind="override").to_dict())
    directions = [a["direction"] for a in about]
    return {"about": about, "direction": directions[0] if len(about) == 1 else None,
            "claimed": _claimed(about),
            "declared_changes": sorted({c for a in about for c in a["changes"]}),
            "config_changes": changes}


def _other_recipe(run: Run, changes: list[dict]) -> dict:
    """The meaning of a variant from another recipe than the base's: that recipe (with its toggles), no
    direction (it is not one technique switched), and the config keys that differ."""
    toggles = "".join(f" +{t}" for t in run.toggles)
    with_toggles = f" with {toggles.strip()}" if toggles else ""
    info = ToggleInfo(f"{run.recipe}{toggles}", f"another recipe: recipes/{run.recipe}.yaml{with_toggles}",
                      kind="other_recipe")
    return {"about": [info.to_dict()], "direction": None, "claimed": "", "declared_changes": [],
            "config_changes": changes}


def _claimed(about: list[dict]) -> str:
    """What the write-ups claim about the variant's technique: its one toggle's claim, or each claim named
    by its toggle's label where it switches several ("" where none has one)."""
    claims = [a for a in about if a.get("claimed")]
    if len(about) == 1 and claims:
        return claims[0]["claimed"]
    return "; ".join(f"{a['label']}: {a['claimed']}" for a in claims)


def _degenerate(variants: list[Variant]) -> list[dict]:
    """Runs whose predictions are degenerate, every run including the base's: one class the argmax of more
    than 90 % of the rows, or a tie never the argmax (which can happen with a weak or mis-started head)."""
    out = []
    for v in variants:
        for r in v.runs:
            if r.preds is None or not len(r.preds):
                continue
            share = np.bincount(r.probs().argmax(1), minlength=3) / len(r.preds)
            warn = []
            top = int(share.argmax())
            if share[top] > ONE_CLASS_SHARE:
                warn.append(f"'{CLASS_NAMES[top]}' is the most likely class for {share[top]:.0%} of the rows "
                            f"(over {ONE_CLASS_SHARE:.0%})")
            if share[2] == 0:
                warn.append("a tie is never the most likely class")
            if warn:
                out.append({"variant": v.name, "run": r.run_id, "seed": r.seed, "warnings": warn,
                            "argmax_shares": [float(x) for x in share]})
    return out


def _common_seeds(variants: list[Variant], notes: list[str]) -> list[Variant]:
    """Pool seeds only where every variant has them: when the variants share some seeds but not all, the runs
    on the other seeds are left out (a note names them), so that no variant's mean covers seeds the others
    were not compared on. Variants with no seed in common keep their runs (the note says so)."""
    if len(variants) < 2:
        return variants
    common = set.intersection(*(set(map(str, v.seeds)) for v in variants))
    if not common:
        notes.append("the variants share no seed: each log loss is the mean over its own seeds, and a "
                     "variant is compared with the base only on the seeds both have")
        return variants
    left = [r for v in variants for r in v.runs if str(r.seed) not in common]
    if not left:
        return variants
    notes.append("seeds pooled only where every variant has them (" + ", ".join(sorted(common)) + "); left "
                 "out: " + ", ".join(f"{r.run_id} (seed {r.seed})" for r in left))
    out = []
    for v in variants:
        out.append(Variant(v.key, v.name, [r for r in v.runs if str(r.seed) in common]))
    return out


def compute(run_dirs: list[Path], base: Path | None = None, toggles: Mapping[str, ToggleInfo] | None = None,
            names: dict[str, str] | None = None) -> tuple[list[Variant], dict]:
    """Load the runs and compute every number of the report (``report.json``'s content). ``toggles``: labels
    the caller describes itself (``replicate ablate``'s), ``names``: run id -> variant name."""
    runs, base_run = load_runs(run_dirs, base, names)
    variants = group_variants(runs, base_run)
    notes: list[str] = []
    if base is None and (ties := base_ties(variants)):
        notes.append(f"base: {variants[0].name}, chosen by the fewest toggles and the most seeds among "
                     f"{', '.join([variants[0].name] + [v.name for v in ties])}; give --base RUN_FOLDER to "
                     "choose another")
    variants = _common_seeds(variants, notes)
    runs = [r for v in variants for r in v.runs]
    base_variant = variants[0]
    infos = recipe_infos(runs, notes)
    meanings = {v.key: _meaning(v, base_variant, infos, toggles or {}) for v in variants}
    for v in variants[1:]:  # same toggles as the base, other settings: named by what they set
        about = meanings[v.key]["about"]
        if len(about) == 1 and about[0]["kind"] == "override" and v.name not in (toggles or {}):
            v.name = f"{re.sub(HASH_SUFFIX, '', v.name)} {about[0]['label']}"
    for v in variants:  # a name made unique by a hash suffix that is unique now without it
        plain = re.sub(HASH_SUFFIX, "", v.name)
        if plain != v.name and all(w.name != plain for w in variants):
            v.name = plain
    declared = {r.run_id: tuple(meanings[v.key]["declared_changes"]) for v in variants for r in v.runs}
    flags, expected, flag_notes = _flags(runs, base_variant, declared)
    notes += flag_notes
    rows = [_variant_row(v, base_variant, flags, meanings[v.key]) for v in variants]
    references = _references(base_variant, notes)
    return variants, {
        "base": base_variant.name, "base_runs": [r.run_id for r in base_variant.runs],
        "bootstrap": {"n_boot": N_BOOT, "seed": BOOT_SEED, "confidence": 0.95,
                      "resamples": "prompt groups (and seeds when a variant has several)"},
        "variants": rows, "references": references, "per_seed": _per_seed(base_variant, notes),
        "length_buckets": _length_buckets(variants),
        "flags": flags, "expected_differences": expected, "degenerate": _degenerate(variants),
        "notes": notes, "stages": _stages(base_variant), "substitutions": _substitutions(base_variant),
    }


def _stages(base_variant: Variant) -> list[dict]:
    """Each stage of the base's first run: its rows, its validation log loss without TTA, with TTA and
    postprocessed, the length and the length-and-style baselines on the same rows (None for a run made
    before that baseline existed), optimizer steps and wall time (metrics.json)."""
    run = base_variant.runs[0]
    out = []
    for name, st in run.stages().items():
        out.append({"stage": name, "run": run.run_id, "n_train_rows": st.get("n_train_rows"),
                    "n_valid_rows": st.get("n_valid_rows"), "log_loss": st.get("log_loss"),
                    "tta_log_loss": st.get("tta_log_loss"), "final_log_loss": st.get("final_log_loss"),
                    "length_log_loss": st.get("baseline_length_log_loss"),
                    "style_log_loss": st.get("baseline_style_log_loss"),
                    "optimizer_steps": st.get("optimizer_steps"), "seconds": st.get("seconds")})
    return out


def _substitutions(base_variant: Variant) -> list[str]:
    """What the base run stands in for the original (the recipe's ``substitutions``, resolved.yaml)."""
    try:
        cfg = yaml.safe_load((base_variant.runs[0].path / "resolved.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return []
    return [str(x) for x in cfg.get("substitutions") or []] if isinstance(cfg, dict) else []


# reference rows: the name, and the view of valid_predictions.csv.gz that holds its per-row predictions
UNIFORM = "uniform (ln 3)"
PRIOR = "class prior (training shares)"
LENGTH = "length features (logistic regression)"
STYLE = "length and style features (logistic regression)"
PRIOR_CROSSFIT = "class prior (cross-fitted validation shares)"
PRIOR_VIEW, LENGTH_VIEW, STYLE_VIEW = "baseline_prior", "baseline_length", "baseline_style"
#: the fitted baselines' reference rows: (name, view, since when runs have the view, what it is)
FITTED_REFERENCES = (
    (LENGTH, LENGTH_VIEW, "every run computed the baselines",
     "multinomial logistic regression on response and prompt lengths"),
    (STYLE, STYLE_VIEW, "every run computed the length-and-style baseline",
     "multinomial logistic regression on response and prompt lengths plus style counts (refusals, bold, "
     "headers, question marks, digits, paragraphs, links; A − B and |A − B|, identical, both refuse)"),
)


def _prior_reference(runs: list[Run]) -> tuple[str, str, dict] | None:
    """(name, source, per-run probabilities) of the class prior: the runs' ``baseline_prior`` view,
    else the training label shares in metrics.json, else validation shares cross-fitted."""
    if all(PRIOR_VIEW in r.preds.views for r in runs):
        return (PRIOR,
                f"label shares of each run's training rows (the {PRIOR_VIEW} view of {ROW_PREDICTIONS})",
                {r.run_id: r.preds.views[PRIOR_VIEW] for r in runs})
    priors = [r.label_prior() for r in runs]
    if all(p is not None for p in priors):
        probs = {r.run_id: np.tile(np.asarray(p) / sum(p), (len(r.preds), 1))
                 for r, p in zip(runs, priors, strict=True)}
        return (PRIOR, "label shares of the training rows, as each run recorded them (these runs have no "
                f"per-row prior predictions, the {PRIOR_VIEW} view)", probs)
    probs = {r.run_id: crossfit_prior(r.preds.labels, r.preds.groups) for r in runs}
    if any(p is None for p in probs.values()):
        return None
    return (PRIOR_CROSSFIT, "validation-label shares cross-fitted over two halves of the prompt groups "
            "(the runs recorded no training label shares)", probs)


def _view_reference(runs: list[Run], notes: list[str], name: str, view: str, since: str,
                    what: str) -> tuple[str, str, dict] | None:
    """(name, source, per-run probabilities) of a fitted baseline, from the runs that have its view; a
    note names the runs without it (made before ``since``), None when none has it."""
    have = [r for r in runs if view in r.preds.views]
    if len(have) < len(runs):
        missing = ", ".join(r.run_id for r in runs if r not in have)
        notes.append(f"{name}: no {view} view in {ROW_PREDICTIONS} of {missing} (runs written "
                     f"before {since}; run them again to get it)"
                     + (f"; its reference row uses the other {len(have)} run(s) of the base" if have else ""))
    if not have:
        return None
    return (name, f"{what} fitted on each run's training rows (the {view} view of {ROW_PREDICTIONS}; "
            "core/stages/baseline.py)", {r.run_id: r.preds.views[view] for r in have})


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
            "accuracy": float(np.mean([(probs[r.run_id].argmax(1) == r.preds.labels.argmax(1)).mean()
                                       for r in runs])),
            "delta": d, "verdict": _verdict(d),
            "base_minus_reference": {"delta": 0.0 - d["delta"], "lo": 0.0 - d["hi"], "hi": 0.0 - d["lo"]}}


def _references(base_variant: Variant, notes: list[str]) -> list[dict]:
    """Reference lines on the base's validation rows, pooled over its seeds: uniform, the class prior,
    the length baseline and the length-and-style baseline (each of the last two only from the runs that
    have its view). ``delta`` is reference − base (as the table's Δ column);
    ``base_minus_reference`` the same interval from the base's side."""
    runs = [r for r in base_variant.runs if r.preds is not None]
    if not runs:
        return []
    uniform = {r.run_id: np.full((len(r.preds), 3), 1 / 3) for r in runs}
    out = [_reference_row(UNIFORM, "1/3 each", uniform, runs)]
    prior = _prior_reference(runs)
    if prior is None:
        out.append({"name": PRIOR, "source": "not computable: fewer than two prompt groups", "runs": [],
                    "log_loss": None, "accuracy": None, "delta": None, "verdict": None,
                    "base_minus_reference": None})
    else:
        out.append(_reference_row(*prior, runs))
    for ref in FITTED_REFERENCES:
        fitted = _view_reference(runs, notes, *ref)
        if fitted is not None:
            out.append(_reference_row(*fitted, runs))
    return out


def _per_seed(base_variant: Variant, notes: list[str]) -> list[dict]:
    """The base on each of its seeds (split seeds) alone, with the reference rows of that seed: what a
    pooled interval can hide (one lucky split). Empty for a base of one seed (the table says it all)."""
    runs = sorted((r for r in base_variant.runs if r.preds is not None), key=lambda r: str(r.seed))
    if len(runs) < 2:
        return []
    out = []
    for r in runs:
        seed_variant = Variant(base_variant.key, base_variant.name, [r])
        refs = {ref["name"]: ref for ref in _references(seed_variant, [])}
        out.append({"seed": r.seed, "run": r.run_id, "n_rows": len(r.preds),
                    "log_loss": float(r.row_losses().mean()),
                    "references": {name: {"log_loss": ref["log_loss"],
                                          "base_minus_reference": ref["base_minus_reference"],
                                          "verdict": ref["verdict"]} for name, ref in refs.items()}})
    return out


def _length_buckets(variants: list[Variant]) -> dict | None:
    """Δ per quartile of row characters (quartiles of the base's rows), for every variant with pairs."""
    base_variant = variants[0]
    chars = np.concatenate([r.preds.chars for r in base_variant.runs if r.preds is not None] or [np.zeros(0)])
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
        pairs = _pairs(base_variant, v)
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
