"""Role/content conversations to turns (core/lib/conversations.py)."""

from __future__ import annotations

import json

from replicator.core.lib.conversations import pad_turns, parse_conversation


def test_rounds_roles_system_and_joined_answers():
    conv = [{"role": "system", "content": "be nice"}, {"role": " User ", "content": "q1"},
            {"role": "assistant", "content": "a1"}, {"role": "bot", "content": "a1b"},
            {"role": "human", "content": "q2"}, {"role": "user", "content": "q3"},
            {"role": "GPT", "content": "a3"}]
    users, answers, fixes, err = parse_conversation(conv)
    assert err is None and users == ["q1", "q2", "q3"] and answers == ["a1\n\na1b", "", "a3"]
    assert fixes == {"null": 0, "surrogate": 0}
    assert parse_conversation(json.dumps(conv))[:2] == (users, answers)  # JSON text decoded first


def test_repairs_are_counted():
    users, answers, fixes, err = parse_conversation([{"role": "user", "content": "x\ud800y"},
                                                     {"role": "assistant", "content": None}])
    assert err is None and users == ["x\ufffdy"] and answers == [""]
    assert fixes == {"null": 1, "surrogate": 1}


def test_errors_are_returned_not_raised():
    cases = {"[": "invalid JSON", json.dumps({"a": 1}): "expected a list",
             json.dumps([1]): "message 0 is a int",
             json.dumps([{"role": "user", "content": 3}]): "content is a int",
             json.dumps([{"role": "assistant", "content": "x"}]): "before any user message",
             json.dumps([{"role": "narrator", "content": "x"}]): "unknown role 'narrator'",
             json.dumps([{"role": "system", "content": "x"}]): "no user message"}
    for conv, msg in cases.items():
        users, answers, fixes, err = parse_conversation(conv)
        assert msg in err and users == [] and answers == [], conv


def test_pad_turns():
    assert pad_turns(["p1", "p2"], ["a1"], []) == (["p1", "p2"], ["a1", ""], ["", ""], True)
    assert pad_turns(["p"], ["a"], ["b"]) == (["p"], ["a"], ["b"], False)
    p, _, _, _ = pad_turns(("x",), ("y",), ("z",))
    assert isinstance(p, list)
