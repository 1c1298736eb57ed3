"""1st place's GPTQ 8-bit inference [R1] in a run: calibration rows saved with the run, so that
``replicate predict`` quantizes on the same rows. Needs the gptq extra (optimum + GPT-QModel)."""

from __future__ import annotations

import pytest

from replicator.core.config.recipe import resolve

from ..conftest import RECIPES
from ..helpers import FULLSIZE_TINY as TINY
from ..helpers import GPTQ

pytest.importorskip("optimum.gptq", reason="the gptq extra (optimum + gptqmodel)")


def test_run_saves_calibration_rows_and_predict_reuses_them(rich_data_dir, tmp_path, monkeypatch):
    """The run draws its calibration rows once, after training, and saves them with its stage; a
    submission from the run (``replicate predict``) quantizes on exactly those rows."""
    import numpy as np
    import pandas as pd

    from replicator.core.model import gptq, inference
    from replicator.core.run import pipeline
    from replicator.core.run.finished_runs import run_parts
    from replicator.core.run.submission import predict

    monkeypatch.setenv("REPLICATOR_REPORTS", str(tmp_path / "reports"))
    monkeypatch.setenv("REPLICATOR_ARTIFACTS", str(tmp_path / "artifacts"))
    r = resolve(RECIPES / "smoke.yaml", [],
                TINY + GPTQ + ["train.max_steps=2", "predict.gptq_calibration_rows=6"],
                data_dir=rich_data_dir)
    run_dir, metrics, _ = pipeline.run_recipe(r, rich_data_dir, progress=False)
    _, stage, art = run_parts(run_dir)
    rows = gptq.read_calibration(art, 6)
    assert len(rows) == 6 and all(x.dtype == np.int32 and 0 < len(x) <= 64 for x in rows)
    assert np.isfinite(metrics["log_loss"])

    seen = []
    real = inference.gptq_8bit
    monkeypatch.setattr(inference, "gptq_8bit", lambda *a: seen.append(a[3]) or real(*a))
    test_csv = rich_data_dir / "lmsys-chatbot-arena" / "test.csv"
    predict(str(run_dir), test_csv, tmp_path / "sub.csv", progress=False)
    sub = pd.read_csv(tmp_path / "sub.csv")
    assert len(sub) == len(pd.read_csv(test_csv)) and np.allclose(sub.iloc[:, 1:].sum(axis=1), 1, atol=1e-5)
    assert len(seen) == 1 and all((a == b).all() for a, b in zip(seen[0], rows, strict=True))
