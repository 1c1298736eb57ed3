"""16th place's Gemma-style turn rounds format (plugins/turn_rounds.py)."""

from __future__ import annotations

from replicator.plugins.turn_rounds import TurnRounds

from ..helpers import ROW, text

SMALL = {"prompt": ["p1", "p2"], "response_a": ["a1", "a2"], "response_b": ["b1", ""]}


def test_exact_layout_with_special_markers_and_newline_between_rounds(tok):
    enc = TurnRounds().prompt_format(row=SMALL, tokenizer=tok, max_length=1000)
    one = ("<start_of_turn>prompt\n{p}<end_of_turn>\n<start_of_turn>response_a\n{a}<end_of_turn>\n"
           "<start_of_turn>response_b\n{b}<end_of_turn>")
    assert text(tok, enc) == ("<bos>" + one.format(p="p1", a="a1", b="b1") + "\n"
                              + one.format(p="p2", a="a2", b="") + "<eos>")
    start = tok.convert_tokens_to_ids("<start_of_turn>")
    assert enc.input_ids.count(start) == 6  # each marker is one token of the tokenizer
    assert enc.input_ids[-1] == tok.eos_token_id and not enc.truncated


def test_keep_end_drops_whole_earliest_rounds(tok):
    full = TurnRounds().prompt_format(row=ROW, tokenizer=tok, max_length=100_000)
    enc = TurnRounds().prompt_format(row=ROW, tokenizer=tok, max_length=len(full.input_ids) - 1)
    out = text(tok, enc)
    assert enc.truncated and enc.removed == {"rounds": 1}
    assert ROW["prompt"][0] not in out and ROW["response_a"][1] in out
    assert out.startswith("<bos><start_of_turn>prompt\n" + ROW["prompt"][1])
    assert out.endswith(ROW["response_b"][2] + "<end_of_turn><eos>")


def test_last_round_too_long_is_cut_longest_first(tok):
    row = {"prompt": ["old", "q"], "response_a": ["old a", "a" * 400], "response_b": ["old b", "b" * 50]}
    enc = TurnRounds().prompt_format(row=row, tokenizer=tok, max_length=200)
    out = text(tok, enc)
    assert len(enc.input_ids) == 200 and "old" not in out
    assert out.count("b" * 50) == 1 and out.endswith("<end_of_turn><eos>")
    assert 0 < out.count("a") - out.count("response_a") < 400
