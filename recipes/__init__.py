"""The shipped recipes (YAML files), installed with the package as ``replicator.recipes`` so that
``replicate run 2nd`` finds ``2nd.yaml`` from any folder (:mod:`replicator.core.config.recipe_files`)."""
