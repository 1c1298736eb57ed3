"""The runner (core/run/pipeline.py): bad data writes nothing, a stage's rows sampled in their order."""

from __future__ import annotations

import pytest

from replicator.core.config.recipe import resolve
from replicator.core.data.files import data_dir
from replicator.core.errors import DataError
from replicator.core.run import pipeline

from ..conftest import RECIPES, TINY, synthetic_rows, write_csv
from ..smoke_runs import _files, _run


def test_bad_data_writes_nothing(isolated, monkeypatch, tmp_path):
    bad = tmp_path / "bad_data"
    rows = synthetic_rows(40)
    rows[3]["winner_tie"] = 1  # two labels
    write_csv(bad / "lmsys-chatbot-arena" / "train.csv", rows)
    monkeypatch.setenv("REPLICATOR_DATA_DIR", str(bad))
    with pytest.raises(DataError, match="row 1003"):
        _run()
    assert _files(isolated / "reports") == [] and _files(isolated / "artifacts") == []


def test_stage_rows_are_sampled_in_their_original_order(isolated):
    from replicator.core.config.catalogue import build_plugins
    from replicator.core.rows import DataContext

    r = resolve(RECIPES / "smoke.yaml", [], TINY + ["train.max_rows=20", "predict.max_rows=7"])
    stage = r.final
    plugins = build_plugins(stage.plugins, r.file)

    def ctx():
        return DataContext(data_dir=data_dir(), seed=r.seed, stage=stage.name)

    full_train, full_valid = pipeline.collect_rows(plugins, ctx())
    train, valid = pipeline.stage_rows(r, stage, plugins, ctx())
    assert len(train) == 20 and len(valid) == 7
    position = {row["id"]: i for i, row in enumerate(full_train)}
    assert [position[row["id"]] for row in train] == sorted(position[row["id"]] for row in train)
    position = {row["id"]: i for i, row in enumerate(full_valid)}
    assert [position[row["id"]] for row in valid] == sorted(position[row["id"]] for row in valid)
