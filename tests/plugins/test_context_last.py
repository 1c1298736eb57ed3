"""9th place's context + last responses format (plugins/context_last.py)."""

from __future__ import annotations

from replicator.plugins.context_last import ContextLast

from ..helpers import ROW, text

SMALL = {"prompt": ["p1", "p2"], "response_a": ["a1", "a2"], "response_b": ["b1", ""]}
EXPECTED = ("<bos><context>\nUser: p1\nAssistant: a1\nUser: p2\n</context>\n<response_A>\na2\n</response_A>\n"
            "<response_B>\n\n</response_B>")


def test_exact_layout_with_context_from_a_or_b(tok):
    enc = ContextLast().prompt_format(row=SMALL, tokenizer=tok, max_length=1000)
    assert text(tok, enc) == EXPECTED and not enc.truncated and enc.removed == {}
    assert enc.input_ids[0] == tok.bos_token_id and tok.eos_token_id not in enc.input_ids
    out = text(tok, ContextLast(context_from="b").prompt_format(row=SMALL, tokenizer=tok, max_length=1000))
    assert "Assistant: b1\n" in out and "a1" not in out


def test_single_round_has_only_the_user_turn_in_context(tok):
    row = {"prompt": ["q"], "response_a": ["x"], "response_b": ["y"]}
    out = text(tok, ContextLast().prompt_format(row=row, tokenizer=tok, max_length=1000))
    assert out == ("<bos><context>\nUser: q\n</context>\n<response_A>\nx\n</response_A>\n<response_B>\ny\n"
                   "</response_B>")


def test_keep_end_drops_earliest_rounds_and_keeps_the_tags(tok):
    full = ContextLast().prompt_format(row=ROW, tokenizer=tok, max_length=100_000)
    budget = len(full.input_ids) - 10
    enc = ContextLast().prompt_format(row=ROW, tokenizer=tok, max_length=budget)
    out = text(tok, enc)
    assert enc.truncated and enc.removed.get("rounds", 0) >= 1 and len(enc.input_ids) <= budget
    assert ROW["prompt"][0] not in out and ROW["prompt"][2] in out
    assert out.startswith("<bos><context>\n") and out.endswith("</response_B>")
    assert f"<response_B>\n{ROW['response_b'][2]}\n</response_B>" in out
    # keep_start instead cuts the end of the text: the closing tag goes
    fmt = ContextLast(truncate="keep_start")
    cut = text(tok, fmt.prompt_format(row=ROW, tokenizer=tok, max_length=budget))
    assert ROW["prompt"][0] in cut and not cut.endswith("</response_B>")
