"""The rows of a stage from every ``data_sources`` plugin (core/data/collect.py)."""

from __future__ import annotations


def test_nul_bytes_from_any_source_are_removed_with_a_notice(caplog):
    from replicator.core.data.collect import _repair_nul
    from replicator.core.rows import make_row, prompt_group

    rows = [make_row("u1", ["hi\x00"], ["a"], ["b\x00"], source="extra_x"),
            make_row("u2", ["ok"], ["a"], ["b"])]
    with caplog.at_level("INFO", logger="replicator"):
        _repair_nul(rows)
    assert (rows[0]["prompt"] == ["hi"] and rows[0]["response_b"] == ["b"]
            and rows[0]["group"] == prompt_group(["hi"]))
    notice = [r.getMessage() for r in caplog.records if "NUL" in r.getMessage()]
    assert notice == ["extra_x: 2 field(s): NUL character(s) (\\x00) removed from the text of the named "
                      "field(s) (e.g. id u1 prompt, u1 response_b)"]
