"""The three kinds of stage and how their work is cached.

* :mod:`~replicator.core.stages.result` -- :class:`~replicator.core.stages.result.StageResult`, what
  every stage kind returns.
* :mod:`~replicator.core.stages.baseline` -- baselines (uniform, prior, length regression).
* :mod:`~replicator.core.stages.frozen_features` -- a frozen backbone read once, a small head learns.
* :mod:`~replicator.core.stages.steps` -- the steps of a fine-tuning stage, each with its own key, so
  that a variant recomputes only from its first changed step.

The fine-tuning stage itself (train, outputs, predict, postprocess) is run by
:mod:`replicator.core.run.pipeline`, which owns the run's state.
"""
