"""Loading finished runs for a report and grouping them into variants.

Runs whose resolved config is the same except for the seed are seeds of one *variant* (or the
``variant`` key of ``fingerprint.json`` names it); the base run's variant comes first. Without a base
given, the base is the variant with the fewest toggles (a plain run before a fold or ensemble combination,
then the one with the most seeds): :func:`pick_base`, never the first folder in alphabetical order.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import yaml

from replicator.core.errors import ReplicatorError
from replicator.core.scoring.row_predictions import RowPreds, read_row_predictions
from replicator.core.scoring.stats import row_log_loss
from replicator.core.util.layout import FAILED, FINGERPRINT, METRICS, RESOLVED, ROW_PREDICTIONS
from replicator.core.util.manifest import check_reports, run_manifest

#: the prediction view a run is judged by: the first of these that its predictions have
VIEW_PREFERENCE = ("final", "tta", "identity")


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
    #: the resolved config (``resolved.yaml``), None for a combination folder that has none
    config: dict | None = None

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
        """Training tokens over the stages; None for a run that trained no LM (a frozen-feature or baseline
        run records 0): a report shows "—" there, not 0."""
        tokens = self._stage_total("train_tokens")
        return tokens or None

    @property
    def toggles(self) -> list[str]:
        return [str(t) for t in self.fingerprint.get("toggles") or []]

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


def _without_nulls(value):
    """``value`` without the mapping keys whose value is null, at every depth: a setting added to the code
    after a run was made is absent from its ``resolved.yaml`` and null (off) in a newer run's, and the two
    runs are the same variant (a setting added with another default is not dropped: it tells them apart)."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _variant_of(path: Path, fingerprint_info: dict) -> tuple[str, str, dict | None]:
    """(key, display name, resolved config): runs with the same key are seeds of one variant."""
    if fingerprint_info.get("variant"):
        return (f"variant:{fingerprint_info['recipe']}:{fingerprint_info['variant']}",
                str(fingerprint_info["variant"]), None)
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
    unseeded = _without_nulls({k: v for k, v in cfg.items() if k != "seed"})
    key = hashlib.sha256(json.dumps(unseeded, sort_keys=True, default=str).encode()).hexdigest()[:12]
    toggles = fingerprint_info.get("toggles") or []
    name = fingerprint_info.get("recipe", "?") + "".join(f" +{t}" for t in toggles)
    return f"config:{key}", name, cfg


def refuse_failed(path: Path) -> None:
    """A run folder holding ``failed.json`` is not a result: a ReplicatorError naming it."""
    if (Path(path) / FAILED).exists():
        raise ReplicatorError(f"{Path(path) / FAILED}: the last attempt of run {path} failed, so the folder "
                              "is not a result; rerun `replicate run` for it, or leave it out of the report")


def load_run(path: Path) -> Run:
    """A finished run's numbers, every file read checked against its ``manifest.json`` first (a damaged one
    refused, named); a run made before manifests is read with a warning (``unverified``)."""
    path = Path(path)
    refuse_failed(path)
    if not (path / METRICS).is_file():
        raise ReplicatorError(f"{path / METRICS}: missing: {path} is not a finished run "
                              "(run `replicate run` for it first)")
    manifest = run_manifest(path)
    check_reports(path, manifest, [FINGERPRINT, METRICS, ROW_PREDICTIONS, RESOLVED])
    fingerprint_info = _read_json(path / "fingerprint.json")
    for k in ("run_id", "recipe", "seed"):
        if k not in fingerprint_info:
            raise ReplicatorError(f"{path / 'fingerprint.json'}: no {k!r}")
    metrics = _read_json(path / "metrics.json")
    preds_file = path / ROW_PREDICTIONS
    preds = read_row_predictions(preds_file) if preds_file.exists() else None
    key, name, cfg = _variant_of(path, fingerprint_info)
    return Run(path=path, run_id=str(fingerprint_info["run_id"]), recipe=str(fingerprint_info["recipe"]),
               seed=fingerprint_info["seed"], fingerprint=fingerprint_info, metrics=metrics, preds=preds,
               variant_key=key, variant_name=name, config=cfg)


def discover_runs(paths: list[Path]) -> list[Path]:
    """Run folders (holding ``fingerprint.json``) among ``paths`` and below them, in a stable order."""
    out: list[Path] = []
    for p in map(Path, paths):
        refuse_failed(p)
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


def load_runs(run_dirs: list[Path], base: Path | None,
              names: dict[str, str] | None = None) -> tuple[list[Run], Run]:
    """The runs of ``run_dirs`` and the base run (``base``, loaded too when not among them; default:
    :func:`pick_base`). ``names``: run id -> the display name of its variant (``replicate ablate --vary``
    names its variants by their override)."""
    if not run_dirs:
        raise ReplicatorError("no runs to compare")
    runs = [load_run(d) for d in run_dirs]
    for r in runs:
        if names and r.run_id in names:
            r.variant_name = names[r.run_id]
    if base is None:
        return runs, pick_base(runs, ablation_bases(runs))
    base_path = Path(base).resolve()
    base_run = next((r for r in runs if r.path.resolve() == base_path), None)
    if base_run is None:
        base_run = load_run(Path(base))
        runs.insert(0, base_run)
    return runs, base_run


@dataclasses.dataclass
class Variant:
    key: str
    name: str
    runs: list[Run]  # by seed

    @property
    def seeds(self) -> list:
        return [r.seed for r in self.runs]


def _base_rank(v: Variant, order: int, hints: frozenset[str] = frozenset()) -> tuple:
    """How a variant ranks as the base: fewest toggles, one that an ablation ran as its base (``hints``),
    a plain run before a combination folder (fold or ensemble), most seeds, then the order found."""
    first = v.runs[0]
    ablated = any(r.run_id in hints for r in v.runs)
    return len(first.toggles), not ablated, bool(first.fingerprint.get("variant")), -len(v.runs), order


def ablation_bases(runs: list[Run]) -> frozenset[str]:
    """The run ids that a ``replicate ablate`` beside these runs used as its base (the ``ablation.json`` of
    each ``reports/<recipe>/ablation-*/`` folder next to them): with ``--vary`` the base and its variants have
    the same toggles, and this tells them apart."""
    found: set[str] = set()
    for folder in sorted({r.path.parent for r in runs}):
        for f in sorted(folder.glob("*/ablation.json")):
            try:
                info = json.loads(f.read_text(encoding="utf-8"))
                found |= {str(x["run_id"]) for x in info.get("runs") or [] if x.get("variant") == "base"}
            except (OSError, ValueError, TypeError, KeyError, AttributeError):
                continue
    return frozenset(found)


def pick_base(runs: list[Run], hints: frozenset[str] = frozenset()) -> Run:
    """The base run when none is given: the first run (lowest seed) of the variant with the fewest toggles
    (``smoke +tiny`` before ``smoke +tiny +swap:off``), one an ablation ran as its base (``hints``), a plain
    run before a combination, then the variant with the most seeds; the order found only breaks the
    remaining ties."""
    variants = group_variants(runs, runs[0])
    best = min(enumerate(variants), key=lambda kv: _base_rank(kv[1], kv[0], hints))[1]
    return best.runs[0]


def base_ties(variants: list[Variant]) -> list[Variant]:
    """The other variants that rank like ``variants[0]`` as the base (a note says the choice was a tie)."""
    hints = ablation_bases([r for v in variants for r in v.runs])
    rank = _base_rank(variants[0], 0, hints)[:4]
    return [v for v in variants[1:] if _base_rank(v, 0, hints)[:4] == rank]


def group_variants(runs: list[Run], base_run: Run) -> list[Variant]:
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
