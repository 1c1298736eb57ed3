"""``replicate ablate``: a base run and one variant per toggle, for each seed, then the report.

For each seed ``s`` the base is the recipe with the base toggles (``-b``, e.g. ``tiny``) and the
override ``seed=s``; each variant is the base plus one toggle (a shared toggle flips its technique,
see :mod:`replicator.core.config.toggles`; a recipe toggle applies its patch), or the base plus one
ad-hoc override (``--vary train.lr=1e-4,2e-4``: one variant per value, named by its override in the
report; a value equal to the base's is the base itself and is not run twice). The validation split is
drawn with the recipe seed, so the base and its variants share it, seed by seed, and the report can
pair their rows.

Everything is resolved and fingerprinted before anything runs, so that a toggle that cannot apply
fails at once, and the plan (one line per run: variant, seed, run id, reuse or compute, estimated
time) is printed first. Runs whose run id is already finished are reused by the runner; a second
invocation therefore trains nothing and rewrites the same report, byte for byte.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import statistics
import time
from pathlib import Path

from replicator.core.config.recipe import Resolved, load_yaml, resolve
from replicator.core.config.toggles import SHARED, ToggleInfo, config_diff, describe, recipe_toggle_info
from replicator.core.data.files import data_dir as default_data_dir
from replicator.core.errors import ReplicatorError
from replicator.core.report.build import build_report
from replicator.core.run.fingerprint import fingerprint
from replicator.core.run.pipeline import finished, run_recipe
from replicator.core.stages.steps import stage_keys
from replicator.core.util.atomic import atomic_write_text
from replicator.core.util.layout import reports_root, run_folders

log = logging.getLogger(__name__)

DEFAULT_RECIPE = Path("recipes/smoke.yaml")
MANIFEST = "ablation.json"


@dataclasses.dataclass
class PlannedRun:
    variant: str  # "base", the toggle as given, or the override of a --vary value
    label: str  # "base", the recorded label (swap:off, swap:on, raja) or the override (train.lr=2e-4)
    seed: int
    resolved: Resolved
    run_id: str
    run_dir: Path
    exists: bool  # finished: the runner will reuse it (unless --force)
    estimate: float | None  # seconds, from earlier runs of the recipe (None: unknown)
    #: every trained stage has the train key of the base run's (core/stages/steps.py): the variant
    #: predicts only
    shares_training: bool = False

    def status(self, force: bool) -> str:
        if self.exists:
            return "exists: recompute (--force)" if force else "exists: reuse"
        return "will predict (base's training)" if self.shares_training and not force else "will compute"


@dataclasses.dataclass
class Plan:
    recipe: Path
    name: str
    toggles: list[str]
    base_toggles: list[str]
    overrides: list[str]
    seeds: list[int]
    runs: list[PlannedRun]
    out_dir: Path
    force: bool = False
    #: the ad-hoc overrides measured (``--vary``), one variant each
    varies: list[str] = dataclasses.field(default_factory=list)
    #: --vary values equal to the base's: the base stands for them
    same_as_base: list[str] = dataclasses.field(default_factory=list)
    #: label -> what it stands for (the recipe's own toggle descriptions, the shared toggles' meanings)
    infos: dict[str, ToggleInfo] = dataclasses.field(default_factory=dict)

    @property
    def base_runs(self) -> list[PlannedRun]:
        return [r for r in self.runs if r.variant == "base"]

    def to_compute(self) -> list[PlannedRun]:
        return [r for r in self.runs if self.force or not r.exists]

    def info(self, label: str) -> ToggleInfo:
        return self.infos.get(label) or describe(label)

    def variants(self) -> list[dict]:
        """Each toggle or override: its recorded label, what it measures, whether it switches a technique
        on or off, and what it changes (first seed's configs)."""
        base = self.base_runs[0].resolved
        out = []
        for t in [*self.toggles, *self.varies]:
            r = next(p for p in self.runs if p.variant == t)
            info = self.info(r.label)
            out.append({"toggle": t, "label": r.label, "measures": info.about, "direction": info.direction,
                        "changes": [{"key": k, "base": a, "variant": b}
                                    for k, a, b in config_diff(base.config, r.resolved.config)]})
        return out

    def report_names(self) -> tuple[dict[str, str], dict[str, ToggleInfo]]:
        """For the report: run id -> variant name of each --vary run (``<recipe> train.lr=2e-4``), and what
        each label and --vary variant stands for."""
        base = self.name + "".join(f" +{t}" for t in self.base_runs[0].resolved.toggles)
        names = {r.run_id: f"{base} {r.label}" for r in self.runs if r.variant in self.varies}
        infos = dict(self.infos)
        for o in self.varies:
            infos[f"{base} {o}"] = self.infos[o]
        return names, infos

    def text(self) -> str:
        """The plan as printed before anything runs."""
        lines = [f"ablation of {self.recipe} ({self.name}): {len(self.runs)} runs, seeds "
                 f"{', '.join(map(str, self.seeds))}" + (f", base toggles {' '.join(self.base_toggles)}"
                                                         if self.base_toggles else "")
                 + (f", overrides {' '.join(self.overrides)}" if self.overrides else "")]
        lines += [f"  {o}: the base's value, so the base stands for it (not run twice)"
                  for o in self.same_as_base]
        for v in self.variants():
            changes = "; ".join(f"{c['key']}: {_short(c['base'])} -> {_short(c['variant'])}"
                                for c in v["changes"])
            lines.append(f"  {v['label']}: {v['measures']}  [{changes}]")
        width = max(len(r.label) for r in self.runs)
        for r in self.runs:
            est = "-" if (r.exists and not self.force) else _duration(r.estimate)
            lines.append(f"  {r.label:<{width}}  seed {r.seed:<4} {r.run_id}  "
                         f"{r.status(self.force):<30} est. {est}")
        todo = self.to_compute()
        known = [r.estimate for r in todo if r.estimate is not None]
        total = _duration(sum(known)) if todo and len(known) == len(todo) else "unknown" if todo else "0 s"
        lines.append(f"  {len(self.runs) - len(todo)} to reuse, {len(todo)} to compute, estimated {total}; "
                     f"report -> {self.out_dir}")
        return "\n".join(lines)


def _short(value) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 60 else text[:57] + "..."


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def parse_seeds(text: str | None) -> list[int] | None:
    """``"0,1,2"`` -> [0, 1, 2] (None: the recipe's seed)."""
    if text is None or text.strip() == "":
        return None
    seeds = []
    for part in text.split(","):
        try:
            seeds.append(int(part.strip()))
        except ValueError:
            raise ReplicatorError(f"--seeds {text!r}: {part.strip()!r} is not an integer "
                                  "(give e.g. 0,1,2)") from None
    if len(set(seeds)) != len(seeds):
        raise ReplicatorError(f"--seeds {text!r}: a seed is repeated")
    return seeds


def parse_vary(text: str) -> list[str]:
    """``"train.lr=1e-4,2e-4"`` -> ``["train.lr=1e-4", "train.lr=2e-4"]``: one override per value (commas
    inside brackets or quotes belong to the value: ``model.lora.targets=[q_proj,v_proj],all-linear``)."""
    key, eq, values = text.partition("=")
    if not eq or not key.strip() or not values.strip():
        raise ReplicatorError(f"--vary {text!r}: expected key.path=value1,value2 (e.g. train.lr=1e-4,2e-4)")
    out, depth, quote, cur = [], 0, None, ""
    for ch in values:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(cur)
            cur = ""
            continue
        cur += ch
    out.append(cur)
    if any(not v.strip() for v in out):
        raise ReplicatorError(f"--vary {text!r}: an empty value (give e.g. train.lr=1e-4,2e-4)")
    overrides = [f"{key.strip()}={v.strip()}" for v in out]
    if len(set(overrides)) != len(overrides):
        raise ReplicatorError(f"--vary {text!r}: a value is repeated")
    return overrides


def _folder_part(text: str) -> str:
    """``text`` as part of a folder name: no path separator, at most 60 characters (else a hash ends it)."""
    safe = text.replace("/", "_").replace("\\", "_")
    if len(safe) <= 60:
        return safe
    return safe[:51] + "-" + hashlib.sha256(text.encode()).hexdigest()[:8]


def default_out_dir(name: str, toggles: list[str], seeds: list[int], base_toggles: list[str] = (),
                    overrides: list[str] = (), varies: list[str] = ()) -> Path:
    """``reports/<recipe>/ablation-<toggles and --vary overrides joined by +>-s<seeds joined by ->``, then
    ``-on-<base toggles>`` when there are some and ``-set<hash6>`` of the overrides when there are some (so
    that ablations of different bases never share a folder)."""

    folder = f"ablation-{_folder_part('+'.join([*toggles, *varies]))}-s{'-'.join(map(str, seeds))}"
    if base_toggles:
        folder += f"-on-{'+'.join(base_toggles)}"
    if overrides:
        folder += "-set" + hashlib.sha256("\n".join(overrides).encode()).hexdigest()[:6]
    return reports_root() / name / folder


def run_seconds(metrics: dict) -> float | None:
    """Wall seconds of a whole run: the sum over its stages (or the top-level ``seconds``)."""
    stages = metrics.get("stages") or {}
    vals = [s.get("seconds") for s in stages.values() if isinstance(s, dict)]
    if vals and all(isinstance(v, int | float) for v in vals):
        return float(sum(vals))
    v = metrics.get("seconds")
    return float(v) if isinstance(v, int | float) else None


def _own_toggles(labels) -> list[str]:
    """The recipe-own toggles among recorded labels (shared toggles are what an ablation varies)."""
    return [t for t in labels if t.partition(":")[0] not in SHARED]


def predict_seconds(metrics: dict) -> float | None:
    """Wall seconds of a run without its training: what a variant that reuses the trained weights costs
    (None for a run that trained without recording its training time apart)."""
    stages = [s for s in (metrics.get("stages") or {}).values() if isinstance(s, dict)]
    if not stages or not all(isinstance(s.get("seconds"), int | float) for s in stages):
        return None
    total = 0.0
    for s in stages:
        if s.get("train_reused"):
            total += s["seconds"]
        elif isinstance(s.get("train_seconds"), int | float):
            total += max(0.0, s["seconds"] - s["train_seconds"])
        elif s.get("optimizer_steps"):
            return None
        else:  # a baseline or frozen-feature stage: no training step of its own
            total += s["seconds"]
    return total


def estimate_seconds(name: str, base_toggles: list[str], of=run_seconds) -> float | None:
    """Median wall seconds (``of`` a run's metrics: :func:`run_seconds`, :func:`predict_seconds`) of the
    finished runs of recipe ``name`` recorded with the same recipe-own toggles as ``base_toggles`` (a
    ``tiny`` run says nothing about a full one); None when there are none."""

    want = _own_toggles(base_toggles)
    found = []
    for m in sorted((reports_root() / name).glob("*/metrics.json")):
        try:
            fingerprint_info = json.loads((m.parent / "fingerprint.json").read_text())
            metrics = json.loads(m.read_text())
        except (OSError, ValueError):
            continue
        if _own_toggles(fingerprint_info.get("toggles") or []) != want:
            continue
        s = of(metrics)
        if s is not None:
            found.append(s)
    return statistics.median(found) if found else None


def refuse_combination(recipe: Path, r: Resolved, where: str) -> None:
    """An ablation compares single runs: a recipe with a ``folds:`` or ``ensemble:`` section (which ``run``
    turns into member runs and their combination) is refused, saying what to ablate instead, rather
    than run as one plain run with the section dropped."""
    sections = [k for k in ("folds", "ensemble") if r.config.get(k) is not None]
    if not sections:
        return
    what = " and ".join(f"{k}:" for k in sections)
    whole = "run each variant whole (`replicate run RECIPE -t TOGGLE`) and compare them (`replicate report`)"
    instead = (f"ablate one fold run with --set folds=null (the fold its data block sets), or {whole}"
               if sections == ["folds"] else
               "ablate a member (its recipe file, with its toggles as -b), or this recipe alone with --set "
               f"ensemble=null; or {whole}")
    raise ReplicatorError(f"{recipe}: {what} section{where}: `replicate run` runs its members and "
                          "combines them, while `replicate ablate` compares single runs and would drop the "
                          f"section, so it refuses; {instead}")


def _check_asked(recipe: Path, toggles: list[str], base_toggles: list[str], varies: list[str]) -> None:
    """Something to measure; no toggle twice or also a base toggle; no --vary override twice."""
    if not toggles and not varies:
        raise ReplicatorError(f"give at least one --toggle or --vary to measure (shared toggles: "
                              f"{', '.join(SHARED)}; `replicate ablate {recipe} --list` shows which way each "
                              "goes on this recipe; --vary train.lr=1e-4,2e-4 runs one variant per value)")
    for t in toggles:
        if toggles.count(t) > 1:
            raise ReplicatorError(f"--toggle {t} is given twice")
        if t in base_toggles:
            raise ReplicatorError(f"--toggle {t} is also a base toggle (-b): "
                                  "the variant would equal the base")
    if len(set(varies)) != len(varies):
        raise ReplicatorError(f"--vary: {', '.join(o for o in varies if varies.count(o) > 1)} is given twice")


def plan_ablation(recipe: Path | str = DEFAULT_RECIPE, toggles: list[str] = (),
                  seeds: list[int] | None = None, base_toggles: list[str] = (), overrides: list[str] = (),
                  data_dir: Path | None = None, out_dir: Path | None = None, force: bool = False,
                  vary: list[str] = ()) -> Plan:
    """Resolve and fingerprint every run of the ablation; nothing runs. ``vary``: ``key.path=v1,v2`` texts
    (:func:`parse_vary`), one variant per value."""

    recipe, toggles, base_toggles = Path(recipe), list(toggles), list(base_toggles)
    varies = [o for text in vary for o in parse_vary(text)]
    _check_asked(recipe, toggles, base_toggles, varies)
    ddir = Path(data_dir) if data_dir is not None else default_data_dir()
    first = resolve(recipe, base_toggles, list(overrides), data_dir=ddir)
    refuse_combination(recipe, first, "")
    same = [o for o in varies
            if resolve(recipe, base_toggles, [*overrides, o], data_dir=ddir).config_hash == first.config_hash]
    if same and len(same) == len(varies) and not toggles:
        raise ReplicatorError(f"--vary: {', '.join(same)} set the base's own values: nothing to measure")
    varies = [o for o in varies if o not in same]
    seeds = [first.seed] if seeds is None else list(seeds)
    estimate = estimate_seconds(first.name, base_toggles)
    predict_estimate = estimate_seconds(first.name, base_toggles, of=predict_seconds)
    runs: list[PlannedRun] = []
    for s in seeds:
        over = [*overrides, f"seed={s}"]
        base = resolve(recipe, base_toggles, over, data_dir=ddir)
        planned = [("base", base),
                   *((t, resolve(recipe, [*base_toggles, t], over, data_dir=ddir)) for t in toggles),
                   *((o, resolve(recipe, base_toggles, [*overrides, o, f"seed={s}"], data_dir=ddir))
                     for o in varies)]
        for variant, r in planned:
            what = "toggle" if variant in toggles else "--vary"
            refuse_combination(recipe, r, "" if variant == "base" else f" (with {what} {variant!r})")
            if variant != "base" and r.config_hash == base.config_hash:
                raise ReplicatorError(f"{recipe}: {what} {variant!r} changes nothing on top of "
                                      f"{' '.join(base_toggles) or 'the recipe'}: nothing to measure")
            fingerprint_info = fingerprint(r, ddir)
            train_keys = {n: k.train for n, k in stage_keys(r, fingerprint_info).items()}
            if variant == "base":
                base_keys = train_keys
            shares = variant != "base" and bool(train_keys) and train_keys == base_keys
            run_dir, artifacts = run_folders(r.name, fingerprint_info["run_id"])
            label = "base" if variant == "base" else variant if variant in varies else r.toggles[-1]
            runs.append(PlannedRun(variant, label, s, r, fingerprint_info["run_id"], run_dir,
                                   finished(r, run_dir, artifacts), predict_estimate if shares else estimate,
                                   shares))
    out = (Path(out_dir) if out_dir is not None
           else default_out_dir(first.name, toggles, seeds, base_toggles, overrides, varies))
    recipe_info = recipe_toggle_info(load_yaml(recipe), str(recipe))
    infos = {r.label: describe(r.label, recipe_info) for r in runs if r.variant in toggles}
    infos.update({o: ToggleInfo(o, f"the base with {o}", kind="override") for o in varies})
    return Plan(recipe, first.name, toggles, base_toggles, list(overrides), seeds, runs, out, force,
                varies=varies, same_as_base=same, infos=infos)


def manifest(p: Plan) -> dict:
    """``ablation.json``: what was compared and how (deterministic: no times, no reuse flags)."""
    return {"recipe": str(p.recipe), "name": p.name, "base_toggles": p.base_toggles, "overrides": p.overrides,
            "seeds": p.seeds, "variants": p.variants(),
            "runs": [{"variant": r.label, "seed": r.seed, "run_id": r.run_id} for r in p.runs]}


def _metric_text(metrics: dict) -> str:
    keys = ("final_log_loss", "tta_log_loss", "log_loss", "final_accuracy", "accuracy")
    return ", ".join(f"{k}={metrics[k]:.4f}" for k in keys
                     if isinstance(metrics.get(k), int | float)) or "no metrics"


def execute(p: Plan, data_dir: Path | None = None, progress: bool = True) -> dict:
    """Run (or reuse) every planned run in order, then write the report and ``ablation.json``.
    Returns {"runs": [(PlannedRun, run_dir, metrics, reused)], "report": build_report's result}."""

    ddir = Path(data_dir) if data_dir is not None else default_data_dir()
    done = []
    for i, r in enumerate(p.runs, 1):
        log.info("%d/%d %s seed %d: %s (%s)", i, len(p.runs), r.label, r.seed,
                 "reusing" if r.exists and not p.force else "starting", r.run_id)
        t0 = time.time()
        run_dir, metrics, reused = run_recipe(r.resolved, ddir, force=p.force, progress=progress)
        if run_dir != r.run_dir:  # the fingerprint hashes the code and data files as they are on disk now
            log.warning("%s seed %d: planned as %s, run as %s: the code or the data changed while the "
                        "ablation ran", r.label, r.seed, r.run_dir.name, run_dir.name)
        log.info("%d/%d %s seed %d: %s in %s: %s", i, len(p.runs), r.label, r.seed,
                 "reused" if reused else "finished", _duration(time.time() - t0), _metric_text(metrics))
        done.append((r, run_dir, metrics, reused))
    title = f"{p.name} ablation: " + ", ".join(v["measures"] for v in p.variants())
    names, infos = p.report_names()
    report = build_report([d for _, d, _, _ in done], p.out_dir, base=p.base_runs[0].run_dir, title=title,
                          toggles=infos, names=names)
    atomic_write_text(p.out_dir / MANIFEST, json.dumps(manifest(p), indent=2, ensure_ascii=False) + "\n")
    log.info("report: %s", ", ".join(str(f) for f in report["files"].values()))
    return {"runs": done, "report": report}
