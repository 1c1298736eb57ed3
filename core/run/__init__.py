"""Running recipes: stages in order, fold and ensemble combinations, ablations, plans and submissions.

Modules (each imports only modules listed before it):

* :mod:`~replicator.core.run.fingerprint` -- everything that can change a number, hashed into the run id.
* :mod:`~replicator.core.run.pipeline` -- :func:`~replicator.core.run.pipeline.run_recipe`: a run's
  stages in order, reuse of finished work.
* :mod:`~replicator.core.run.folds` / :mod:`~replicator.core.run.ensemble` -- pure functions over
  per-row predictions (out-of-fold rows, averaged weights, blends).
* :mod:`~replicator.core.run.finished_runs` -- what a finished run predicts on new rows.
* :mod:`~replicator.core.run.combination` -- running and predicting ``folds:`` and ``ensemble:``.
* :mod:`~replicator.core.run.submission` -- ``replicate predict``.
* :mod:`~replicator.core.run.ablate` -- ``replicate ablate``.
* :mod:`~replicator.core.run.resources` -- ``replicate plan``: memory, tokens and steps at full size.
"""
