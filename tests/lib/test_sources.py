"""Helpers shared by the data-source plugins (core/lib/sources.py)."""

from __future__ import annotations

import dataclasses
import os

import pytest

from replicator.core.errors import ReplicatorError
from replicator.core.lib import sources as S


def test_find_data_files_file_folder_and_missing(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    for name in ("b.jsonl", "a.json", "sub/c.parquet", "notes.txt"):
        (tmp_path / "d" / name).write_text("x")
    assert [p.name for p in S.find_data_files(tmp_path, "d")] == ["a.json", "b.jsonl", "c.parquet"]
    assert S.find_data_files(tmp_path, "d/notes.txt") == [tmp_path / "d" / "notes.txt"]
    assert S.find_data_files(tmp_path, str(tmp_path / "d" / "a.json")) == [tmp_path / "d" / "a.json"]
    assert S.find_data_files(tmp_path, "missing") == []
    assert [p.name for p in S.find_data_files(tmp_path, "d", exts=("json",))] == ["a.json"]


def test_file_stamp_and_cached(tmp_path):
    f = tmp_path / "x.json"
    f.write_text("[]")
    stamp = S.file_stamp([f])
    assert stamp == ((str(f.resolve()), f.stat().st_mtime_ns, 2),)

    @dataclasses.dataclass(frozen=True)
    class Src:
        file: str = "x.json"
        max_rows: int = S.max_rows_field()

    src = Src()
    S.check_source_params(src)
    calls = []
    load = lambda: calls.append(1) or len(calls)  # noqa: E731
    assert S.cached(src, stamp, load) == 1 and S.cached(src, stamp, load) == 1
    f.write_text("[1]")
    os.utime(f, ns=(1, 1))
    assert S.cached(src, S.file_stamp([f]), load) == 2  # a changed file: loaded again
    assert S.cached(src, stamp, load, slot="other") == 3
    with pytest.raises(ValueError, match="file must not be empty"):
        S.check_source_params(Src(file=""))
    with pytest.raises(ValueError):
        S.check_source_params(Src(max_rows=-1))


def test_messages_labels_and_ids(tmp_path):
    msg = S.missing_data_message("train file", tmp_path / "x", ["put it there"], hub_id="org/ds", gated=True)
    assert msg.startswith(f"train file: {tmp_path / 'x'}; to provide it, put it there; or give file as an "
                          "absolute path; or make the Hugging Face hub reachable so org/ds")
    assert "HF_TOKEN" in msg and "HF_TOKEN" not in S.hub_way("org/ds")
    (tmp_path / "y").write_text("")
    assert S.missing_file(tmp_path / "y", "w", []) == [] and S.missing_file(None, "w", []) == []
    assert len(S.missing_file(tmp_path / "z", "w", [])) == 1
    assert isinstance(S.missing_data_error(["a", "b"]), ReplicatorError)
    assert str(S.missing_data_error(["a", "b"])) == "a; b" and "run again" in str(S.missing_data_error([]))
    assert S.hard_label([0.2, 0.5, 0.3]) == [0.0, 1.0, 0.0] and S.hard_label([0.4, 0.4, 0.2]) == [1.0, 0, 0]
    rows = S.suffix_repeated_ids([{"id": "1"}, {"id": "2"}, {"id": "1"}, {"id": "1"}])
    assert [r["id"] for r in rows] == ["1", "2", "1-f2", "1-f3"]
