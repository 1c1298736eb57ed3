"""Prediction and its scoring on validation rows.

Modules (each imports only modules listed before it):

* :mod:`~replicator.core.predict.views` -- probabilities per test-time view, inverted to the A/B order.
* :mod:`~replicator.core.predict.postprocess` -- the ``postprocess`` chain and its honest cross-fit.
* :mod:`~replicator.core.predict.evaluate` -- a stage scored on its validation rows.
* :mod:`~replicator.core.predict.stage_outputs` -- predictions a stage writes for later stages.
"""
