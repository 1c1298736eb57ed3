"""The data: files of records, the competition CSV, the hub, splits and the rows of a stage (no torch).

Modules (each imports only modules listed before it):

* :mod:`~replicator.core.data.files` -- the data folder, record formats and their generic readers, turn text.
* :mod:`~replicator.core.data.competition` -- the Kaggle CSV schema: validation and reading.
* :mod:`~replicator.core.data.hub` -- the Hugging Face hub: reachability, datasets, the hub copy.
* :mod:`~replicator.core.data.splits` -- hold-out and fold splits, sampling, row copies.
* :mod:`~replicator.core.data.collect` -- the rows of one stage through the ``data_sources`` hook.
"""
