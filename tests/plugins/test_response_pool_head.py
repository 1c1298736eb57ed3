"""The head that pools each response's states (plugins/response_pool_head.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from replicator.core.errors import ReplicatorError
from replicator.plugins.plain_turns import PlainTurns
from replicator.plugins.response_pool_head import ResponsePoolHead, response_masks

from ..conftest import tiny_classifier

MARKERS = {"a": [[7, 8]], "b": [[7, 9]], "stop": [[5]]}


def test_masks_cover_each_responses_tokens_in_every_round_and_stop_at_the_stops():
    #            0  1  2  3   4   5  6  7  8  9  10  11  12  13 14  15  16  17
    row = [1, 3, 7, 8, 20, 21, 7, 9, 30, 5, 3, 7, 8, 22, 7, 9, 31, 32]
    a, b = response_masks(np.array([row]), MARKERS)
    assert np.flatnonzero(a[0]).tolist() == [4, 5, 13]
    assert np.flatnonzero(b[0]).tolist() == [8, 16, 17]  # the last B runs to the row's end


def test_masks_end_at_the_rows_length_not_in_the_padding():
    row = [1, 7, 8, 20, 7, 9, 30, 31, 0, 0]
    a, b = response_masks(np.array([row, row]), MARKERS, lengths=[8, 7])
    assert np.flatnonzero(b[0]).tolist() == [6, 7] and np.flatnonzero(b[1]).tolist() == [6]
    assert np.flatnonzero(a[1]).tolist() == [3]


def test_a_row_without_both_markers_is_an_error_naming_it():
    with pytest.raises(ReplicatorError, match="row 1 of the batch has no response A marker"):
        response_masks(np.array([[7, 8, 1, 7, 9, 2], [7, 9, 1, 7, 8, 2]]), MARKERS)


def _row(a: str, b: str) -> dict:
    return {"id": 1, "prompt": ["Which is better?"], "response_a": [a], "response_b": [b]}


def _pooled_model(tok, plugin=ResponsePoolHead()):
    model = tiny_classifier()
    model.config.pad_token_id = tok.pad_token_id
    model.resize_token_embeddings(len(tok))
    model.score = plugin.head(hidden_size=16, num_labels=3, model=model)
    model.score.attach_tokenizer(tok)
    return model


def test_the_head_reads_the_mean_states_of_each_response_in_a_real_prompt(tok):
    fmt = PlainTurns(show_lengths=True)
    seqs = [list(fmt.prompt_format(row=r, tokenizer=tok, max_length=400).input_ids)
            for r in (_row("Yes, sure.", "No way at all"), _row("ok", "A longer answer here."))]
    width = max(map(len, seqs))
    ids = torch.tensor([s + [tok.pad_token_id] * (width - len(s)) for s in seqs])
    mask = (torch.arange(width)[None] < torch.tensor([len(s) for s in seqs])[:, None]).long()
    model = _pooled_model(tok)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.score.parameters():
            p.normal_()
        logits = model(input_ids=ids, attention_mask=mask).logits
        states = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
    text = tok.decode(seqs[0][1:])  # after <bos>
    start_a = text.index("Response A: ") + len("Response A: ")
    start_b = text.index("Response B: ") + len("Response B: ")
    assert text[start_a:start_a + 10] == "Yes, sure." and text[start_b:start_b + 13] == "No way at all"
    a = states[0, 1 + start_a:1 + start_a + 10].mean(0)  # one character = one token, after <bos>
    assert text[start_b + 13] == "\n"  # the round's closing newline: B runs to the next stop
    b = states[0, 1 + start_b:1 + start_b + 14].mean(0)
    d = a - b
    head = model.score
    want_a = head.diff(d)
    want_tie = head.tie(torch.cat([d.abs(), (a + b) / 2]))
    assert logits[0, 0].item() == pytest.approx(want_a.item(), rel=1e-4, abs=1e-5)
    assert logits[0, 1].item() == pytest.approx(-want_a.item(), rel=1e-4, abs=1e-5)
    assert logits[0, 2].item() == pytest.approx(want_tie.item(), rel=1e-4, abs=1e-5)


def test_zero_start_predicts_uniform_and_the_gradient_reaches_both_weights_and_the_layers(tok):
    fmt = PlainTurns()
    seq = list(fmt.prompt_format(row=_row("Yes, sure.", "No."), tokenizer=tok, max_length=400).input_ids)
    model = _pooled_model(tok).train()
    ids = torch.tensor([seq])
    logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    assert torch.equal(logits, torch.zeros(1, 3))
    torch.nn.functional.cross_entropy(logits, torch.tensor([0])).backward()
    assert model.score.diff.weight.grad.abs().sum() > 0 and model.score.tie.bias.grad.abs().sum() > 0
    with torch.no_grad():
        model.score.diff.weight.fill_(0.1)
    model.zero_grad()
    logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    torch.nn.functional.cross_entropy(logits, torch.tensor([0])).backward()
    assert model.model.layers[-1].mlp.down_proj.weight.grad.abs().sum() > 0


def test_a_prompt_without_the_markers_is_refused(tok):
    model = _pooled_model(tok, ResponsePoolHead(a_marker="<<A>>", b_marker="<<B>>"))
    seq = list(PlainTurns().prompt_format(row=_row("x", "y"), tokenizer=tok, max_length=200).input_ids)
    with pytest.raises(ReplicatorError, match="no response A marker"):
        model(input_ids=torch.tensor([seq]))


def test_a_head_never_given_the_tokenizer_says_so(tok):
    model = tiny_classifier()
    model.score = ResponsePoolHead().head(hidden_size=16, num_labels=3, model=model)
    with pytest.raises(ReplicatorError, match="never given the tokenizer"):
        model(input_ids=torch.tensor([[1, 2, 3]]))


def test_model_init_draws_the_weights_as_transformers_draws_a_new_head():
    model = tiny_classifier()
    head = ResponsePoolHead(init="model").head(hidden_size=16, num_labels=3, model=model)
    w = torch.cat([p.detach().flatten() for p in head.parameters()])
    assert w.abs().min() > 0 and 0.5 * 0.02 < float(w.std()) < 2 * 0.02  # std = initializer_range (0.02)
