"""Prompt formats and the truncation policies they share (core/lib/truncation.py): exact texts pinned per
format (within budget and truncated), and properties of every format x truncation policy (never over
budget, ``truncated`` flag right, deterministic).

The fixtures under ``tests/lib/test_truncation/`` hold the decoded text as a YAML literal block
(``|-``: every character as produced, no folding), so a reviewer can read each template next to
SOLUTIONS.md. The tokenizer is character-level (``tests/char_tokenizer.py``): one character = one
token, decoding is exact."""

from __future__ import annotations

import dataclasses

import pytest
from pytest_regressions.data_regression import RegressionYamlDumper

from replicator.core.lib.truncation import POLICIES, Ref, Turns, cut_longest
from replicator.core.params import build, doc_of
from replicator.plugins.context_last import ContextLast
from replicator.plugins.context_result import ContextResult
from replicator.plugins.judge_pab import JudgePAB, JudgePAPB
from replicator.plugins.plain_turns import PlainTurns
from replicator.plugins.qa_triple_quotes import QATripleQuotes
from replicator.plugins.round_headers import RoundHeaders
from replicator.plugins.tagged_turns import TaggedTurns
from replicator.plugins.turn_rounds import TurnRounds

from ..helpers import ROW, text


class Text(str):
    """A string the fixtures write as a YAML literal block (exact and readable)."""


def _literal(dumper, data):
    return dumper.represent_scalar("tag:yaml.org,2002:str", str(data), style="|")


RegressionYamlDumper.add_custom_yaml_representer(Text, _literal)


FORMATS = {
    "plain_turns": PlainTurns,
    "qa_triple_quotes": QATripleQuotes,
    "judge_pab": JudgePAB,
    "judge_papb": JudgePAPB,
    "tagged_turns": TaggedTurns,
    "context_result": ContextResult,
    "round_headers": RoundHeaders,
    "context_last": ContextLast,
    "turn_rounds": TurnRounds,
}

#: the solution-specific policies, offered only by their formats
EXTRA = {"qa_triple_quotes": ("prompt_then_answers",), "round_headers": ("overflow_split",)}

#: how many tokens (= characters) the truncated fixtures lose, except where a budget is given
CUT = 260

#: round_headers: round 2 overflows with 120 tokens of room for its fields -> 24 / 48 / 48 [R4]
BUDGET = {"round_headers": 702}


def snapshot(tok, fmt, max_length):
    enc = fmt.prompt_format(row=ROW, tokenizer=tok, max_length=max_length)
    return {"max_length": max_length, "length": len(enc.input_ids), "truncated": enc.truncated,
            "removed": dict(sorted(enc.removed.items())), "text": Text(text(tok, enc))}


@pytest.mark.parametrize("name", list(FORMATS))
def test_format_text_pinned(name, tok, data_regression):
    """The exact text of each format, once within budget and once truncated by its default policy."""
    fmt = FORMATS[name]()
    full = snapshot(tok, fmt, 100_000)
    assert not full["truncated"]
    budget = BUDGET.get(name, full["length"] - CUT)
    cut = snapshot(tok, fmt, budget)
    assert cut["truncated"] and cut["length"] <= budget
    data_regression.check({"default_truncate": fmt.truncate, "full": full, "truncated": cut}, basename=name)


def test_templates_match_solutions(tok):
    """Spot checks of the strings SOLUTIONS.md quotes, independent of the fixtures."""
    t = lambda cls, **kw: text(tok, cls(**kw).prompt_format(row=ROW, tokenizer=tok, max_length=100_000))  # noqa: E731
    qa = t(QATripleQuotes)
    assert qa.startswith('<bos>User question:\n"""What\'s the difference') and qa.endswith('"""\n<eos>')
    assert '"""\nAnswer A:\n"""A list is mutable' in qa and "Python?\nWhich one can I use" in qa
    pab = t(JudgePAB)
    assert pab.startswith("<bos><start_of_turn>user\nPlease act as an impartial judge")
    assert ('for a tie.\n<|The Start of Conversation between a User and two Assistants|>\n### User:\n'
            "What's the difference") in pab
    assert pab.endswith("<|The End of Conversation between a User and two Assistants|><end_of_turn>\n"
                        "<start_of_turn>model\nverdict is: [[")
    assert t(JudgePAB, system_role=True).startswith("<bos><start_of_turn>user\nPlease act as")
    papb = t(JudgePAPB)
    assert "<|The End of Assistant A’s Conversation with User|>\n\n<|The Start of Assistant B’s" in papb
    assert t(TaggedTurns).startswith("<bos><PROMPT>What's the difference")
    assert "</RESPONSE B><PROMPT>Which one" in t(TaggedTurns)
    assert t(ContextResult).startswith("<bos>[CONTEXT] What's") and t(ContextResult).endswith("\n\n[Result]:")
    rh = t(RoundHeaders)
    assert rh.startswith("<bos>## Round 1:\n### Prompt:\nWhat's") and "\n\n## Round 2:\n### Prompt:\n" in rh
    assert rh.endswith("\n\n---\nWhich response is better? [A or B or tie]\nAnswer: <eos>")
    tr = t(TurnRounds)
    assert ("<end_of_turn>\n<start_of_turn>prompt\nWhich one" in tr
            and tr.endswith("'point'}<end_of_turn><eos>"))
    cl = t(ContextLast)
    assert ("<response_A>\nSure: `capitals" in cl
            and "Which one can I use as a dictionary key?\nAssistant: Use a tuple" in cl)


@pytest.mark.parametrize("name", list(FORMATS))
def test_every_policy_fits_flags_and_is_deterministic(name, tok):
    cls = FORMATS[name]
    policies = POLICIES + EXTRA.get(name, ())
    for policy in policies:
        fmt = cls(truncate=policy)
        full = fmt.prompt_format(row=ROW, tokenizer=tok, max_length=100_000)
        n = len(full.input_ids)
        for budget in [0, 1, 2, 3, 5, 8, 13, 30, 80, 150, 300, 500, 700, 900, 1200, 1600, n - 1, n, n + 1,
                       5000]:
            enc = fmt.prompt_format(row=ROW, tokenizer=tok, max_length=budget)
            assert len(enc.input_ids) <= max(budget, 0), (policy, budget)
            assert enc.truncated == (enc.input_ids != full.input_ids), (policy, budget, enc.removed)
            if name != "judge_papb":  # PAPB caps each side at half the room, as [R2] does
                assert enc.truncated == (budget < n), (policy, budget, enc.removed)
            assert bool(enc.removed) == enc.truncated, (policy, budget)
            if budget >= n and (name != "judge_papb" or budget == 5000):
                assert enc.input_ids == full.input_ids
            again = fmt.prompt_format(row=ROW, tokenizer=tok, max_length=budget)
            assert again == enc
            if budget >= 300 and policy != "keep_start" and name != "judge_papb":
                # the closing text survives whenever there is room for the template
                assert enc.input_ids[-3:] == full.input_ids[-3:], (policy, budget)


def test_policies_differ_as_documented(tok):
    """keep_start keeps the first turn, keep_end the last; budgets follows its fractions."""
    n = len(TurnRounds().prompt_format(row=ROW, tokenizer=tok, max_length=100_000).input_ids)
    start = text(tok, TurnRounds(truncate="keep_start").prompt_format(row=ROW, tokenizer=tok,
                                                                      max_length=n - 200))
    end = text(tok, TurnRounds(truncate="keep_end").prompt_format(row=ROW, tokenizer=tok, max_length=n - 200))
    assert "What's the difference" in start and "one-line example" not in start
    assert "What's the difference" not in end and "one-line example" in end
    enc = TaggedTurns(truncate="budgets", budgets=[0.0, 0.5, 0.5]).prompt_format(row=ROW, tokenizer=tok,
                                                                                 max_length=n - 300)
    assert enc.removed.get("prompt", 0) > 0 and len(enc.input_ids) <= n - 300


def test_cut_longest_equals_one_token_at_a_time():
    enc = lambda s: [ord(c) for c in s]  # noqa: E731
    for lens, excess in [((10, 8, 3), 5), ((5, 5, 5), 4), ((7, 0, 7), 13), ((4, 4, 1), 100)]:
        t = Turns(enc, [tuple("x" * n for n in lens)])
        refs = {Ref(f, 0): 1 for f in ("prompt", "a", "b")}
        cut_longest(t, refs, excess, {})
        ref = list(lens)
        for _ in range(excess):
            if max(ref) == 0:
                break
            ref[ref.index(max(ref))] -= 1
        assert [len(t.ids[f][0]) for f in ("prompt", "a", "b")] == ref, (lens, excess)


@pytest.mark.parametrize("name", list(FORMATS))
def test_parameters_documented_and_buildable(name):
    cls = FORMATS[name]
    assert cls.__doc__ and ("[" in cls.__doc__ or "our choice" in cls.__doc__)  # cites SOLUTIONS.md tags
    for pname, _, _, doc in doc_of(cls):
        assert doc, f"{name}.{pname} has no doc"
    fmt = build(cls, {"truncate": "keep_end", "budgets": [0.3, 0.35, 0.35]}, "r.yaml", f"plugins.{name}")
    assert fmt.truncate == "keep_end" and dataclasses.is_dataclass(fmt)
    with pytest.raises(Exception, match="truncate"):
        build(cls, {"truncate": "middle_out"}, "r.yaml", f"plugins.{name}")
    with pytest.raises(Exception, match="budgets"):
        build(cls, {"budgets": [0.5, 0.5]}, "r.yaml", f"plugins.{name}")


@pytest.mark.parametrize("name", list(FORMATS))
def test_word_tokenizer_without_chat_template(name):
    """The tiny models' word-level tokenizer (no chat template, BPE-like field boundaries) also fits."""
    from replicator.core.model.tiny import _tokenizer

    tok = _tokenizer()
    fmt = FORMATS[name]()
    full = fmt.prompt_format(row=ROW, tokenizer=tok, max_length=100_000)
    assert not full.truncated and full.input_ids[0] == tok.bos_token_id
    for budget in (0, 4, 16, 64, 128, len(full.input_ids) - 1):
        enc = fmt.prompt_format(row=ROW, tokenizer=tok, max_length=budget)
        assert len(enc.input_ids) <= budget and enc.truncated


def test_recipe_blocks_build_every_format():
    from replicator.core.config.catalogue import build_plugins

    for name in FORMATS:
        blocks = {"data": {"use": "kaggle_csv"}, "prompt": {"use": name, "truncate": "budgets"},
                  "head": {"use": "default_head"}, "loss": {"use": "cross_entropy"}}
        plugins = build_plugins(blocks, "r.yaml")
        assert type(plugins.providers("prompt_format")[0][1]) is FORMATS[name]
