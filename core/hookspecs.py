"""The seven seams of a run. Each hookspec's first docstring line says what to return and how the
results of several plugins combine:

* ``one``   exactly one plugin of the recipe implements it (zero or two is a resolve-time error);
* ``all``   every implementing plugin is called, results collected in recipe order;
* ``chain`` implementing plugins are called in recipe order, each on the previous one's output.

Rows use the common schema of :mod:`replicator.core.rows`.
"""

from __future__ import annotations

import pluggy

PROJECT = "replicator"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

#: how each hook combines its implementations (checked by the manager at resolve time)
HOOK_KINDS: dict[str, str] = {
    "data_sources": "all",
    "prompt_format": "one",
    "head": "one",
    "loss": "one",
    "augment": "chain",
    "tta": "all",
    "postprocess": "chain",
}


@hookspec
def data_sources(split, ctx):
    """all: return a list of rows (common schema) for ``split`` ("train", "valid", "test" or "pool"), or None.

    Every data plugin is asked for every split; rows of all plugins are concatenated in recipe
    order. ``ctx`` is a :class:`replicator.core.rows.DataContext` (data dir, seed, stage outputs,
    and for ``train`` the already collected validation and test prompt groups, ``held_out_groups``,
    so extra data can be de-duplicated against them).
    ``pool`` rows are unlabelled; a stage with ``outputs: [pool]`` predicts them, and later
    stages find those predictions in ``ctx.stage_outputs[stage]["pool"]`` (pseudo-labels).
    """


@hookspec
def prompt_format(row, tokenizer, max_length):
    """one: return a :class:`replicator.core.rows.Encoded` (token ids + what was truncated) for one row.

    ``max_length`` is the token budget of the current phase (training or inference); the result
    must not exceed it.
    """


@hookspec
def head(hidden_size, num_labels, model):
    """one: return the ``nn.Module`` that maps the last token's hidden state to ``num_labels`` logits, or None to keep the model's own head.

    The module may return more than ``num_labels`` outputs (auxiliary heads); the first
    ``num_labels`` columns are the preference logits and only those are used at prediction. A
    module with auxiliary outputs defines ``aux_loss(logits, batch) -> scalar tensor``, a pure
    function of the logits and the batch that the runner adds to the ``loss`` hook's value in
    training (never at prediction).
    """


@hookspec
def loss():
    """one: return a callable ``loss_fn(logits, labels, batch) -> scalar tensor``.

    ``logits`` has shape (B, >=3) (columns past 3 belong to auxiliary heads); ``labels`` is a
    float tensor (B, 3) of hard one-hot or soft probabilities; ``batch`` is a dict with ``rows``
    (the row dicts, e.g. ``row["teacher"][stage]`` = teacher probabilities from an earlier stage,
    ``row["model_a"]``), ``input_ids`` and ``attention_mask``.
    """


@hookspec
def augment(rows, epoch, seed):
    """chain: return the list of training rows for ``epoch`` given the previous plugin's list.

    Called once per epoch, before batching. A plugin may add, replace or reorder rows; rows that
    must share an optimizer step carry the same ``pair`` key.
    """


@hookspec
def tta():
    """all: return a list of test-time views, objects with ``name``, ``apply(row) -> row`` and ``invert(probs) -> probs``.

    The identity view is always included by the runner; the inverted probabilities of all views
    are averaged.
    """


@hookspec
def postprocess(probs, rows, fit):
    """chain: return edited probabilities (numpy array N x 3) for ``rows``, given the previous plugin's output.

    ``fit`` is None, or a ``(probs, labels)`` pair of validation predictions from which a
    calibration plugin fits its parameters. ``fit`` holds the predictions *before* any
    postprocessing, so plugins that fit (temperature, Platt) belong first in the chain, and rule
    plugins after them. Output rows must stay probability vectors.
    """
