"""The hh_rlhf source (plugins/hh_rlhf.py); the ``real_data`` test reads the shared HH-RLHF file through
REPLICATOR_DATA_DIR."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from replicator.core.errors import DataError, ReplicatorError
from replicator.core.rows import DataContext
from replicator.plugins.hh_rlhf import HHRLHF, parse_transcript

from ..source_files import check_labels, hh_records, write_jsonl_gz

pytestmark = pytest.mark.usefixtures("info_logs")


def test_parse_transcript():
    h, a, err = parse_transcript(hh_records()[1]["chosen"])
    assert err is None and h == ["My neighbor's dog barks all night.", "How can I make it stop?"]
    assert a[0] == "That sounds frustrating." and a[1].startswith("Try talking")
    h, a, err = parse_transcript(hh_records()[2]["chosen"])  # inline "Human:" is text; doubled marker merged
    assert h == ["What is a good name for a goldfish?"]
    assert a == ["How about Bubbles?  Human: something else\n\nOr Captain Fin."]
    assert parse_transcript(hh_records()[3]["rejected"])[:2] == (["Tell me a joke about computers."], [""])
    assert "does not start with a Human turn" in parse_transcript("\n\nAssistant: hi\n\nHuman: yo")[2]
    assert "no Assistant turn" in parse_transcript("\n\nHuman: hello?")[2]
    assert "text before the first" in parse_transcript("Human: hi\n\nAssistant: hello")[2]


def test_hh_rlhf_conversion_and_seeded_order(tmp_path):
    write_jsonl_gz(tmp_path / "hh-rlhf" / "harmless-base-test.jsonl.gz", hh_records())
    rows = HHRLHF().data_sources("train", DataContext(tmp_path, 0))
    assert len(rows) == 60
    check_labels(rows)
    assert [r["id"] for r in rows[:2]] == ["hh-harmless-base-test-1", "hh-harmless-base-test-2"]
    chosen_a = 0
    for rec, r in zip(hh_records(), rows, strict=True):
        assert r["label"] in ([1.0, 0.0, 0.0], [0.0, 1.0, 0.0])  # hard, never a tie
        chosen = parse_transcript(rec["chosen"])[1]
        winner = r["response_a"] if r["label"][0] == 1.0 else r["response_b"]
        assert winner == chosen
        chosen_a += r["label"][0] == 1.0
        assert r["response_a"][:-1] == r["response_b"][:-1]  # shared context: only the last reply differs
    assert 18 <= chosen_a <= 42
    multi = rows[1]
    assert multi["prompt"] == ["My neighbor's dog barks all night.", "How can I make it stop?"]
    assert HHRLHF().data_sources("train", DataContext(tmp_path, 0)) == rows
    flipped = HHRLHF().data_sources("train", DataContext(tmp_path, 7))
    assert [r["label"] for r in flipped] != [r["label"] for r in rows]
    assert len(HHRLHF(max_rows=10).data_sources("train", DataContext(tmp_path, 0))) == 10
    valid = {rows[0]["group"]}
    assert len(HHRLHF().data_sources("train", DataContext(tmp_path, 0, valid_groups=valid))) == 59
    assert HHRLHF().data_sources("valid", DataContext(tmp_path, 0)) is None


@pytest.mark.parametrize("line, field, message", [
    ('{"chosen": "\\n\\nHuman: hi\\n\\nAssistant: hello"}', "rejected", "missing"),
    ('{"chosen": 3, "rejected": "\\n\\nHuman: hi\\n\\nAssistant: hello"}', "chosen", "a int"),
    ('{"chosen": "\\n\\nHuman: hi", "rejected": "\\n\\nHuman: hi\\n\\nAssistant: yo"}', "chosen",
     "no Assistant"),
    ('{"chosen": "\\n\\nHuman: hi\\n\\nAssistant: a", "rejected": "\\n\\nHuman: hey\\n\\nAssistant: b"}',
     "rejected", "Human turns differ"),
    ('{"chosen": "\\n\\nHuman: hi\\n\\nAssistant: a", "rejected": ', "(line)", "invalid JSON"),
    ('["\\n\\nHuman: hi"]', "(line)", "expected a JSON object"),
])
def test_hh_rlhf_malformed_names_file_line_field(tmp_path, line, field, message):
    path = write_jsonl_gz(tmp_path / "hh.jsonl.gz", hh_records()[:3], raw_lines=[line])
    with pytest.raises(DataError) as e:
        HHRLHF(file=str(path)).data_sources("train", DataContext(tmp_path, 0))
    assert e.value.file == str(path)
    ((where, f, msg),) = e.value.problems
    assert (where, f) == ("line 4", field) and message in msg
    assert f"{path}: row line 4: field {field!r}" in str(e.value)


def test_hh_rlhf_check(tmp_path):
    (msg,) = HHRLHF().data_check(tmp_path)
    assert ("HH-RLHF file not found" in msg and "REPLICATOR_DATA_DIR" in msg
            and "harmless-base-test.jsonl.gz" in msg)
    with pytest.raises(ReplicatorError, match="HH-RLHF file not found"):
        HHRLHF().data_sources("train", DataContext(tmp_path, 0))
    assert HHRLHF().data_files(tmp_path) == [tmp_path / "hh-rlhf" / "harmless-base-test.jsonl.gz"]


@pytest.mark.real_data
def test_real_hh_rlhf():
    d = os.environ.get("REPLICATOR_DATA_DIR")
    if not d:
        pytest.skip("REPLICATOR_DATA_DIR is not set")
    rows = HHRLHF().data_sources("train", DataContext(Path(d), 0))
    assert len(rows) == 2312 and len({r["id"] for r in rows}) == 2312
    check_labels(rows)
    assert all(r["label"][2] == 0.0 for r in rows)
    assert 0.45 < sum(r["label"][0] for r in rows) / len(rows) < 0.55
    assert sum(len(r["prompt"]) > 1 for r in rows) > 1000  # most transcripts are multi-turn
    for r in rows:
        assert r["response_a"][:-1] == r["response_b"][:-1]
        for t in r["prompt"] + r["response_a"] + r["response_b"]:
            t.encode("utf-8")
