"""``replicate predict`` (core/run/submission.py): every path checked before a model loads."""

from __future__ import annotations

import pytest

from replicator.core.errors import ReplicatorError
from replicator.core.run.submission import predict

from ..smoke_runs import _truncate

PREDICT_CASES = {
    # case: (what to break, words of the error)
    "test file missing": (lambda run, art, t, o: t.unlink(), ["test file", "no such file"]),
    "test file is a folder": (lambda run, art, t, o: (t.unlink(), t.mkdir()), ["test file", "is a folder"]),
    "test file invalid": (lambda run, art, t, o: t.write_text("id,prompt\n1,x\n"),
                          ["test.csv", "missing required column(s) response_a, response_b"]),
    "output is a folder": (lambda run, art, t, o: o.mkdir(), ["submission file (--out)", "is a folder"]),
    "output folder is a file": (lambda run, art, t, o: o.parent.rmdir() or o.parent.write_text("x"),
                                ["is a file, not a folder"]),
    "weights truncated": (lambda run, art, t, o: _truncate(art / "final.safetensors"),
                          ["final.safetensors", "truncated or damaged"]),
    "weights not safetensors": (lambda run, art, t, o: (art / "final.safetensors").write_bytes(b"\x05" * 64),
                                ["final.safetensors", "truncated or not a safetensors file"]),
    "weights missing": (lambda run, art, t, o: (art / "final.safetensors").unlink(),
                        ["final.safetensors is missing", "replicate run"]),
    "validation predictions missing": (lambda run, art, t, o: (art / "valid_predictions.json").unlink(),
                                       ["valid_predictions.json is missing"]),
    "validation predictions unreadable": (lambda run, art, t, o:
                                          (art / "valid_predictions.json").write_text("{"),
                                          ["valid_predictions.json: unreadable"]),
    "run not finished": (lambda run, art, t, o: (run / "metrics.json").unlink(),
                         ["not finished (no metrics.json)"]),
    "run failed": (lambda run, art, t, o: (run / "failed.json").write_text('{"stage": "main", "error": "E"}'),
                   ["last attempt failed", "stage main: E"]),
    "resolved recipe missing": (lambda run, art, t, o: (run / "resolved.yaml").unlink(),
                                ["resolved recipe", "no such file"]),
}


@pytest.mark.parametrize("case", list(PREDICT_CASES))
def test_predict_checks_every_path_before_loading_a_model(case, finished_run, isolated, synthetic_data_dir,
                                                          no_model):
    import shutil

    root, rel = finished_run
    for sub in ("reports", "artifacts"):
        shutil.rmtree(isolated / sub, ignore_errors=True)
        shutil.copytree(root / sub, isolated / sub)
    run_dir = isolated / rel
    art = isolated / "artifacts" / "smoke" / run_dir.name / "main"
    test = isolated / "test.csv"
    shutil.copy(synthetic_data_dir / "lmsys-chatbot-arena" / "test.csv", test)
    out = isolated / "out" / "submission.csv"
    out.parent.mkdir()
    breaks, words = PREDICT_CASES[case]
    breaks(run_dir, art, test, out)
    with pytest.raises(ReplicatorError) as e:
        predict(str(run_dir), test, out, progress=False)
    for w in words:
        assert w in str(e.value), (w, str(e.value))
    assert not out.is_file()
