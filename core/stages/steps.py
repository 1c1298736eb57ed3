"""The steps of a stage, each with its own key: training, stage outputs, one prediction per view,
postprocessing.

A run's id covers everything (:mod:`replicator.core.run.fingerprint`); a variant differs from its base
in one place, and recomputes only from the first step that place touches:

* **train** key: the run's code, data, seed and environment (the run key without the config), the
  stage's ``model`` and ``train`` sections, the training part of each plugin block (data, prompt,
  head, loss, augment; see below), ``from``/``reinit_head``, the train key of the ``from`` stage
  and the outputs keys of the earlier stages whose outputs it reads; with ``train.eval_every`` the
  ``predict`` section too (the periodic evaluation picks the weights). Trained weights, the
  checkpoint and the training results live in ``artifacts/<recipe>/steps/<stage>-train-<key>/``.
* **outputs** key (``outputs:`` stages): train key + the prediction settings (without
  ``load_in_8bit``/``merge_lora``: outputs come from the model in the precision it trained in) + the
  TTA parameters: ``outputs-<key>.json`` beside the weights.
* **view** key, one per TTA view: train key + the ``predict`` section + the view (its plugin's
  prediction parameters and the view object): ``<stage>-view-<key>.json``, the validation rows'
  ids and probabilities in the original A/B order.
* **postprocess**: the run id itself; it is recomputed in every run from the cached views (a
  cross-fitted calibration on a few hundred rows takes milliseconds).

So ``-t tta`` (swap TTA off) on a finished run trains nothing and predicts nothing (its identity
view is the base's), ``-t temperature`` recomputes the postprocessing only, ``-t int8_inference``
costs one prediction pass per view, and ``-t focal`` retrains.

Which step a plugin parameter belongs to: a plugin whose hooks are all ``postprocess`` is
postprocessing, one whose hooks are within ``tta`` + ``postprocess`` is prediction, any other
(data, prompt, head, loss, augment) is training, except parameters declared
``param(..., step="predict"|"postprocess")`` (swap_ab's ``test_time``). A parameter put in too
early a step only costs a recomputation; one put in too late would reuse a stale result, so the
default is the earliest step the plugin's hooks touch.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np

from replicator.core.config.canonical import hash_of, plain, run_key
from replicator.core.config.catalogue import catalogue, plugin_hooks
from replicator.core.config.recipe import Resolved, StageConfig
from replicator.core.params import build
from replicator.core.predict.views import view_owners
from replicator.core.stages import baseline as baselines
from replicator.core.util import atomic  # atomic_path through its module: failure-injection tests replace it
from replicator.core.util.atomic import atomic_write_text
from replicator.core.util.distributed import is_main

log = logging.getLogger(__name__)

TRAIN, PREDICT, POSTPROCESS = "train", "predict", "postprocess"
#: predict fields that do not change what ``outputs:`` are computed with (outputs come before the
#: 8-bit reload)
INFERENCE_PRECISION = ("load_in_8bit", "merge_lora", "quantizer", "gptq_calibration_rows")


def lm_stage(stage: StageConfig) -> bool:
    """Whether the stage fine-tunes a language model (baselines and frozen-feature stages have their
    own caches)."""

    return not (baselines.is_baseline(stage.model.base) or stage.model.features)


def plugin_parts(stage: StageConfig, file: str, cat=None) -> dict[str, list]:
    """``{step: [[alias, {use, parameters of that step}], ...]}`` in recipe order (chains run in that
    order)."""

    cat = catalogue() if cat is None else cat
    out: dict[str, list] = {TRAIN: [], PREDICT: [], POSTPROCESS: []}
    for alias, block in (stage.plugins or {}).items():
        cls = cat[block["use"]]
        hooks = set(plugin_hooks(cls))
        default = (POSTPROCESS if hooks <= {"postprocess"} else PREDICT if hooks <= {"tta", "postprocess"}
                   else TRAIN)
        inst = build(cls, block, file, f"plugins.{alias}", ignore=("use",))
        parts: dict[str, dict] = {TRAIN: {}, PREDICT: {}, POSTPROCESS: {}}
        for f in dataclasses.fields(inst):
            if f.init and not f.name.startswith("_"):
                parts[f.metadata.get("step", default)][f.name] = plain(getattr(inst, f.name))
        for step, fields in parts.items():
            if fields or step == default:
                out[step].append([alias, {"use": block["use"], **fields}])
    return out


@dataclasses.dataclass
class StageKeys:
    train: str
    outputs: str | None
    #: what every view key of the stage starts from (:func:`view_key`)
    predict: str


def stage_keys(resolved: Resolved, fingerprint_info: dict) -> dict[str, StageKeys]:
    """The step keys of every LM stage of the run whose fingerprint is ``fingerprint_info``."""

    cat = catalogue()
    run = {k: v for k, v in run_key(fingerprint_info).items() if k != "config_hash"}
    keys: dict[str, StageKeys] = {}
    for stage in resolved.stages:
        if not lm_stage(stage):
            continue
        parts = plugin_parts(stage, resolved.file, cat)
        predict = plain(stage.predict)
        train_cfg = {"model": plain(stage.model), "train": plain(stage.train), "plugins": parts[TRAIN],
                     "from": stage.from_stage, "reinit_head": stage.reinit_head}
        if stage.train.eval_every:
            train_cfg["predict"] = {k: v for k, v in predict.items() if k not in INFERENCE_PRECISION}
        earlier = [s for s in resolved.stages[:resolved.stages.index(stage)] if s.outputs]
        deps = {"from": keys[stage.from_stage].train if stage.from_stage in keys else stage.from_stage,
                "outputs": [[s.name, keys[s.name].outputs if s.name in keys else None] for s in earlier]}
        train = hash_of({"run": run, "stage": train_cfg, "deps": deps})
        outputs = hash_of({"train": train, "outputs": list(stage.outputs), "tta": parts[PREDICT],
                           "predict": {k: v for k, v in predict.items() if k not in INFERENCE_PRECISION}}
                          ) if stage.outputs else None
        keys[stage.name] = StageKeys(train, outputs, hash_of({"train": train, "predict": predict}))
    return keys


def view_key(keys: StageKeys, owner: list | None, view) -> str:
    """The key of one TTA view's predictions: the stage's predict key, the prediction parameters of the
    plugin block that made the view (``[alias, {use, ...}]``; None for the identity view) and the view."""
    text = (repr(view) if dataclasses.is_dataclass(view)
            else f"{type(view).__module__}.{type(view).__qualname__}")
    return hash_of({"predict": keys.predict, "owner": owner, "view": text, "name": view.name})


def steps_root(artifacts: Path) -> Path:
    """``artifacts/<recipe>/steps`` for a run's artifacts folder ``artifacts/<recipe>/<run_id>``."""
    return artifacts.parent / "steps"


def train_dir(artifacts: Path, stage: StageConfig, keys: StageKeys) -> Path:
    return steps_root(artifacts) / f"{stage.name}-train-{keys.train[:16]}"


def folds_dir(artifacts: Path, stage: StageConfig, keys: StageKeys) -> Path:
    """Where a cross-fitted stage keeps its folds: under its training key, by its predict section (the folds'
    cached states and probe are computed with it), so that a variant that changes only TTA or
    postprocessing reuses the folds' weights."""
    return train_dir(artifacts, stage, keys) / f"crossfit-{keys.predict[:12]}"


def outputs_file(artifacts: Path, stage: StageConfig, keys: StageKeys) -> Path:
    return train_dir(artifacts, stage, keys) / f"outputs-{keys.outputs[:16]}.json"


def link(src: Path, dst: Path) -> None:
    """``dst`` with ``src``'s content: a hard link (no copy of the weights), a copy across file systems;
    written as every atomic write is (:func:`replicator.core.util.atomic.atomic_path`)."""

    with atomic.atomic_path(dst) as tmp:
        tmp.unlink()
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copy2(src, tmp)


def forget(artifacts: Path, resolved: Resolved, keys: dict[str, StageKeys]) -> None:
    """``--force``: the cached steps of this run's stages go too (the train folders with their
    checkpoints and outputs, the view predictions), so that everything is recomputed."""
    root = steps_root(artifacts)
    for stage in resolved.stages:
        k = keys.get(stage.name)
        if k is None:
            continue
        shutil.rmtree(train_dir(artifacts, stage, k), ignore_errors=True)
        for f in root.glob(f"{stage.name}-view-*.json"):
            try:
                if json.loads(f.read_text()).get("predict") == k.predict:
                    f.unlink()
            except (OSError, ValueError):
                f.unlink(missing_ok=True)


class ViewStore:
    """The cached predictions of one stage's views on its validation rows. Which views are cached is
    decided once, when the store is made (every process looks before any writes: the caller's barrier)."""

    def __init__(self, artifacts: Path, stage: StageConfig, keys: StageKeys, plugins, ids: list[str]):
        self.folder, self.stage, self.keys, self.ids = steps_root(artifacts), stage, keys, list(ids)
        self.owners = view_owners(plugins)
        self.found: dict[str, np.ndarray] = {}
        self.reused: list[str] = []
        for name in self.owners:
            got = self._read(self.path(name))
            if got is not None:
                self.found[name] = got

    def key(self, name: str) -> str:
        owner, view = self.owners[name]
        return view_key(self.keys, owner, view)

    def path(self, name: str) -> Path:
        return self.folder / f"{self.stage.name}-view-{self.key(name)[:16]}.json"

    def _read(self, path: Path) -> np.ndarray | None:
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text())
            probs = np.asarray(data["probs"], dtype=np.float64)
        except (OSError, ValueError, KeyError) as e:
            log.warning("%s is unreadable (%s): predicting again", path, e)
            return None
        if data.get("ids") != self.ids or probs.shape != (len(self.ids), 3):
            log.warning("%s holds other rows than the stage's %d validation rows: predicting again", path,
                        len(self.ids))
            return None
        return probs

    def load(self, name: str) -> np.ndarray | None:
        got = self.found.get(name)
        if got is not None:
            self.reused.append(name)
            log.info("stage %s: predictions of view %s reused (%s)", self.stage.name, name,
                     self.path(name).name)
        return got

    def save(self, name: str, probs: np.ndarray) -> None:

        if is_main():
            atomic_write_text(self.path(name), json.dumps({"stage": self.stage.name, "view": name,
                                                           "predict": self.keys.predict, "ids": self.ids,
                                                           "probs": np.asarray(probs).tolist()}))
