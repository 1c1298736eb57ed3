"""Live experiment tracking through accelerate's trackers: TensorBoard, Weights & Biases or MLflow.

Which one a run uses is the recipe's top-level ``tracking:`` (``tensorboard``, ``wandb``, ``mlflow``,
``none``, or ``auto``, the default: ``tensorboard`` where the ``tensorboard`` package is installed, else
``none``), set on the command line with ``replicate run --track KIND`` (an override of ``tracking``).
Tracking observes a run and changes none of its numbers, so it is not part of the run id: the complete
config that the run id hashes (:func:`replicator.core.config.canonical.complete_config`) holds the stages'
sections and plugins, never ``tracking``.

What is logged, per stage (the main process only; nothing when the stage is reused):

* ``train/loss``, ``train/lr`` (and ``train/lr_head`` where the head has its own), ``train/grad_norm``
  (before clipping), ``train/tokens`` (so far) and ``train/tokens_per_second`` after each optimizer step;
* ``eval/valid_log_loss`` and ``eval/best_valid_log_loss`` at each ``train.eval_every`` evaluation;
* ``final/<key>`` for every number of the stage's results (log loss with and without TTA, the baselines...)
  once the stage is scored, at its last optimizer step;
* the resolved config, flattened (``train.lr``, ``plugins.loss.use``...), with the run id, recipe, stage
  and toggles, as the tracker's hyper-parameters (TensorBoard's hparams, MLflow's params, W&B's config).

Where: under the run's artifacts folder, ``artifacts/<recipe>/<run_id>/tracking/``: ``tensorboard/<stage>/``
(event files: ``tensorboard --logdir artifacts/<recipe>``), ``mlflow.db`` and ``mlartifacts/`` (MLflow's local
store, its SQLite file: ``mlflow ui --backend-store-uri sqlite:///artifacts/<recipe>/<run_id>/tracking/mlflow.db``;
MLflow 3 keeps its ``./mlruns`` file store in maintenance mode, and it refuses runs under a folder named
``artifacts``; ``MLFLOW_TRACKING_URI`` set sends the runs to that server instead; the experiment is the
recipe's name, the run ``<run_id>/<stage>``), ``wandb/``
(W&B's local files; the project is the recipe's name, the run ``<run_id>/<stage>``, grouped by run id;
offline unless ``WANDB_API_KEY`` or ``WANDB_MODE`` says otherwise). A tracker that fails (not logged in, a
full disk) logs one warning and the stage goes on untracked: tracking never costs a run.
"""

from __future__ import annotations

import contextvars
import importlib.util
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from replicator.core.errors import RecipeError
from replicator.core.util.logs import captured, import_quietly

log = logging.getLogger(__name__)

#: the recipe's top-level key
SETTING = "tracking"
#: the trackers, and ``none``
KINDS = ("tensorboard", "wandb", "mlflow", "none")
#: the default: tensorboard where installed, else none
AUTO = "auto"
#: the folder under a run's artifacts folder
FOLDER = "tracking"
#: the package each tracker needs, and how to get it
PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}
INSTALL = 'pip install "arena-replicator[track]" (tensorboard and mlflow-skinny) or pip install wandb'


def installed(kind: str) -> bool:
    """Whether the package ``kind`` needs is importable (``none`` always is)."""
    package = PACKAGES.get(kind)
    return package is None or importlib.util.find_spec(package) is not None


def check(setting: Any, file: str) -> None:
    """A recipe's ``tracking:`` value is a known kind whose package is installed, else a RecipeError naming
    the key, before anything runs."""
    if setting is None or setting == AUTO:
        return
    if setting not in KINDS:
        raise RecipeError(file, SETTING, f"unknown tracker {setting!r}; known: {AUTO}, {', '.join(KINDS)}")
    if not installed(setting):
        raise RecipeError(file, SETTING, f"{setting}: the {PACKAGES[setting]} package is not installed "
                                         f"({INSTALL}); or choose none")


def choose(setting: Any) -> str:
    """The tracker a run uses: the recipe's ``tracking:``, ``auto`` (or none given) meaning tensorboard where
    it is installed, else none."""
    if setting is None or setting == AUTO:
        return "tensorboard" if installed("tensorboard") else "none"
    return str(setting)


def mlflow_uri(folder: Path) -> str:
    """The tracking URI of the MLflow store in a run's ``tracking/`` folder: ``sqlite:///<folder>/mlflow.db``."""
    return f"sqlite:///{(Path(folder) / 'mlflow.db').resolve()}"


def flat_config(config: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as ``{"train.lr": 1e-4, ...}``: numbers, strings and booleans as they are, None as
    ``"null"``, lists as JSON (what every tracker's hyper-parameters take)."""
    out: dict[str, Any] = {}
    if isinstance(config, dict):
        for k, v in config.items():
            out.update(flat_config(v, f"{prefix}{k}."))
        return out
    key = prefix.rstrip(".")
    if config is None:
        out[key] = "null"
    elif isinstance(config, (bool, int, float, str)):
        out[key] = config
    else:
        out[key] = json.dumps(config, default=str)
    return out


def numbers(values: dict, prefix: str = "") -> dict[str, float]:
    """The finite numbers of ``values`` (booleans and everything else left out), keys prefixed."""
    return {f"{prefix}{k}": float(v) for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


class Tracker:
    """The tracker of one stage of one run (accelerate's ``TensorBoardTracker``, ``WandBTracker`` or
    ``MLflowTracker``), started on the first :meth:`log`: a stage that fails its data checks or is reused
    writes nothing. Inactive for ``none`` and in every process but the main one."""

    def __init__(self, kind: str, folder: Path, run_id: str, recipe: str, stage: str,
                 config: dict | None = None, main: bool = True):
        self.kind, self.folder, self.run_id = kind, Path(folder), run_id
        self.recipe, self.stage = recipe, stage
        self.config = config or {}
        self.main = main
        self.trackers: list = []
        self.started = self.broken = False
        #: the last step logged; a stage that trains several times (cross-fitted folds) logs each training's
        #: steps after the previous one's (:meth:`next_training`)
        self.last_step = 0
        self._token = None

    def next_training(self) -> int:
        """The step offset of a training that starts now: 0 for the stage's first, else the last step
        logged."""
        return self.last_step

    @property
    def active(self) -> bool:
        return self.kind != "none" and self.main and not self.broken

    def _new(self):
        """accelerate's tracker of :attr:`kind`, not started."""
        from accelerate import tracking

        name = f"{self.run_id}/{self.stage}"
        if self.kind == "tensorboard":
            import_quietly("torch.utils.tensorboard")  # tensorboard's import notes (no TensorFlow) go to -v
            return tracking.TensorBoardTracker(self.stage, self.folder / "tensorboard")
        if self.kind == "mlflow":
            artifacts = None
            if not os.environ.get("MLFLOW_TRACKING_URI"):
                import mlflow

                # MLflow's local store in the run's folder: its SQLite file (the ./mlruns file store is in
                # maintenance mode in MLflow 3, and refuses runs under a folder named "artifacts")
                self.folder.mkdir(parents=True, exist_ok=True)
                mlflow.set_tracking_uri(mlflow_uri(self.folder))
                artifacts = (self.folder / "mlartifacts").resolve().as_uri()
            return tracking.MLflowTracker(experiment_name=self.recipe, logging_dir=artifacts, run_name=name,
                                          tags={"run_id": self.run_id, "stage": self.stage})
        if self.kind == "wandb":
            (self.folder / "wandb").mkdir(parents=True, exist_ok=True)
            mode = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY")
                                                    else "offline")
            return tracking.WandBTracker(self.recipe, name=name, group=self.run_id,
                                         dir=str(self.folder / "wandb"), mode=mode)
        raise ValueError(f"unknown tracker {self.kind!r}; known: {', '.join(KINDS)}")

    def _start(self) -> None:
        self.started = True
        tracker = self._new()
        with captured(f"start the {self.kind} tracker"):  # MLflow's database set-up, W&B's banner: -v
            tracker.start()
        self.trackers = [tracker]
        tracker.store_init_configuration(flat_config(self.config))
        if self.kind == "tensorboard":  # the run id on TensorBoard's text tab too (the others: a tag)
            tracker.log({"run_id": self.run_id}, step=0)
        log.info("stage %s: tracking with %s in %s", self.stage, self.kind,
                 os.environ.get("MLFLOW_TRACKING_URI") if self.kind == "mlflow" and
                 os.environ.get("MLFLOW_TRACKING_URI") else self.folder)

    def _guarded(self, what: str, fn) -> None:
        try:
            fn()
        except Exception as e:  # tracking never costs a run
            self.broken = True
            log.warning("stage %s: %s tracking off (%s: %s: %s)", self.stage, self.kind, what,
                        type(e).__name__, e)
            log.debug("the tracker's traceback", exc_info=e)

    def log(self, values: dict, step: int, prefix: str = "") -> None:
        """Log the finite numbers of ``values`` (keys prefixed) at ``step``."""
        if not self.active:
            return
        if not self.started:
            self._guarded("start", self._start)
        scalars = numbers(values, prefix)
        self.last_step = max(self.last_step, step)
        if scalars and self.active:
            self._guarded("log", lambda: [t.log(scalars, step=step) for t in self.trackers])

    def finish(self) -> None:
        if self.started and self.trackers:
            trackers, self.trackers = self.trackers, []
            for t in trackers:
                try:
                    with captured(f"close the {self.kind} tracker"):
                        t.finish()
                except Exception as e:  # the stage's results are written: a warning only
                    log.warning("stage %s: closing the %s tracker failed (%s: %s)", self.stage, self.kind,
                                type(e).__name__, e)

    def __enter__(self) -> Tracker:
        self._token = _CURRENT.set(self)
        return self

    def __exit__(self, *exc) -> None:
        if self._token is not None:
            _CURRENT.reset(self._token)
            self._token = None
        self.finish()


#: the tracker of code that runs outside a run (tests calling the trainer): logs nothing
NO_TRACKER = Tracker("none", Path("."), "", "", "")
_CURRENT: contextvars.ContextVar[Tracker] = contextvars.ContextVar("replicator_tracker", default=NO_TRACKER)


def current() -> Tracker:
    """The tracker of the stage running (inside its ``with`` block), else :data:`NO_TRACKER`: what a training
    called without one logs to (a cross-fitted stage's folds)."""
    return _CURRENT.get()
