"""The lowest layer: files, processes and logging, with no knowledge of recipes or models.

* :mod:`~replicator.core.util.layout` -- where a run's files live, and their names.
* :mod:`~replicator.core.util.atomic` -- atomic writes.
* :mod:`~replicator.core.util.lock` -- one process at a time per run.
* :mod:`~replicator.core.util.distributed` -- several processes: who writes, where all wait.
* :mod:`~replicator.core.util.logs` -- logging setup, quiet imports of noisy libraries.
* :mod:`~replicator.core.util.path_checks` -- input and output paths checked before a model loads.
"""
