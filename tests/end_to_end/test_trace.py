"""``REPLICATOR_TRACE`` logs every hook call of a tiny run."""

from __future__ import annotations

import re

from replicator.core import hookspecs

from ..conftest import RECIPES

TRACE = re.compile(r"hook=(\w+) plugin=([\w,]+) ms=(\d+\.\d+) (size|raised)=(\S+)")


def test_trace_logs_the_hook_calls_of_a_tiny_run(isolated, monkeypatch, caplog):
    import logging

    from replicator.core.config.recipe import resolve
    from replicator.core.data.files import data_dir
    from replicator.core.run.pipeline import run_recipe

    monkeypatch.setenv("REPLICATOR_TRACE", "1")
    caplog.set_level(logging.INFO, logger="replicator.trace")
    r = resolve(RECIPES / "smoke.yaml", ["tiny"], ["train.max_rows=16", "predict.max_rows=8",
                                                    "train.max_length=64", "predict.max_length=64"],
                data_dir=data_dir())
    run_recipe(r, data_dir(), progress=False)
    lines = [TRACE.fullmatch(rec.getMessage()) for rec in caplog.records if rec.name == "replicator.trace"]
    assert lines and all(lines), [rec.getMessage() for rec in caplog.records
                                  if rec.name == "replicator.trace"][:5]
    by_hook: dict[str, list] = {}
    for m in lines:
        by_hook.setdefault(m[1], []).append(m)
    # data_check at resolve, data_files for the data hash, ...; a training callback only where a plugin has
    # it (none here: tests/train/test_tracking.py)
    assert set(by_hook) == set(hookspecs.HOOK_KINDS) - set(hookspecs.CALLBACKS)
    assert all(m[4] == "size" for m in lines)
    assert {m[2] for m in by_hook["prompt_format"]} == {"prompt"}
    assert {m[2] for m in by_hook["augment"]} == {"swap"} and {m[2] for m in by_hook["loss"]} == {"loss"}
    post = [m[2] for m in by_hook["postprocess"]]
    assert post[:2] == ["temp", "clip"]  # the chain, one plugin per call, in recipe order
    train = [m for m in by_hook["data_sources"] if m[2] == "data"]
    assert train and all(int(n) > 0 for m in train for n in m[5].split(",") if m[5] != "-")
