"""3rd place's tagged turns format (plugins/tagged_turns.py)."""

from __future__ import annotations

from replicator.plugins.tagged_turns import TaggedTurns

from ..helpers import ROW, text

SMALL = {"prompt": ["p1", "p2"], "response_a": ["a1", "a2"], "response_b": ["b1", ""]}


def test_exact_layout_turns_concatenated_bos_no_eos(tok):
    enc = TaggedTurns().prompt_format(row=SMALL, tokenizer=tok, max_length=1000)
    assert text(tok, enc) == ("<bos><PROMPT>p1</PROMPT><RESPONSE A>a1</RESPONSE A><RESPONSE B>b1</RESPONSE B>"
                              "<PROMPT>p2</PROMPT><RESPONSE A>a2</RESPONSE A><RESPONSE B></RESPONSE B>")
    assert tok.eos_token_id not in enc.input_ids and not enc.truncated


def test_keep_start_is_a_plain_right_cut_that_may_split_a_tag(tok):
    full = TaggedTurns().prompt_format(row=ROW, tokenizer=tok, max_length=100_000)
    for budget in (50, 123, len(full.input_ids) - 1):
        enc = TaggedTurns().prompt_format(row=ROW, tokenizer=tok, max_length=budget)
        assert enc.truncated and enc.input_ids == full.input_ids[:budget]
    enc = TaggedTurns().prompt_format(row=ROW, tokenizer=tok, max_length=len(full.input_ids))
    assert not enc.truncated and enc.input_ids == full.input_ids


def test_keep_end_keeps_the_last_round(tok):
    full = TaggedTurns().prompt_format(row=ROW, tokenizer=tok, max_length=100_000)
    enc = TaggedTurns(truncate="keep_end").prompt_format(row=ROW, tokenizer=tok,
                                                         max_length=len(full.input_ids) - 5)
    out = text(tok, enc)
    assert enc.removed.get("rounds", 0) >= 1 and ROW["prompt"][0] not in out
    assert out.endswith(f"<RESPONSE B>{ROW['response_b'][2]}</RESPONSE B>")
