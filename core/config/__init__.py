"""Recipes: YAML to a validated, resolved configuration, and the plugin catalogue (no torch here).

Modules (each imports only modules listed before it):

* :mod:`~replicator.core.config.patch` -- JSON merge patches and ``key.path=value`` overrides.
* :mod:`~replicator.core.config.catalogue` -- every plugin by name, the per-stage plugin manager.
* :mod:`~replicator.core.config.canonical` -- the complete config, its hash, the run key.
* :mod:`~replicator.core.config.sections` -- the ``folds:`` and ``ensemble:`` sections and their checks.
* :mod:`~replicator.core.config.toggles` -- shared toggles: applying the ones the plugins declare.
* :mod:`~replicator.core.config.recipe_files` -- a recipe by path, or a shipped recipe by name.
* :mod:`~replicator.core.config.recipe` -- :func:`~replicator.core.config.recipe.resolve`: the
  sections of a recipe (model, train, predict, launch, stages) checked and resolved.
"""
