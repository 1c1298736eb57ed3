"""Running a recipe's ``folds:`` and ``ensemble:`` sections: the thin orchestration over
:mod:`replicator.core.run.folds` and :mod:`replicator.core.run.ensemble`.

``replicate run RECIPE`` on a recipe with either section plans every member run (resolved and
fingerprinted before anything runs), runs or reuses each one with the ordinary runner, then writes
the combination's own report folder:

* folds: ``reports/<recipe>/folds-<hash8>/`` with the out-of-fold per-row predictions, their metrics
  and, for ``average: adapters``, the averaged weights under ``artifacts/<recipe>/folds-<hash8>/``;
* ensemble: ``reports/<recipe>/ensemble-<hash8>/`` with the blend's per-row predictions (view
  ``final``; the members' inputs as ``member_<name>``), the weights, each member's score and the
  blend's on the same rows with paired bootstrap intervals (``ensemble.md``).

The hash covers the member run ids and the section, so a changed weight recomputes only the blend,
and an added fold trains one run. Members of an ensemble are resolved as the recipe (or their
``recipe`` file) + their ``toggles`` + the command line's toggles + their ``overrides`` + the command
line's overrides: ``-t tiny`` shrinks every member. A command-line toggle that a member lists itself is
not applied to that member again (shared toggles flip: ``-t tta`` on 2nd turns the Gemma member's swap
TTA on and leaves the ArmoRM member's swapped view on, its role in the blend). A member whose config
has a ``folds:`` section is that fold combination. ``combination.json`` holds what ``replicate predict``
needs; a combination folder has ``fingerprint.json`` and ``metrics.json`` like a run, so
``replicate report`` compares it with runs on the same rows.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np

from replicator.core.config.canonical import hash_of
from replicator.core.config.catalogue import build_plugins
from replicator.core.config.recipe import Resolved, resolve
from replicator.core.config.sections import (
    EnsembleConfig,
    FoldsConfig,
    GateConfig,
    MemberConfig,
    build_ensemble,
    folds_config,
    member_file,
)
from replicator.core.errors import RecipeError, ReplicatorError
from replicator.core.model.inference import load_predictor
from replicator.core.predict.evaluate import scores
from replicator.core.run.ensemble import blend, blend_markdown, blend_members, gate_mask, summarize_blend
from replicator.core.run.fingerprint import fingerprint
from replicator.core.run.finished_runs import find_run, model_probs, run_parts, run_probs
from replicator.core.run.folds import NO_HONEST_SCORE, average_weights, concat_oof, fold_name, fold_overrides
from replicator.core.run.pipeline import run_recipe, weights_file
from replicator.core.scoring import metrics as M
from replicator.core.scoring.row_predictions import read_row_predictions, row_chars, write_preds
from replicator.core.util.atomic import atomic_save_safetensors, atomic_write_text
from replicator.core.util.distributed import is_main
from replicator.core.util.layout import (
    FAILED,
    FINGERPRINT,
    METRICS,
    ROW_PREDICTIONS,
    WEIGHTS,
    artifacts_root,
    reports_root,
    run_folders,
)
from replicator.core.util.lock import run_lock
from replicator.core.util.manifest import (
    FINGERPRINT_KEY,
    MANIFEST,
    check_artifacts,
    check_reports,
    entries,
    entry,
    entry_of,
    listing,
    run_manifest,
    run_problems,
    write_manifest,
)
from replicator.core.util.path_checks import check_safetensors, safetensors_problem

log = logging.getLogger(__name__)

COMBINATION = "combination.json"
VERSION = 1


@dataclasses.dataclass
class Member:
    """One ordinary run of a combination."""

    label: str  # fold1, gemma, gemma/fold1
    resolved: Resolved
    run_id: str
    run_dir: Path
    artifacts: Path

    def unit(self) -> dict:
        return {"kind": "run", "recipe": self.resolved.name, "run_id": self.run_id}


@dataclasses.dataclass
class FoldsPlan:
    label: str  # "" for the recipe itself, else the ensemble member's name
    cfg: FoldsConfig
    name: str
    seed: int
    toggles: list[str]
    runs: dict[int, Member]
    combo_id: str
    run_dir: Path
    artifacts: Path

    def members(self) -> list[Member]:
        return list(self.runs.values())

    def unit(self) -> dict:
        return {"kind": "folds", "recipe": self.name, "run_id": self.combo_id}


@dataclasses.dataclass
class EnsemblePlan:
    cfg: EnsembleConfig
    specs: dict[str, MemberConfig]
    parts: dict[str, Member | FoldsPlan]
    name: str
    seed: int
    toggles: list[str]
    combo_id: str
    run_dir: Path
    artifacts: Path

    def members(self) -> list[Member]:
        return [m for p in self.parts.values() for m in (p.members() if isinstance(p, FoldsPlan) else [p])]


Plan = FoldsPlan | EnsemblePlan


# ---------------------------------------------------------------- planning


def plan_combination(path: str | Path, toggles=(), overrides=(), data_dir: Path | None = None) -> Plan | None:
    """Every member of the recipe's combination resolved and fingerprinted (nothing runs); None when
    the recipe has neither ``folds:`` nor ``ensemble:``."""
    top = resolve(path, list(toggles), list(overrides), data_dir=data_dir)
    if top.config.get("ensemble") is not None:
        return _plan_ensemble(top, Path(path), list(toggles), list(overrides), data_dir)
    if top.config.get("folds") is not None:
        return _plan_folds("", Path(path), top, list(toggles), list(overrides), data_dir)
    return None


def _member(label: str, resolved: Resolved, data_dir: Path) -> Member:

    run_id = fingerprint(resolved, data_dir)["run_id"]
    run_dir, artifacts = run_folders(resolved.name, run_id)
    return Member(label, resolved, run_id, run_dir, artifacts)


def _plan_folds(label: str, file: Path, resolved: Resolved, toggles: list[str], overrides: list[str],
                data_dir) -> FoldsPlan:
    """The fold runs of ``resolved`` (``file`` resolved with ``toggles`` and ``overrides``)."""

    cfg = folds_config(resolved.config["folds"], str(file))
    chosen = [o for o in overrides if o.partition("=")[0].strip() in (f"plugins.{cfg.plugin}.fold",
                                                                      f"plugins.{cfg.plugin}.folds")]
    if chosen:
        raise RecipeError(str(file), "folds", f"the override {chosen[0]!r} would be replaced by each fold's: "
                          "choose folds with folds.k / folds.run=[...] (or --member fold<i>)")
    runs = {}
    for i in cfg.folds:
        r = resolve(file, toggles, [*overrides, *fold_overrides(cfg, i)], data_dir=data_dir)
        block = r.final.plugins.get(cfg.plugin) or {}
        if block.get("fold") != i or block.get("folds") != cfg.k:
            raise RecipeError(str(file), "folds.plugin", f"the final stage's plugins.{cfg.plugin} sets "
                              f"folds {block.get('folds')} fold {block.get('fold')} itself, so fold {i} of "
                              f"{cfg.k} cannot be chosen; remove them from the stage")
        if cfg.average == "adapters" and weights_file(r.final) != WEIGHTS:
            raise RecipeError(str(file), "folds.average", f"adapters averages trained weights ({WEIGHTS}); "
                              "the final stage is a baseline or frozen-feature stage: use average: probs")
        runs[i] = _member("/".join(x for x in (label, fold_name(i)) if x), r, data_dir)
    key = {"kind": "folds", "version": VERSION, "runs": {fold_name(i): m.run_id for i, m in runs.items()},
           "k": cfg.k, "plugin": cfg.plugin, "average": cfg.average}
    combo_id = f"folds-{_hash(key)}"
    return FoldsPlan(label, cfg, resolved.name, resolved.seed, list(resolved.toggles), runs, combo_id,
                     reports_root() / resolved.name / combo_id, artifacts_root() / resolved.name / combo_id)


def _plan_ensemble(top: Resolved, path: Path, toggles: list[str], overrides: list[str],
                   data_dir) -> EnsemblePlan:

    cfg, specs = build_ensemble(top.config["ensemble"], str(path))
    parts: dict[str, Member | FoldsPlan] = {}
    for name, m in specs.items():
        file = member_file(m.recipe, str(path), f"ensemble.members.{name}.recipe") if m.recipe else path
        try:
            # a toggle the member lists itself is its role (armorm's swapped view): the command line's
            # does not flip it back (shared toggles flip, core/config/toggles.py)
            tog, over = [*m.toggles, *(t for t in toggles if t not in m.toggles)], [*m.overrides, *overrides]
            if len(tog) < len(m.toggles) + len(toggles):
                log.info("ensemble member %s: its own toggles %s are kept; the command line's -t %s leaves "
                         "them as they are", name, m.toggles,
                         " -t ".join(t for t in toggles if t in m.toggles))
            r = resolve(file, tog, over, data_dir=data_dir)
            folds = r.config.get("folds") is not None
            parts[name] = (_plan_folds(name, file, r, tog, over, data_dir) if folds
                           else _member(name, r, data_dir))
        except RecipeError as e:
            raise ReplicatorError(f"ensemble member {name} ({file}, toggles {tog}): {e}") from None
    seeds = {name: (p.seed if isinstance(p, FoldsPlan) else p.resolved.seed) for name, p in parts.items()}
    if len(set(seeds.values())) > 1:
        raise ReplicatorError(f"{path}: ensemble members must share the seed (the validation split is drawn "
                              f"with it, and members are blended on the same rows): {seeds}; set overrides: "
                              "[seed=N]")
    key = {"kind": "ensemble", "version": VERSION, "weights": cfg.weights, "fit_folds": cfg.fit_folds,
           "seed": top.seed, "members": {name: {"unit": parts[name].unit(), **_spec_key(specs[name])}
                                         for name in specs}}
    combo_id = f"ensemble-{_hash(key)}"
    return EnsemblePlan(cfg, specs, parts, top.name, top.seed, list(top.toggles), combo_id,
                        reports_root() / top.name / combo_id, artifacts_root() / top.name / combo_id)


def _spec_key(m: MemberConfig) -> dict:
    return {"weight": m.weight, "input": m.input, "gate": dataclasses.asdict(m.gate) if m.gate else None}


def _hash(key: dict) -> str:

    return hash_of(key)[:8]


# ---------------------------------------------------------------- running


def _select(p: Plan, only) -> list[Member]:
    """The member runs to run: all, or those ``only`` names (a member name, or ``fold<i>`` or
    ``<member>/fold<i>``)."""
    members = p.members()
    if not only:
        return members
    names = list(p.parts) if isinstance(p, EnsemblePlan) else []
    known = list(dict.fromkeys([m.label for m in members] + names))
    for o in only:
        if o not in known:
            raise ReplicatorError(f"--member {o}: not a member of this recipe; members: {', '.join(known)}")
    return [m for m in members if m.label in only or m.label.split("/")[0] in only]


def run_plan(p: Plan, data_dir: Path, force: bool = False, progress: bool = True, only=()) -> dict:
    """Run or reuse every member run (or only those ``only`` names), then write the combinations (not
    with ``only``). Returns ``{"members": [(label, run folder, metrics, reused)], "combinations":
    [(kind, folder, metrics, reused)]}``."""

    todo = _select(p, only)
    done, seen = [], {}
    for i, m in enumerate(todo, 1):
        if m.run_id in seen:  # two members with one config: one run
            log.info("[%d/%d] %s: the same run as %s (%s)", i, len(todo), m.label, seen[m.run_id][0],
                     m.run_id)
            done.append((m.label, *seen[m.run_id][1:]))
            continue
        log.info("[%d/%d] %s: run %s", i, len(todo), m.label, m.run_id)
        run_dir, metrics, reused = run_recipe(m.resolved, data_dir, force=force, progress=progress)
        if run_dir != m.run_dir:  # the run id hashes the code and data files as they are now
            raise ReplicatorError(f"{m.label}: planned as {m.run_dir}, run as {run_dir}: the code or the "
                                  "data changed while the members ran; run the recipe again")
        seen[m.run_id] = (m.label, run_dir, metrics, reused)
        done.append((m.label, run_dir, metrics, reused))
    combos: list = []
    if only or not is_main():
        return {"members": done, "combinations": combos}
    parts = p.parts.values() if isinstance(p, EnsemblePlan) else [p]
    for f in (q for q in parts if isinstance(q, FoldsPlan)):
        combos.append(("folds" + (f" of {f.label}" if f.label else ""), *combine_folds(f, force)))
    if isinstance(p, EnsemblePlan):
        combos.append(("ensemble", *combine_ensemble(p, force)))
    return {"members": done, "combinations": combos}


def _finished(run_dir: Path, artifacts: Path, weights: bool) -> bool:
    """Whether the combination folder is complete and every file its ``manifest.json`` records is the one it
    finished with (else a warning naming the damaged files: it is recomputed)."""

    files = [run_dir / f for f in (COMBINATION, ROW_PREDICTIONS, FINGERPRINT, METRICS)]
    if not all(f.is_file() for f in files) or (run_dir / FAILED).exists():
        return False
    damaged = run_problems(run_dir, artifacts)
    if damaged:
        log.warning("%s: not the combination that finished (%s): recomputing it", run_dir, listing(damaged))
        return False
    return not weights or ((artifacts / WEIGHTS).is_file()
                           and safetensors_problem(artifacts / WEIGHTS) is None)


def _write(run_dir: Path, preds, info: dict, fingerprint_info: dict, metrics: dict,
           extra: dict[str, str], weights: Path | None = None) -> None:
    """A combination folder: per-row predictions, extra files, ``combination.json``, ``fingerprint.json``,
    ``manifest.json`` (every file's sha256; ``weights``, the averaged adapters, too) and ``metrics.json``
    last (what says it is finished)."""

    (run_dir / METRICS).unlink(missing_ok=True)
    write_preds(run_dir / ROW_PREDICTIONS, preds)
    for name, text in extra.items():
        atomic_write_text(run_dir / name, text)
    atomic_write_text(run_dir / COMBINATION, json.dumps(info, indent=2))
    atomic_write_text(run_dir / FINGERPRINT, json.dumps({**fingerprint_info, FINGERPRINT_KEY: MANIFEST},
                                                        indent=2))
    text = json.dumps(metrics, indent=2)
    reports = entries(run_dir, skip=(MANIFEST, FAILED, METRICS)) | {METRICS: entry_of(text)}
    write_manifest(run_dir / MANIFEST, "combination", {"reports": reports, "artifacts": (
        {weights.name: entry(weights)} if weights is not None else {})}, run_id=fingerprint_info["run_id"])
    atomic_write_text(run_dir / METRICS, text)


def _fingerprint(combo_id: str, name: str, seed: int, kind: str, variant: str, toggles: list[str],
                 members: list[Member]) -> dict:
    """A combination's ``fingerprint.json``: its id, what ``replicate report`` groups by (``variant``),
    its member runs, and the first member's data hash and environment (the report's comparability
    checks)."""

    first = json.loads((members[0].run_dir / FINGERPRINT).read_text())
    return {"run_id": combo_id, "recipe": name, "seed": seed, "kind": kind, "variant": variant,
            "toggles": toggles, "members": {m.label: m.run_id for m in members},
            **{k: first.get(k) for k in ("data_hash", "data_files", "code", "n_processes", "environment")}}


def _rowpreds(run_dir: Path):

    return read_row_predictions(run_dir / ROW_PREDICTIONS)


def combine_folds(f: FoldsPlan, force: bool = False) -> tuple[Path, dict, bool]:
    """The fold combination's folder (reused when finished): OOF per-row predictions and metrics, and
    for ``average: adapters`` the averaged weights."""

    adapters = f.cfg.average == "adapters"
    with run_lock(f.run_dir, f.combo_id):
        if not force and _finished(f.run_dir, f.artifacts, adapters):
            log.info("%s is finished: reused", f.run_dir)
            return f.run_dir, json.loads((f.run_dir / "metrics.json").read_text()), True
        parts = [(m.run_id, _rowpreds(m.run_dir)) for m in f.members()]
        oof = concat_oof(parts)
        if adapters:
            _average_adapters(f)
        metrics = _folds_metrics(f, parts, oof)
        info = {"kind": "folds", "id": f.combo_id, "recipe": f.name, "version": VERSION, "k": f.cfg.k,
                "plugin": f.cfg.plugin, "average": f.cfg.average,
                "runs": [{"fold": i, **m.unit()} for i, m in f.runs.items()]}
        variant = (f"{f.name}{''.join(f' +{t}' for t in f.toggles)} folds "
                   f"{','.join(map(str, f.cfg.folds))} of {f.cfg.k} (OOF, {f.cfg.average})")
        fingerprint_info = _fingerprint(f.combo_id, f.name, f.seed, "folds", variant, f.toggles,
                                        f.members())
        _write(f.run_dir, oof, info, fingerprint_info, metrics,
               {"folds.md": _folds_markdown(variant, metrics)}, f.artifacts / WEIGHTS if adapters else None)
    log.info("folds: %s (OOF final log loss %.4f on %d rows)", f.run_dir, metrics["final_log_loss"], len(oof))
    return f.run_dir, metrics, False


def _folds_metrics(f: FoldsPlan, parts: list, oof) -> dict:
    """metrics.json of a fold combination: every view scored on the OOF rows, and each fold alone."""

    names = {m.run_id: fold_name(i) for i, m in f.runs.items()}
    per_fold = {names[rid]: {"run_id": rid, "n_rows": len(p),
                             **M.summarize(p.views["final"], p.labels, "final_")} for rid, p in parts}
    note = (NO_HONEST_SCORE if f.cfg.average == "adapters"
            else "each row is predicted by the fold model that did not train on it")
    return {"run_id": f.combo_id, "recipe": f.name, "kind": "folds", "k": f.cfg.k, "average": f.cfg.average,
            "folds": {fold_name(i): m.run_id for i, m in f.runs.items()}, **scores(oof.views, oof.labels),
            "per_fold": per_fold, "note": note}


def _average_adapters(f: FoldsPlan) -> None:
    from safetensors.torch import load_file

    states = []
    for m in f.members():
        path = m.artifacts / m.resolved.final.name / WEIGHTS
        check_safetensors(path, f"weights of fold run {m.run_id}")
        states.append((m.run_id, load_file(str(path))))
    avg = average_weights(states)
    base = f.members()[0].resolved.final.model.base
    atomic_save_safetensors(avg, f.artifacts / WEIGHTS, metadata={"base": base, "averaged_from": ",".join(
        m.run_id for m in f.members())})
    log.info("folds: the mean of %d folds' weights (%d tensors) -> %s", len(states), len(avg),
             f.artifacts / WEIGHTS)


def _folds_markdown(title: str, metrics: dict) -> str:
    note = metrics["note"]
    lines = [f"# {title}", "", f"Out-of-fold: {metrics['n_valid_rows']} rows, each predicted by the one fold "
             "model that did not train on it.", "", "| | rows | log loss (final) | accuracy (final) |",
             "|---|---|---|---|"]
    for name, p in metrics["per_fold"].items():
        lines.append(f"| {name} ({p['run_id']}) | {p['n_rows']} | {p['final_log_loss']:.4f} | "
                     f"{p['final_accuracy']:.4f} |")
    lines.append(f"| **OOF** | {metrics['n_valid_rows']} | **{metrics['final_log_loss']:.4f}** | "
                 f"{metrics['final_accuracy']:.4f} |")
    lines += ["", f"Without TTA {metrics['log_loss']:.4f}, TTA mean {metrics['tta_log_loss']:.4f}.", "",
              f"`replicate predict` combines the fold models by {metrics['average']}. "
              f"{note[0].upper() + note[1:]}."]
    return "\n".join(lines) + "\n"


def combine_ensemble(e: EnsemblePlan, force: bool = False) -> tuple[Path, dict, bool]:
    """The ensemble's folder (reused when finished): the blend of the members' per-row predictions,
    its weights and the members' scores on the same rows."""

    with run_lock(e.run_dir, e.combo_id):
        if not force and _finished(e.run_dir, e.artifacts, False):
            log.info("%s is finished: reused", e.run_dir)
            return e.run_dir, json.loads((e.run_dir / "metrics.json").read_text()), True
        inputs = {name: (str(part.run_dir), _rowpreds(part.run_dir)) for name, part in e.parts.items()}
        preds, info = blend_members(e.specs, inputs, e.cfg, e.seed)
        summary = summarize_blend(preds, info)
        weights = " + ".join(f"{n} {w:.3g}" for n, w in info["weights"].items())
        variant = f"{e.name}{''.join(f' +{t}' for t in e.toggles)} ensemble {e.cfg.weights}: {weights}"
        blend = summary["blend"]
        metrics = {"run_id": e.combo_id, "recipe": e.name, "kind": "ensemble", "n_valid_rows": len(preds),
                   "log_loss": blend["log_loss"], "accuracy": blend["accuracy"],
                   "final_log_loss": blend["log_loss"], "final_accuracy": blend["accuracy"], **info,
                   "members": {n: p.unit()["run_id"] for n, p in e.parts.items()}, "summary": summary}
        members = [{"name": n, "unit": e.parts[n].unit(), "input": s.input,
                    "gate": dataclasses.asdict(s.gate) if s.gate else None} for n, s in e.specs.items()]
        combo = {"kind": "ensemble", "id": e.combo_id, "recipe": e.name, "version": VERSION,
                 "weights": info["weights"], "members": members}
        fingerprint_info = _fingerprint(e.combo_id, e.name, e.seed, "ensemble", variant, e.toggles,
                                        e.members())
        md = blend_markdown(variant, summary, info, e.cfg.fit_folds)
        _write(e.run_dir, preds, combo, fingerprint_info, metrics, {"ensemble.md": md})
    log.info("ensemble: %s (blend log loss %.4f on %d rows)", e.run_dir, metrics["final_log_loss"],
             len(preds))
    return e.run_dir, metrics, False


# ---------------------------------------------------------------- predict


def is_combination(run_dir: Path) -> bool:
    return (Path(run_dir) / COMBINATION).is_file()


def _info(run_dir: Path) -> dict:
    path = Path(run_dir) / COMBINATION
    check_reports(run_dir, run_manifest(run_dir), [COMBINATION])
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ReplicatorError(f"{path}: unreadable ({e}); rerun `replicate run` for its recipe") from None
    if not isinstance(info, dict) or info.get("kind") not in ("folds", "ensemble"):
        raise ReplicatorError(f"{path}: not a fold or ensemble combination (kind {info.get('kind')!r})")
    return info


def _unit_dir(unit: dict) -> Path:

    return find_run(str(reports_root() / unit["recipe"] / unit["run_id"]))


def _adapter_weights(info: dict) -> Path:

    return artifacts_root() / info["recipe"] / info["id"] / WEIGHTS


def check_combination(run_dir: Path) -> None:
    """Every run a combination predicts with is finished and has what ``predict`` reads (checked before
    a model loads)."""

    info = _info(run_dir)
    if info["kind"] == "folds":
        for r in info["runs"]:
            run_parts(_unit_dir(r))
        if info["average"] == "adapters":
            check_safetensors(_adapter_weights(info), f"averaged weights of {run_dir}")
            manifest = run_manifest(run_dir)
            check_artifacts(run_dir, manifest, _adapter_weights(info).parent, WEIGHTS)
            check_reports(run_dir, manifest, [ROW_PREDICTIONS])  # the OOF fit of postprocessing
        return
    for m in info["members"]:
        d = _unit_dir(m["unit"])
        check_combination(d) if m["unit"]["kind"] == "folds" else run_parts(d)


def predict_combination(run_dir: Path, rows: list[dict], progress: bool = True,
                        view: str = "final") -> np.ndarray:
    """(N, 3) probabilities of ``rows`` by a combination: the fold models combined by their ``average``,
    or the ensemble's members (each its ``input`` view: ``swapped`` members are fed A/B-swapped rows
    and their columns swapped back) blended with the ensemble's weights and gates."""

    info = _info(run_dir)
    if info["kind"] == "folds":
        return _predict_folds(Path(run_dir), info, rows, view, progress)
    chars = np.array([row_chars(r) for r in rows])
    probs, masks, weights = [], [], []
    for m in info["members"]:
        log.info("ensemble member %s: %s, input %s", m["name"], m["unit"]["run_id"], m["input"])
        probs.append(_unit_probs(m["unit"], rows, m["input"], progress))
        masks.append(gate_mask(chars, GateConfig(**m["gate"]) if m["gate"] else None))
        weights.append(info["weights"][m["name"]])
    return blend(probs, weights, masks)


def _unit_probs(unit: dict, rows: list[dict], view: str, progress: bool) -> np.ndarray:

    d = _unit_dir(unit)
    if unit["kind"] == "folds":
        return predict_combination(d, rows, progress, view)
    _, stage, artifacts = run_parts(d)
    return run_probs(d, stage, artifacts, rows, view, progress)


def _predict_folds(run_dir: Path, info: dict, rows: list[dict], view: str, progress: bool) -> np.ndarray:
    """``probs``: the mean of the fold runs' predictions; ``adapters``: one model with the averaged
    weights (postprocessing fitted on the OOF TTA predictions of the fold models)."""

    dirs = [_unit_dir(r) for r in info["runs"]]
    if info["average"] == "probs":
        return np.mean([run_probs(d, *run_parts(d)[1:], rows, view, progress) for d in dirs], axis=0)
    _, stage, first = run_parts(dirs[0])  # GPTQ: calibrated on the first fold's rows, as [R1] on fold 1's
    plugins = build_plugins(stage.plugins, str(dirs[0] / "resolved.yaml"), unused=stage.unused_hooks)
    model, tokenizer = load_predictor(stage, plugins, _adapter_weights(info), calibration_dir=first)
    oof = _rowpreds(run_dir)
    return model_probs(stage, plugins, model, tokenizer, rows, view, (oof.views["tta"], oof.labels), progress)
