"""The common row schema (core/rows.py): building a row, its prompt group, swapping A and B, pair keys,
the digest of a row list and the two schema constants that are also plugin names."""

from __future__ import annotations

import copy
import hashlib

from replicator.core.lib.plugin_index import BUILTINS
from replicator.core.rows import (
    COMPETITION_SOURCE,
    LABELS,
    SWAP_PERM,
    SWAPPED_VIEW,
    DataContext,
    Encoded,
    make_row,
    pair_key,
    prompt_group,
    rows_digest,
    swap_row,
)

from ..conftest import synthetic_rows, write_csv


def _row(**kw):
    args = dict(id=7, prompt=("Why is the sky blue?", "And at sunset?"),
                response_a=["Rayleigh scattering.", "Red light travels further."],
                response_b=["Because it is.", "No idea."], label=(1, 0, 0), model_a="gpt-4-0613",
                model_b="vicuna-13b", source="kaggle_csv")
    args.update(kw)
    return make_row(**args)


def test_make_row_normalises_types_and_adds_the_group():
    prompt = ("Why is the sky blue?", "And at sunset?")
    r = _row(prompt=prompt)
    assert r["id"] == "7"
    assert r["prompt"] == list(prompt) and isinstance(r["prompt"], list)
    assert r["response_a"] == ["Rayleigh scattering.", "Red light travels further."]
    assert r["label"] == [1.0, 0.0, 0.0] and all(isinstance(x, float) for x in r["label"])
    assert (r["model_a"], r["model_b"], r["source"]) == ("gpt-4-0613", "vicuna-13b", "kaggle_csv")
    assert r["group"] == prompt_group(list(prompt))
    bare = make_row("x", ["p"], ["a"], ["b"])
    assert bare["label"] is None and bare["model_a"] is None and bare["model_b"] is None
    assert bare["source"] == ""


def test_make_row_copies_the_turn_lists():
    turns = ["answer"]
    r = make_row(1, ["q"], turns, ["other"])
    turns.append("changed later")
    assert r["response_a"] == ["answer"]


def test_prompt_group_hashes_the_normalised_turns():
    expected = hashlib.sha1(b"why is the sky blue?\x1fand at sunset?").hexdigest()[:16]
    assert prompt_group(["Why is the sky blue?", "And at sunset?"]) == expected
    # case, whitespace and NFKC compatibility forms do not matter
    assert prompt_group(["  WHY  is the\tsky\nblue?", "and AT sunset?"]) == expected
    assert prompt_group(["ｆｉｌｅ"]) == prompt_group(["ﬁle"]) == prompt_group(["FILE"])
    # the turn boundaries and the words do
    assert prompt_group(["a b"]) != prompt_group(["a", "b"])
    assert prompt_group(["Why is the sky green?", "And at sunset?"]) != expected
    assert len(expected) == 16 and int(expected, 16) >= 0


def test_prompt_group_accepts_lone_surrogates():
    # text read with errors="surrogateescape" can carry lone surrogates: hashed, not an error
    assert prompt_group(["bad \udce9 byte"]) != prompt_group(["bad  byte"])


def test_swap_row_exchanges_a_and_b_and_flips_label_and_teachers():
    r = dict(_row(label=[0.6, 0.3, 0.1]), teacher={"stage1": [0.2, 0.5, 0.3]})
    before = copy.deepcopy(r)
    s = swap_row(r)
    assert r == before, "the input row is not modified"
    assert s["response_a"] == r["response_b"] and s["response_b"] == r["response_a"]
    assert (s["model_a"], s["model_b"]) == ("vicuna-13b", "gpt-4-0613")
    assert s["label"] == [0.3, 0.6, 0.1]
    assert s["teacher"] == {"stage1": [0.5, 0.2, 0.3]}
    assert s["swapped"] is True
    assert s["prompt"] == r["prompt"] and s["group"] == r["group"] and s["id"] == r["id"]
    assert [LABELS[i] for i in SWAP_PERM] == ["winner_model_b", "winner_model_a", "winner_tie"]


def test_swap_row_twice_is_the_identity():
    r = dict(_row(label=[0.6, 0.3, 0.1]), teacher={"t": [0.7, 0.2, 0.1]}, swapped=False)
    assert swap_row(swap_row(r)) == r
    assert swap_row(swap_row(swap_row(r))) == swap_row(r)
    unlabelled = _row(label=None, model_a=None, model_b=None)
    twice = swap_row(swap_row(unlabelled))
    assert twice == {**unlabelled, "swapped": False}
    assert swap_row(unlabelled)["label"] is None


def test_pair_key_keeps_an_existing_key_else_derives_one_from_source_and_id():
    r = _row()
    assert pair_key(r) == "swap:kaggle_csv:7"
    assert pair_key(swap_row(r)) == pair_key(r), "a row and its swap share a key"
    assert pair_key(dict(r, pair="p12")) == "p12"
    assert pair_key(dict(r, pair=None)) == "swap:kaggle_csv:7"
    assert pair_key({"id": "3"}) == "swap::3"
    assert pair_key(_row(source="arena_33k")) != pair_key(r), "the same id in two sources: two keys"


def test_rows_digest_is_stable_and_sees_what_is_trained_on():
    rows = [_row(id=i, label=[i % 2, 1 - i % 2, 0]) for i in range(4)]
    d = rows_digest(rows)
    assert len(d) == 16 and int(d, 16) >= 0
    assert rows_digest(copy.deepcopy(rows)) == d
    assert rows_digest([dict(reversed(list(r.items()))) for r in rows]) == d, "key order does not matter"
    # fields that are not the comparison itself do not change it
    assert rows_digest([dict(r, model_a="x", source="y", teacher={"t": [1, 0, 0]}) for r in rows]) == d
    # what is compared, its label and the row order do
    assert rows_digest(rows[::-1]) != d
    assert rows_digest(rows[:3]) != d
    assert rows_digest([dict(rows[0], label=[0.0, 0.0, 1.0])] + rows[1:]) != d
    assert rows_digest([dict(rows[0], response_b=["Changed."])] + rows[1:]) != d
    assert rows_digest([dict(rows[0], id="other")] + rows[1:]) != d
    assert rows_digest([swap_row(rows[0])] + rows[1:]) != d
    assert rows_digest([]) == hashlib.sha256().hexdigest()[:16]


def test_competition_source_is_the_kaggle_csv_source_and_plugin(tmp_path):
    from replicator.core.data.competition import read_competition_csv

    assert COMPETITION_SOURCE == "kaggle_csv"
    assert BUILTINS[COMPETITION_SOURCE] == "replicator.plugins.kaggle_csv:KaggleCSV"
    rows = read_competition_csv(write_csv(tmp_path / "train.csv", synthetic_rows(6)), require_labels=True)
    assert len(rows) == 6 and {r["source"] for r in rows} == {COMPETITION_SOURCE}
    assert pair_key(rows[0]) == f"swap:{COMPETITION_SOURCE}:{rows[0]['id']}"


def test_swapped_view_is_the_swap_ab_view_and_plugin():
    from replicator.plugins.swap_ab import SwapAB, SwapView

    assert SWAPPED_VIEW == "swap_ab"
    assert BUILTINS[SWAPPED_VIEW] == "replicator.plugins.swap_ab:SwapAB"
    assert SwapView().name == SWAPPED_VIEW
    r = _row(label=[1, 0, 0])
    both = SwapAB(train="full").augment(rows=[r], epoch=0, seed=0)
    assert [x.get("swapped", False) for x in both] == [False, True]
    assert {x["pair"] for x in both} == {pair_key(r)}


def test_data_context_held_out_groups_and_encoded_defaults(tmp_path):
    ctx = DataContext(data_dir=tmp_path, seed=1, valid_groups={"g1", "g2"}, test_groups={"g2", "g3"})
    assert ctx.held_out_groups == {"g1", "g2", "g3"}
    assert DataContext(data_dir=tmp_path, seed=1).held_out_groups == set()
    a, b = Encoded([1, 2]), Encoded([3])
    a.removed["prompt"] = 4
    assert b.removed == {} and a.truncated is False
