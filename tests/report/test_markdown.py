"""report.md (core/report/markdown.py)."""

from __future__ import annotations

from replicator.core.report.markdown import markdown_table, render_markdown

from .test_tables import _data


def _full():
    return {**_data(), "base_runs": ["toy-1-s1", "toy-1-s2"],
            "bootstrap": {"n_boot": 2000, "resamples": "groups"},
            "flags": [], "notes": ["a note"], "per_seed": [], "stages": []}


def test_table_header_alignment_and_escaped_pipes():
    lines = markdown_table(_data()).splitlines()
    assert lines[0].startswith("| variant | seeds | log loss | Δ vs base | 95% interval |")
    assert lines[1].split("|")[1:4] == ["---", "---", "---:"]
    assert len(lines) == 2 + 5
    assert "| a\\|b |" in lines[4]


def test_document_sections():
    md = render_markdown(_full(), ["toy: toy-1-s1 (seed 1)"], "My title")
    assert md.startswith("# My title\n\nBase: **toy** (toy-1-s1, toy-1-s2).")
    assert markdown_table(_full()) in md
    assert "## Verdicts\n\n- toy +focal: Δ -0.0500" in md
    assert "all runs share the base's data hash" in md and "- a note" in md
    assert md.endswith("## What was compared\n\n- toy: toy-1-s1 (seed 1)\n")
    assert "per split seed" not in md and "## Stages" not in md
    flags = [{"run": "x-s1", "differs": ["data hash", "device"]}]
    flagged = render_markdown({**_full(), "flags": flags}, [], "t")
    assert "- **x-s1** differs from the base: data hash; device" in flagged
    only_base = render_markdown({**_full(), "variants": _data()["variants"][:1], "references": []}, [], "t")
    assert "- only the base: nothing to compare" in only_base
