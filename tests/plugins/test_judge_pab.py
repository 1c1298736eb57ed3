"""2nd place's judge prompts (plugins/judge_pab.py): PAB, PAPB, and stage 1's PAB + PAPB copies."""

from __future__ import annotations

import pytest

from replicator.core.config.recipe import resolve

from ..conftest import RECIPES


def test_judge_prompt_without_room_for_the_conversation_warns(caplog):
    """2nd's judge instruction + template take ~227 Gemma tokens: a budget below that shows every row as
    the same instruction (a smoke run at 192 tokens did). It is a warning naming the fix."""
    from replicator.core.lib import truncation as tr
    from replicator.core.model.loading import load_tokenizer, resolve_base
    from replicator.core.rows import make_row
    from replicator.plugins.judge_pab import (
        MIN_CONVERSATION,
        PAB_END,
        PAB_START,
        JudgePAB,
        JudgePAPB,
        judge_wrap,
    )

    tok = load_tokenizer(resolve_base("tiny:gemma2"))
    head, tail = judge_wrap(tok, tr.encoder(tok), PAB_START, PAB_END, False)
    fixed = len(head) + len(tail)
    row = make_row("1", ["what is the answer"], ["the answer is one"], ["two"])
    with caplog.at_level("WARNING"):
        JudgePAB().prompt_format(row=row, tokenizer=tok, max_length=fixed + 5)
    assert f"take {fixed} tokens, so max_length {fixed + 5} leaves 5" in caplog.text
    assert f"at least {fixed + MIN_CONVERSATION}" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        JudgePAPB().prompt_format(row=row, tokenizer=tok, max_length=fixed + 6)
        JudgePAB().prompt_format(row=row, tokenizer=tok, max_length=fixed + 64)
    assert caplog.text.count("judge prompt") == 1  # PAPB's short budget warns; a budget with room does not


def test_2nd_stage1_trains_on_pab_and_papb_copies_in_one_step():
    """[P2] multi-format augmentation (stage 1 only): each sample as PAB and as PAPB, each with its swap, the
    four rows in one micro-batch unit (one ``pair`` key) [R2]; prediction is PAB; stages 2-3 are PAB only."""
    from replicator.core.config.catalogue import build_plugins
    from replicator.core.model.loading import load_tokenizer, resolve_base
    from replicator.core.rows import make_row
    from replicator.core.tokens.batches import units_of
    from replicator.plugins.judge_pab import JudgePAB, JudgePAPB

    r = resolve(RECIPES / "2nd.yaml", check_plugins=False)
    s = {st.name: st for st in r.stages}
    assert {n: s[n].plugins["prompt"]["use"] for n in s} == {
        "stage1": "judge_multi", "stage1_27b": "judge_multi", "stage1_armorm": "judge_multi",
        "stage2": "judge_pab", "stage3": "judge_pab"}
    assert s["stage1_armorm"].plugins["prompt"]["system_role"]
    plugins = build_plugins(s["stage1"].plugins, r.file)
    rows = [make_row(str(i), [f"question {i}"], [f"answer a {i}"], [f"answer b {i}"], label=[1, 0, 0])
            for i in range(3)]
    out = plugins.chain("augment", "rows", rows, epoch=0, seed=0)
    assert len(out) == 12
    units = units_of(out)
    assert len(units) == 3 and all(len(u) == 4 for u in units)
    for u in units:
        assert sorted((out[i]["layout"], out[i].get("swapped", False)) for i in u) == \
            [("pab", False), ("pab", True), ("papb", False), ("papb", True)]
    tok = load_tokenizer(resolve_base("tiny:gemma2"))
    fmt = plugins.get("judge_multi")
    for row in out[:4]:
        want = (JudgePAB() if row["layout"] == "pab" else JudgePAPB()).prompt_format(
            row=row, tokenizer=tok, max_length=4340)
        assert fmt.prompt_format(row=row, tokenizer=tok, max_length=4340).input_ids == want.input_ids
    # validation, test rows
    untagged = fmt.prompt_format(row=rows[0], tokenizer=tok, max_length=4340).input_ids
    assert untagged == JudgePAB().prompt_format(row=rows[0], tokenizer=tok, max_length=4340).input_ids
    # the steps still take 80 samples: 80 x 2 layouts x 2 orientations rows, whatever the GPU count
    t1 = s["stage1"].train
    assert t1.global_batch == 80 * 2 * 2 and t1.grad_accum == 1


def test_a_row_with_an_unknown_layout_is_an_error_naming_row_and_field():
    from replicator.core.errors import ReplicatorError
    from replicator.core.model.loading import load_tokenizer, resolve_base
    from replicator.core.rows import make_row
    from replicator.plugins.judge_pab import JudgeMulti

    row = dict(make_row("r7", ["q"], ["a"], ["b"]), layout="pba")
    with pytest.raises(ReplicatorError, match="row 'r7', field 'layout'"):
        JudgeMulti().prompt_format(row=row, tokenizer=load_tokenizer(resolve_base("tiny:gemma2")),
                                   max_length=512)
    with pytest.raises(ValueError, match="distinct layouts"):
        JudgeMulti(train_layouts=["pab", "pab"])
