"""Rows to token ids to batches: the token cache and what training and prediction share.

Modules (each imports only modules listed before it):

* :mod:`~replicator.core.tokens.keys` -- what a cached row's token ids depend on, hashed.
* :mod:`~replicator.core.tokens.store` -- the Arrow store on disk (memory-mapped) and in memory.
* :mod:`~replicator.core.tokens.encoding` -- encoding many rows, in parallel, with progress.
* :mod:`~replicator.core.tokens.batches` -- length-grouped and token-budget batches, padding, packing,
  logits.
"""
