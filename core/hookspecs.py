"""The seams of a run. Each hookspec's first docstring line says what to return and how the results
of several plugins combine, and the marker says it too:

* ``one``   exactly one plugin of the recipe implements it (zero or two is a resolve-time error);
  ``@hookspec(firstresult=True)``;
* ``all``   every implementing plugin is called, results collected in recipe order (a ``None``
  result is left out, as pluggy does);
* ``chain`` implementing plugins are called in recipe order, each on the previous one's output.

The seven seams of a run are ``data_sources``, ``prompt_format``, ``head``, ``loss``, ``augment``,
``tta`` and ``postprocess``; ``data_files`` and ``data_check`` ask the data plugins, before
anything loads, which files they read (the data hash) and what is missing (a resolve-time error).
The training callbacks ``on_train_step``, ``on_evaluate`` and ``on_stage_end`` (:data:`CALLBACKS`) let a
plugin watch a run (its own tracker, alerts, early warnings); the runner's own tracking
(:mod:`replicator.core.util.tracking`) logs the same numbers.

Hooks are called through ``pm.hook.<name>`` by :class:`replicator.core.config.catalogue.Plugins`, never by
``getattr`` on a plugin: pluggy checks each implementation's arguments against these signatures
when a recipe's plugins are registered, and an implementation of a hook not declared here is a
resolve-time error. Rows use the common schema of :mod:`replicator.core.rows`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pluggy

if TYPE_CHECKING:  # heavy imports for the annotations only
    import numpy as np
    import torch

    from replicator.core.rows import DataContext, Encoded

PROJECT = "replicator"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

#: how each hook combines its implementations (checked by the manager at resolve time)
HOOK_KINDS: dict[str, str] = {
    "data_sources": "all",
    "data_files": "all",
    "data_check": "all",
    "prompt_format": "one",
    "head": "one",
    "loss": "one",
    "augment": "chain",
    "tta": "all",
    "postprocess": "chain",
    "on_train_step": "all",
    "on_evaluate": "all",
    "on_stage_end": "all",
}
#: the training callbacks: they observe a run (the runner calls them where a plugin implements them, on
#: the main process) and change none of its numbers
CALLBACKS = ("on_train_step", "on_evaluate", "on_stage_end")

#: a row of the common schema (:mod:`replicator.core.rows`)
Row = dict[str, Any]
#: ``loss_fn(logits, labels, batch) -> scalar tensor``
LossFn = Callable[["torch.Tensor", "torch.Tensor", dict], "torch.Tensor"]


class TTAView(Protocol):
    """A test-time view: ``apply`` changes a row, ``invert`` maps its predicted probabilities back."""

    name: str

    def apply(self, row: Row) -> Row: ...

    def invert(self, probs: np.ndarray) -> np.ndarray: ...


@hookspec
def data_sources(split: str, ctx: DataContext) -> list[Row] | None:
    """all: return a list of rows (common schema) for ``split`` ("train", "valid", "test" or "pool"), or None.

    Every data plugin is asked for every split; rows of all plugins are concatenated in recipe
    order. ``ctx`` is a :class:`replicator.core.rows.DataContext` (data dir, seed, stage outputs,
    and for ``train`` the already collected validation and test prompt groups, ``held_out_groups``,
    so extra data can be de-duplicated against them).
    ``pool`` rows are unlabelled; a stage with ``outputs: [pool]`` predicts them, and later
    stages find those predictions in ``ctx.stage_outputs[stage]["pool"]`` (pseudo-labels).
    A plugin that implements ``data_sources`` must implement ``data_files`` too.
    """


@hookspec
def data_files(data_dir: Path) -> list[Path]:
    """all: return the files this data plugin reads under ``data_dir`` (for the data hash); lists are
    concatenated in recipe order.

    Called at fingerprint time, before any row is read: the files the plugin's parameters select
    (a missing one is ``data_check``'s business); ``[]`` when the data comes from elsewhere (the
    hub, an earlier stage). Every ``data_sources`` plugin implements it, so that a changed file
    changes the run id.
    """


@hookspec
def data_check(data_dir: Path) -> list[str]:
    """all: return the problems that would stop this data plugin from loading (``[]`` when none), asked
    per plugin.

    One message per problem, naming the missing file and how to provide it
    (:func:`replicator.core.lib.sources.missing_data_message`). The manager asks each plugin on
    its own, so the resolve-time :class:`~replicator.core.errors.RecipeError` names its block.
    """


@hookspec(firstresult=True)
def prompt_format(row: Row, tokenizer: Any, max_length: int) -> Encoded:
    """one: return a :class:`replicator.core.rows.Encoded` (token ids + what was truncated) for one row.

    ``max_length`` is the token budget of the current phase (training or inference); the result
    must not exceed it.
    """


@hookspec(firstresult=True)
def head(hidden_size: int, num_labels: int, model: Any) -> torch.nn.Module | None:
    """one: return the ``nn.Module`` that maps the last token's hidden state to ``num_labels`` logits,
    or None to keep the model's own head.

    The module may return more than ``num_labels`` outputs (auxiliary heads); the first
    ``num_labels`` columns are the preference logits and only those are used at prediction. A
    module with auxiliary outputs defines ``aux_loss(logits, batch) -> scalar tensor``, a pure
    function of the logits and the batch that the runner adds to the ``loss`` hook's value in
    training (never at prediction).
    """


@hookspec(firstresult=True)
def loss() -> LossFn:
    """one: return a callable ``loss_fn(logits, labels, batch) -> scalar tensor``.

    ``logits`` has shape (B, >=3) (columns past 3 belong to auxiliary heads); ``labels`` is a
    float tensor (B, 3) of hard one-hot or soft probabilities; ``batch`` is a dict with ``rows``
    (the row dicts, e.g. ``row["teacher"][stage]`` = teacher probabilities from an earlier stage,
    ``row["model_a"]``), ``input_ids`` and ``attention_mask``.
    """


@hookspec
def augment(rows: list[Row], epoch: int, seed: int) -> list[Row]:
    """chain: return the list of training rows for ``epoch`` given the previous plugin's list.

    Called once per epoch, before batching. A plugin may add, replace or reorder rows; rows that
    must share an optimizer step carry the same ``pair`` key.
    """


@hookspec
def tta() -> list[TTAView]:
    """all: return a list of test-time views, objects with ``name``, ``apply(row) -> row`` and
    ``invert(probs) -> probs``.

    The identity view is always included by the runner; the inverted probabilities of all views
    are averaged.
    """


@hookspec
def postprocess(probs: np.ndarray, rows: list[Row], fit: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    """chain: return edited probabilities (numpy array N x 3) for ``rows``, given the previous plugin's
    output.

    ``fit`` is None, or a ``(probs, labels)`` pair of validation predictions from which a
    calibration plugin fits its parameters. ``fit`` holds the predictions *before* any
    postprocessing, so plugins that fit (temperature, Platt) belong first in the chain, and rule
    plugins after them. Output rows must stay probability vectors.
    """


@hookspec
def on_train_step(stage: str, step: int, metrics: dict[str, float]) -> None:
    """all: return None (results are ignored); called after each optimizer step of a training stage.

    ``step`` counts optimizer steps from 1; ``metrics`` holds ``loss`` (the step's mean loss over its
    micro-batches and processes), ``lr`` (the backbone's learning rate of the step; ``lr_head`` where the
    head has its own), ``grad_norm`` (before clipping; absent where the model is sharded without
    clipping), ``tokens`` (trained so far) and ``tokens_per_second`` (of this step). Called on the main
    process only, and only where a plugin of the stage implements it (the runner's own tracking does not
    need it). A callback observes: it must not change the model, the rows or any number of the run.
    """


@hookspec
def on_evaluate(stage: str, step: int, metrics: dict[str, float]) -> None:
    """all: return None (results are ignored); called after each periodic evaluation
    (``train.eval_every``) of a training stage.

    ``metrics`` holds ``valid_log_loss`` (the validation log loss without TTA at optimizer step ``step``)
    and ``best_valid_log_loss`` (the lowest so far, whose weights the stage keeps). Main process only.
    """


@hookspec
def on_stage_end(stage: str, results: dict) -> None:
    """all: return None (results are ignored); called once a stage is scored, before it is marked done.

    ``results`` is what the stage's ``done.json`` will hold: its log losses with and without TTA and after
    postprocessing, the baselines' on the same rows, the training summary (``train_loss_history``,
    ``optimizer_steps``, ...). Called for every stage that runs (a reused stage is not run), on the main
    process only.
    """
