"""Numbers on predictions (numpy only): metrics, paired comparisons and the per-row prediction files.

* :mod:`~replicator.core.scoring.metrics` -- log loss and accuracy as the Kaggle grader computes them.
* :mod:`~replicator.core.scoring.stats` -- per-row losses, paired cluster bootstrap, calibration error.
* :mod:`~replicator.core.scoring.row_predictions` -- ``valid_predictions.csv.gz``.
"""
