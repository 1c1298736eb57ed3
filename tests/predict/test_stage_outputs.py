"""Predictions a stage leaves for later stages (core/predict/stage_outputs.py)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from replicator.core.errors import ReplicatorError
from replicator.core.predict import stage_outputs as S
from replicator.core.util.layout import OUTPUTS

from ..conftest import synthetic_rows


def _stage(name, outputs=()):
    return SimpleNamespace(name=name, outputs=tuple(outputs),
                           predict=SimpleNamespace(max_length=64, batch_tokens=256))


def _fake_predict(calls):
    def predict_probs(model, tokenizer, plugins, rows, max_length, batch_tokens, progress):
        calls.append((len(rows), max_length, batch_tokens))
        p = np.array([[int(r["id"]) % 7 + 1, 1.0, 2.0] for r in rows])
        return {"identity": None, "tta": p / p.sum(1, keepdims=True)}
    return predict_probs


class _Plugins:
    def __init__(self, pool):
        self.pool = pool

    def all(self, hook, split, ctx):
        assert hook == "data_sources" and split == "pool"
        return [None, self.pool[:2], [], self.pool[2:]]


def test_write_then_load_and_attach_teachers(tmp_path, monkeypatch):
    calls: list = []
    monkeypatch.setattr(S, "predict_probs", _fake_predict(calls))
    train = [dict(r, label=[1.0, 0.0, 0.0]) for r in synthetic_rows(6)]
    pool = [dict(r, label=[0.0, 1.0, 0.0]) for r in synthetic_rows(4, seed=2, start_id=5000)]
    teacher = _stage("teacher", ["train", "pool"])
    (tmp_path / "teacher").mkdir()
    counts = S.write_stage_outputs(teacher, _Plugins(pool), None, None, train, None,
                                   tmp_path / "teacher" / OUTPUTS, progress=False)
    assert counts == {"train": 6, "pool": 4, "pool_rows": 4}
    assert calls == [(6, 64, 256), (4, 64, 256)]
    written = json.loads((tmp_path / "teacher" / OUTPUTS).read_text())
    assert set(written["train"]) == {r["id"] for r in train}
    r0 = train[0]
    k = int(r0["id"]) % 7 + 1
    assert written["train"][r0["id"]] == pytest.approx([k / (k + 3), 1 / (k + 3), 2 / (k + 3)])
    assert [r["id"] for r in written["pool_rows"]] == [r["id"] for r in pool]
    assert all("label" not in r for r in written["pool_rows"])  # pseudo-labels come from the teacher

    # a second writer stage, a stage without outputs, then the student
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / OUTPUTS).write_text(json.dumps({"train": {"x": [1, 0, 0]}}))  # ignored: no outputs
    (tmp_path / "t2").mkdir()
    (tmp_path / "t2" / OUTPUTS).write_text(json.dumps({"train": {train[1]["id"]: [0.1, 0.2, 0.7]}}))
    (tmp_path / "later").mkdir()
    (tmp_path / "later" / OUTPUTS).write_text(json.dumps({"train": {}}))
    student = _stage("student")
    resolved = SimpleNamespace(stages=[teacher, _stage("plain"), _stage("t2", ["train"]), student,
                                       _stage("later", ["train"])])
    found = S.load_stage_outputs(resolved, student, tmp_path)
    assert list(found) == ["teacher", "t2"]  # only earlier stages that declared outputs
    rows = [dict(r) for r in train]
    S.attach_teachers(rows, found)
    assert rows[0]["teacher"] == {"teacher": written["train"][r0["id"]]}
    assert rows[1]["teacher"] == {"teacher": written["train"][train[1]["id"]], "t2": [0.1, 0.2, 0.7]}
    assert "teacher" not in train[0]  # the copies were edited, not the originals


def test_attach_teachers_skips_stages_without_train_predictions_and_unknown_rows():
    rows = [{"id": "1"}, {"id": "2"}]
    S.attach_teachers(rows, {"pool_only": {"pool": {"1": [1, 0, 0]}}, "t": {"train": {"2": [0, 1, 0]}}})
    assert "teacher" not in rows[0] and rows[1]["teacher"] == {"t": [0, 1, 0]}


def test_pool_outputs_without_a_pool_source_fail(tmp_path, monkeypatch):
    monkeypatch.setattr(S, "predict_probs", _fake_predict([]))
    with pytest.raises(ReplicatorError, match="pool"):
        S.write_stage_outputs(_stage("t", ["pool"]), _Plugins([]), None, None, [], None,
                              tmp_path / OUTPUTS, progress=False)
    assert not (tmp_path / OUTPUTS).exists()
