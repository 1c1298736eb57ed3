"""1st place's QA format with triple quotes (plugins/qa_triple_quotes.py)."""

from __future__ import annotations

from replicator.plugins.qa_triple_quotes import QATripleQuotes

from ..helpers import ROW, text


def test_qa_word_precut_and_prompt_first_then_balance(tok):
    row = dict(ROW, prompt=["word " * 300], response_a=["a" * 500], response_b=["b" * 100])
    enc = QATripleQuotes().prompt_format(row=row, tokenizer=tok, max_length=100_000)
    assert enc.truncated and enc.removed == {"prompt_words": 301 - 256}
    template = len('User question:\n""""""\nAnswer A:\n""""""\nAnswer B:\n""""""\n') + 2
    # prompt -> 256 tokens; A trimmed to B's length; then alternately
    enc = QATripleQuotes(prompt_words=0).prompt_format(row=row, tokenizer=tok,
                                                       max_length=template + 256 + 150)
    s = text(tok, enc)
    # 256 tokens = 51 × "word " + "w"
    assert s.count("a") == 75 and s.count("b") - s.count("<bos>") == 75 and s.count("word") == 51
    assert len(enc.input_ids) == template + 256 + 150
    enc = QATripleQuotes(prompt_words=0).prompt_format(row=row, tokenizer=tok,
                                                       max_length=template + 256 + 400)
    s = text(tok, enc)
    assert s.count("b") - 1 == 100 and s.count("a") == 300
    row = dict(ROW, response_a=["x <eos> y"])
    assert "x <end> y" in text(tok, QATripleQuotes().prompt_format(row=row, tokenizer=tok, max_length=10_000))


def test_qa_without_eos_ends_on_the_token_r1_pooled(tok):
    """[R1] appends EOS with pad = eos, so its head reads the token before the EOS: ``append_eos: false``
    ends the input on that token."""
    with_eos = QATripleQuotes().prompt_format(row=ROW, tokenizer=tok, max_length=10_000)
    without = QATripleQuotes(append_eos=False).prompt_format(row=ROW, tokenizer=tok, max_length=10_000)
    assert with_eos.input_ids[-1] == tok.eos_token_id
    assert without.input_ids == with_eos.input_ids[:-1] and text(tok, without).endswith('"""\n')
