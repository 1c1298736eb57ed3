"""The project's plain rounds format and its lengths toggle (plugins/plain_turns.py)."""

from __future__ import annotations

from replicator.plugins.plain_turns import SHARED_TOGGLES, PlainTurns

from ..helpers import ROW, text

SMALL = {"prompt": ["p1", "p2"], "response_a": ["a one", "a2"], "response_b": ["b1", ""]}
QUESTION = "\nWhich response is better? A, B or tie:"


def test_exact_layout(tok):
    enc = PlainTurns().prompt_format(row=SMALL, tokenizer=tok, max_length=1000)
    assert text(tok, enc) == ("<bos>\n## Round 1\nUser: p1\n\nResponse A: a one\n\nResponse B: b1\n"
                              "\n## Round 2\nUser: p2\n\nResponse A: a2\n\nResponse B: \n"
                              + QUESTION + "<eos>")
    assert not enc.truncated and enc.input_ids[-1] == tok.eos_token_id


def test_show_lengths_counts_words_of_the_whole_responses(tok):
    out = text(tok, PlainTurns(show_lengths=True).prompt_format(row=SMALL, tokenizer=tok, max_length=1000))
    assert out.endswith("\nLength in words: A 3, B 1." + QUESTION + "<eos>")
    # truncated responses: the stated lengths are still those of the full text, question kept whole
    row = dict(SMALL, response_a=["word " * 200, "a2"])
    enc = PlainTurns(show_lengths=True).prompt_format(row=row, tokenizer=tok, max_length=150)
    out = text(tok, enc)
    assert enc.truncated and len(enc.input_ids) == 150
    assert out.endswith("\nLength in words: A 201, B 1." + QUESTION + "<eos>")


def test_longest_first_cuts_the_longest_field_and_custom_question(tok):
    row = dict(SMALL, response_a=["x" * 300, "a2"])
    fmt = PlainTurns(question="\nWinner?")
    full = len(fmt.prompt_format(row=row, tokenizer=tok, max_length=10_000).input_ids)
    enc = fmt.prompt_format(row=row, tokenizer=tok, max_length=full - 100)
    out = text(tok, enc)
    assert len(enc.input_ids) == full - 100 and out.count("x") == 200
    assert "User: p1" in out and "Response B: b1" in out and out.endswith("\nWinner?<eos>")
    keep_start = PlainTurns(truncate="keep_start").prompt_format(row=ROW, tokenizer=tok, max_length=200)
    assert len(keep_start.input_ids) == 200 and text(tok, keep_start).endswith(QUESTION + "<eos>")


def test_lengths_shared_toggle_is_declared():
    (toggle,) = SHARED_TOGGLES
    assert toggle.name == "lengths" and toggle.rank == 110


def test_the_authors_variants_concatenated_last_turn_and_instruction(tok):
    """What did not work for the write-up's author (SOLUTIONS.md §4b), as prompt options."""
    fmt = PlainTurns(layout="concatenated")
    cat = text(tok, fmt.prompt_format(row=SMALL, tokenizer=tok, max_length=1000))
    assert cat == ("<bos>\nUser: p1\np2\n\nResponse A: a one\na2\n\nResponse B: b1\n\n" + QUESTION + "<eos>")
    last = text(tok, PlainTurns(turns="last").prompt_format(row=SMALL, tokenizer=tok, max_length=1000))
    assert last == "<bos>\n## Round 1\nUser: p2\n\nResponse A: a2\n\nResponse B: \n" + QUESTION + "<eos>"
    fmt = PlainTurns(instruction="Judge.\n")
    told = text(tok, fmt.prompt_format(row=SMALL, tokenizer=tok, max_length=1000))
    assert told.startswith("<bos>Judge.\n\n## Round 1\nUser: p1") and told.endswith(QUESTION + "<eos>")
    # truncation still fits the budget with every option
    row = dict(SMALL, response_a=["x" * 300, "y" * 300])
    for fmt in (PlainTurns(layout="concatenated"), PlainTurns(turns="last", instruction="Judge.\n")):
        enc = fmt.prompt_format(row=row, tokenizer=tok, max_length=120)
        assert enc.truncated and len(enc.input_ids) == 120 and text(tok, enc).endswith(QUESTION + "<eos>")
