"""What every stage kind (baseline, frozen features, fine-tuning) hands back to the runner."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class StageResult:
    """A stage's outcome on its scored rows."""

    #: the stage's results, what ``done.json`` holds (metrics, timings, row counts, ...)
    results: dict
    #: (N, 3) probabilities per view (``identity``, ``tta``, ``final``, the baselines' views, ...)
    predictions: dict[str, np.ndarray]
    #: (N, 3) labels of the scored rows
    labels: np.ndarray
    #: the rows scored: the validation rows, or every row when a frozen-feature stage cross-fits
    scored_rows: list[dict]
