"""Several processes (core/util/distributed.py): rows gathered back in order."""

from __future__ import annotations

import pytest


def test_gather_rows_puts_one_process_rows_back_in_order():
    import numpy as np

    from replicator.core.util.distributed import gather_rows

    vals = np.array([[0.2, 0.3, 0.5], [0.1, 0.1, 0.8], [0.6, 0.2, 0.2]])
    assert (gather_rows([2, 0, 1], vals, 3) == vals[[1, 2, 0]]).all()
    with pytest.raises(RuntimeError, match="1 row\\(s\\) predicted by no process"):
        gather_rows([0, 1], vals[:2], 3)
