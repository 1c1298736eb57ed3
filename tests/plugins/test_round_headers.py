"""4th place's round headers format (plugins/round_headers.py)."""

from __future__ import annotations

from replicator.plugins.round_headers import RoundHeaders

from ..helpers import ROW, text


def test_round_headers_overflow_split_matches_4th_place(tok):
    fmt = RoundHeaders()
    full = fmt.prompt_format(row=ROW, tokenizer=tok, max_length=100_000)
    r2_end = text(tok, full).index("\n\n## Round 3:")
    tail = len("\n\n---\nWhich response is better? [A or B or tie]\nAnswer: ") + 1
    header3 = len("\n\n## Round 3:\n### Prompt:\n\n\n### Response A:\n\n\n### Response B:\n")
    # room for round 3's fields: exactly 80 tokens (the floor) -> 16 / 32 / 32, cut fields get "......"
    budget = 1 + (r2_end - len("<bos>")) + header3 + 3 * 6 + 80 + tail
    out = text(tok, fmt.prompt_format(row=ROW, tokenizer=tok, max_length=budget))
    assert len(tok(out, add_special_tokens=False)["input_ids"]) == budget - 80 - 18 + 16 + 6 + 32 + 6 + 21
    assert f"### Prompt:\n{ROW['prompt'][2][:16]}......\n" in out
    assert f"### Response A:\n{ROW['response_a'][2][:32]}......\n" in out
    assert "### Response B:\nd = {(1, 2): 'point'}\n\n---" in out  # shorter than its share: whole
    # fewer than 80 tokens of room: round 3 disappears
    out = text(tok, fmt.prompt_format(row=ROW, tokenizer=tok, max_length=budget - 1))
    assert "## Round 3" not in out and "## Round 2" in out
