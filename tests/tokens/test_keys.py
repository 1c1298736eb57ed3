"""What a cached row's token ids depend on (core/tokens/keys.py)."""

from __future__ import annotations

from replicator.core.tokens import keys as token_keys
from replicator.core.tokens.batches import Encoder

from ..char_tokenizer import char_tokenizer
from ..helpers import BUDGET, _count_format_calls, _fresh, _plugins, _rows


def test_the_row_key_covers_every_text_and_nothing_else(cache_env):
    row = _rows()[5]
    row = dict(row, prompt=["first question", "second"], response_a=["answer a", None],
               response_b=["answer b", "more b"])
    key = token_keys.row_key(row)
    for field in ("prompt", "response_a", "response_b"):
        for turn in range(2):
            changed = dict(row, **{field: list(row[field])})
            changed[field][turn] = (changed[field][turn] or "") + "!"
            assert token_keys.row_key(changed) != key, (field, turn)
    assert token_keys.row_key(dict(row, response_a=["answer a", ""])) != key  # None is not ""
    assert token_keys.row_key(dict(row, prompt=["first question second"])) != key  # turn boundaries count
    assert token_keys.row_key(dict(row, swapped=True)) != key
    assert token_keys.row_key(dict(row, view="swap_ab")) != key
    assert token_keys.row_key(dict(row, model_a="someone-else")) != key  # unknown to the list: in the key
    assert token_keys.row_key(dict(row, layout="papb")) != key  # judge formats read a per-row layout tag
    assert token_keys.row_key(dict(row, view="identity")) == key  # the identity view is the row itself
    same = dict(row, id="other", label=[0.0, 1.0, 0.0], teacher={"s1": [0.2, 0.3, 0.5]}, pair="p", group="g",
                source="elsewhere", weight=0.5)
    assert token_keys.row_key(same) == key  # fields no format reads
    # end to end: a text change is a miss for that row only
    plugins, _ = _plugins()
    tok = char_tokenizer()
    rows = _rows()[:10]
    Encoder(plugins, tok).prepare(rows, BUDGET)
    edited = [dict(r) for r in rows]
    edited[3]["response_b"] = [t + " (edited)" if t else t for t in edited[3]["response_b"]]
    calls = _count_format_calls(plugins)
    enc = Encoder(plugins, tok)
    enc.prepare(edited, BUDGET)
    assert calls == [rows[3]["id"]]
    assert enc(edited[3], BUDGET).tolist() == _fresh(plugins, tok, edited[3])
