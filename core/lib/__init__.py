"""The helper library of the plugins: plain functions several plugins share (not a plugin folder).

Plugins never import each other and never inherit from each other or from a base class; what
more than one of them needs lives here, as functions (and small value types) they call:

* :mod:`~replicator.core.lib.truncation` -- turn-aware layout and truncation of the prompt
  formats, and the ``truncate`` / ``budgets`` parameters they each declare.
* :mod:`~replicator.core.lib.sources` -- loading, caching, file discovery, hard labels and the
  "missing data" message and error of the data-source plugins.
* :mod:`~replicator.core.lib.conversations` -- role/content conversations to turns, turn padding.
* :mod:`~replicator.core.lib.losses` -- what the loss plugins share (the preference logits).
* :mod:`~replicator.core.lib.plugin_index` -- plugin classes by catalogue name (built-ins and entry
  points), for a plugin that uses another one by name (``pseudo_labels``' ``source``).
* :mod:`~replicator.core.lib.full_size` -- what a plugin tells ``replicate plan`` about full-size
  rows (``full_size_rows``, ``train_copies``).
* :mod:`~replicator.core.lib.toggles` -- declaring a shared toggle in a plugin module
  (``SHARED_TOGGLES``: :class:`~replicator.core.lib.toggles.SharedToggle`, ``NotApplicable``).

Nothing here imports torch, numpy or pandas at module level.
"""
