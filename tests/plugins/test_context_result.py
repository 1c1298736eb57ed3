"""3rd place's context + result format (plugins/context_result.py)."""

from __future__ import annotations

from replicator.plugins.context_result import ContextResult

from ..helpers import ROW, text


def test_context_result_keeps_first_and_last_two_turns(tok):
    n = 6
    row = dict(ROW, prompt=[f"p{i}" for i in range(n)], response_a=[f"a{i}" for i in range(n)],
               response_b=[f"b{i}" for i in range(n)])
    enc = ContextResult().prompt_format(row=row, tokenizer=tok, max_length=10_000)
    assert text(tok, enc) == ("<bos>[CONTEXT] p0\n\np1\n\np4\n\np5\n\n[RESPONSE A] a0\n\na1\n\na4\n\na5"
                              "\n\n[RESPONSE B] b0\n\nb1\n\nb4\n\nb5\n\n[Result]:")
    assert enc.truncated and enc.removed == {"turns": 2}
    assert "p2" in text(tok, ContextResult(keep_turns=0).prompt_format(row=row, tokenizer=tok,
                                                                       max_length=10_000))
