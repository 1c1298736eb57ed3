"""arena-replicator core: hookspecs, recipes, plugin manager, data, model, runner, CLI.

Heavy libraries (torch, transformers) are imported inside functions only, so that the CLI's
``--help``, ``show`` and ``plugins`` and all recipe validation stay fast.
"""
