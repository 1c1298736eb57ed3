"""Turn-aware layout and truncation shared by the prompt formats (a library module, not a plugin).

A format describes its text as a **layout**: a function from the rounds still kept to a list of
pieces, each either fixed template text (``str``, or token ids) or a :class:`Ref` to one field
(``prompt``, ``a`` or ``b``) of one round. The fields are tokenized once into :class:`Turns`; the
policies below cut those token lists (or drop rounds) until ``head + layout + tail`` fits the
budget. Fixed template text is never cut, except as a last resort when even the template alone
does not fit (then the end of the head/body is cut and the tail is kept). Every field is
tokenized on its own, so the ids at a field boundary can differ from tokenizing the whole text
at once (a few tokens with BPE tokenizers; none with a character tokenizer).

Every format declares its own ``truncate`` parameter (a :data:`Policy`, or a ``Literal`` that adds
its special policy) and ``budgets = budgets_field()`` (checked by :func:`check_budgets` when the
recipe is resolved). A format of the common shape (BOS, its layout over the row's rounds, a tail)
calls :func:`fit_row`; others call :func:`fit` with their own head and tail. Shared policies,
accepted by every format:

``keep_start``     right truncation: the body is laid out in order and cut at the budget, so the
                   beginning survives (HF ``truncation_side="right"``; 1st/2nd/3rd place).
``keep_end``       left truncation: whole earliest rounds are dropped until the rest fits; if the
                   last round alone is too long, its fields are cut longest-first (16th, 9th).
``longest_first``  the field (over all rounds) with the most tokens loses one token from its
                   end, repeatedly (ties: the earlier field), so short fields survive whole.
``budgets``        per-field budgets: the room left after the template is split by ``budgets``
                   fractions between all prompt turns, all A turns and all B turns; a kind that
                   needs less than its share gives the rest to the others (water-filling); within
                   a kind the longest turn is cut first.

Two solution-specific policies, exposed only by their formats:

``prompt_then_answers`` (1st place [R1]) cut the prompt to its first ``prompt_tokens`` tokens,
                   then the longer answer from its end until both are equal, then both
                   alternately (= longest-first over the answers, A first on ties).
``overflow_split`` (4th place [R4]) keep whole early rounds; the first round that overflows gets
                   the remaining room (minus three ellipses) split by ``budgets``, each field cut
                   from its end with ``ellipsis`` appended; if less than ``min_tail_budget``
                   tokens remain, that round and all later ones are dropped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Literal

from replicator.core.params import param
from replicator.core.rows import Encoded

Policy = Literal["keep_start", "keep_end", "longest_first", "budgets"]
POLICIES = ("keep_start", "keep_end", "longest_first", "budgets")
SPECIAL = ("prompt_then_answers", "overflow_split")
FIELDS = ("prompt", "a", "b")
POLICY_DOC = ("how to fit the budget: keep_start (cut the end) | keep_end (drop earliest rounds) | "
              "longest_first (trim the longest field) | budgets (per-field fractions); "
              "see replicator.core.lib.truncation")


@dataclasses.dataclass(frozen=True)
class Ref:
    """A field of one round inside a layout: ``field`` in prompt/a/b, ``turn`` the round index."""

    field: str
    turn: int


Piece = str | list | Ref  # fixed text, fixed token ids, or a field
Layout = Callable[[list[int]], list[Piece]]


BUDGETS_DOC = ("fractions of the room for prompt / response A / response B, used by the `budgets` policy "
               "(and by `overflow_split` where a format offers it)")


def budgets_field():
    """The ``budgets`` parameter every prompt format declares: ``budgets: list[float] = budgets_field()``
    (:func:`check_budgets` runs on it when a recipe is built)."""
    return param([0.2, 0.4, 0.4], BUDGETS_DOC, check=check_budgets)


def check_budgets(budgets: Sequence[float]) -> None:
    """Three non-negative fractions (prompt, A, B) with a positive sum, else ValueError naming ``budgets``."""
    if len(budgets) != 3 or any(x < 0 for x in budgets) or sum(budgets) <= 0:
        raise ValueError(f"budgets must be three non-negative fractions (prompt, A, B), got {budgets!r}")


# ------------------------------------------------------------------------------------ tokens


def encoder(tokenizer) -> Callable[[str], list[int]]:
    """A memoised ``text -> ids`` without special tokens (template pieces repeat across rounds)."""
    cache: dict[str, list[int]] = {}

    def enc(text: str) -> list[int]:
        if text not in cache:
            cache[text] = tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
        return cache[text]

    return enc


def encode_text(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []


def bos(tokenizer) -> list[int]:
    return [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []


def eos(tokenizer) -> list[int]:
    return [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []


def fit_row(row, tokenizer, layout: Layout, max_length: int, policy: str, *, tail: str = "",
            eos_end: bool = False, rounds: Sequence[tuple[str, str, str]] | None = None, **kw) -> Encoded:
    """The common case of a format: BOS + ``layout`` over the rounds + ``tail`` text (+ EOS with
    ``eos_end``) fitted by :func:`fit` (``kw``: its options, e.g. ``budgets``); ``rounds`` defaults to
    :func:`row_turns`."""
    enc = encoder(tokenizer)
    turns = Turns(enc, row_turns(row) if rounds is None else rounds)
    end = enc(tail) + (eos(tokenizer) if eos_end else [])
    return fit(turns, layout, max_length, policy, enc, head=bos(tokenizer), tail=end, **kw)


def row_turns(row) -> list[tuple[str, str, str]]:
    """The (prompt, response A, response B) rounds of a row (``None`` turns read as "")."""
    return [(p or "", a or "", b or "")
            for p, a, b in zip(row["prompt"], row["response_a"], row["response_b"], strict=True)]


class Turns:
    """Token ids of each field of each round; the policies cut them in place."""

    def __init__(self, enc: Callable[[str], list[int]], rounds: Sequence[tuple[str, str, str]]):
        self.ids: dict[str, list[list[int]]] = {f: [list(enc(r[i])) for r in rounds]
                                                for i, f in enumerate(FIELDS)}
        self.kept: list[int] = list(range(len(rounds)))

    def get(self, ref: Ref) -> list[int]:
        return self.ids[ref.field][ref.turn]

    def set(self, ref: Ref, ids: list[int]) -> None:
        self.ids[ref.field][ref.turn] = ids


# ------------------------------------------------------------------------------------ rendering


def _render(pieces: list[Piece], turns: Turns, enc) -> list[int]:
    out: list[int] = []
    for p in pieces:
        out += turns.get(p) if isinstance(p, Ref) else enc(p) if isinstance(p, str) else p
    return out


def _size(pieces: list[Piece], turns: Turns, enc) -> int:
    return sum(len(turns.get(p)) if isinstance(p, Ref) else len(enc(p)) if isinstance(p, str) else len(p)
               for p in pieces)


def _refs(pieces: list[Piece]) -> dict[Ref, int]:
    """Each field reference of a layout with how often it appears, in order of appearance."""
    out: dict[Ref, int] = {}
    for p in pieces:
        if isinstance(p, Ref):
            out[p] = out.get(p, 0) + 1
    return out


def _add(removed: dict[str, int], key: str, n: int) -> None:
    if n > 0:
        removed[key] = removed.get(key, 0) + n


def cut_longest(turns: Turns, weights: dict[Ref, int], excess: int, removed: dict[str, int]) -> int:
    """Remove tokens from the ends of the longest fields until ``excess`` is covered.

    Equivalent to "repeatedly cut one token from the longest field, the earlier one on ties",
    computed with a water level. ``weights`` counts how often each field is laid out (a token
    cut from a field laid out twice saves two). Returns what could not be removed.
    """
    refs = [r for r in weights if weights[r] > 0]
    if excess <= 0 or not refs:
        return max(0, excess)

    def saved(level: int) -> int:
        return sum(weights[r] * max(0, len(turns.get(r)) - level) for r in refs)

    total = saved(0)
    if total <= excess:
        for r in refs:
            _add(removed, r.field, len(turns.get(r)))
            turns.set(r, [])
        return excess - total
    lo, hi = 0, max(len(turns.get(r)) for r in refs)  # saved(lo) > excess >= saved(hi) = 0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if saved(mid) > excess else (lo, mid)
    rest = excess - saved(hi)  # cut everything down to `hi`, then one more token in order
    for r in refs:
        cur = turns.get(r)
        if len(cur) > hi:
            _add(removed, r.field, len(cur) - hi)
            turns.set(r, cur[:hi])
    for r in refs:
        if rest <= 0:
            break
        cur = turns.get(r)
        if len(cur) == hi and hi > 0:
            _add(removed, r.field, 1)
            turns.set(r, cur[:-1])
            rest -= weights[r]
    return max(0, rest)


def _water_fill(room: int, need: dict[str, int], fracs: Sequence[float]) -> dict[str, int]:
    """Share ``room`` between the kinds by ``fracs``; a kind that needs less gives the rest away."""
    alloc = {k: 0 for k in need}
    active = [k for k in need if need[k] > 0]
    left = room
    while active:
        weight = {k: fracs[FIELDS.index(k)] for k in active}
        total = sum(weight.values())
        share = {k: (left * weight[k] / total) if total > 0 else left / len(active) for k in active}
        done = [k for k in active if need[k] <= share[k]]
        if not done:
            for k in active:
                alloc[k] = int(share[k])
            break
        for k in done:
            alloc[k] = need[k]
            left -= need[k]
            active.remove(k)
    return alloc


# ------------------------------------------------------------------------------------ fitting


def fit(turns: Turns, layout: Layout, max_length: int, policy: str, enc, *,
        head: Sequence[int] = (), tail: Sequence[int] = (), budgets: Sequence[float] = (0.2, 0.4, 0.4),
        prompt_tokens: int = 256, min_tail_budget: int = 80, ellipsis: str = "......") -> Encoded:
    """Lay out ``head + layout(kept rounds) + tail`` within ``max_length`` tokens under ``policy``."""
    if policy not in POLICIES + SPECIAL:
        raise ValueError(f"unknown truncation policy {policy!r}; known: {', '.join(POLICIES + SPECIAL)}")
    head, tail = list(head), list(tail)
    removed: dict[str, int] = {}
    fixed = len(head) + len(tail)

    def size() -> int:
        return fixed + _size(layout(turns.kept), turns, enc)

    def done(truncated: bool = True) -> Encoded:
        body = _render(layout(turns.kept), turns, enc)
        return hard_cap(head + body, tail, max_length, truncated, removed)

    if size() <= max_length:
        return done(truncated=False)
    if policy == "keep_start":
        body = _render(layout(turns.kept), turns, enc)
        room = max(0, max_length - fixed)
        _add(removed, "body", len(body) - room)
        return hard_cap(head + body[:room], tail, max_length, True, removed)
    if policy == "keep_end":
        while len(turns.kept) > 1 and size() > max_length:
            turns.kept.pop(0)
            _add(removed, "rounds", 1)
    if policy == "prompt_then_answers":
        pieces = layout(turns.kept)
        prompts = [r for r in _refs(pieces) if r.field == "prompt"]
        budget = prompt_tokens
        for r in prompts:  # keep the first `prompt_tokens` tokens of the prompt, in order
            cur = turns.get(r)
            _add(removed, "prompt", max(0, len(cur) - budget))
            turns.set(r, cur[:budget])
            budget = max(0, budget - len(cur))
        answers = {r: c for r, c in _refs(layout(turns.kept)).items() if r.field in ("a", "b")}
        cut_longest(turns, answers, size() - max_length, removed)
    if policy == "overflow_split":
        return _overflow_split(turns, layout, max_length, enc, head, tail, budgets,
                               min_tail_budget, ellipsis, removed)
    if policy == "budgets":
        pieces = layout(turns.kept)
        weights = _refs(pieces)
        need = {k: sum(len(turns.get(r)) * c for r, c in weights.items() if r.field == k) for k in FIELDS}
        room = max(0, max_length - (size() - sum(need.values())))
        alloc = _water_fill(room, need, budgets)
        for k in FIELDS:
            field_weights = {r: c for r, c in weights.items() if r.field == k}
            cut_longest(turns, field_weights, need[k] - alloc[k], removed)
    # longest_first, and the fallback of every policy above
    cut_longest(turns, _refs(layout(turns.kept)), size() - max_length, removed)
    return done()


def _overflow_split(turns, layout, max_length, enc, head, tail, fracs, min_tail, ellipsis, removed):
    fixed = len(head) + len(tail)
    dots = enc(ellipsis)
    rounds = list(turns.kept)
    k = 0  # rounds kept whole
    while k < len(rounds) and fixed + _size(layout(rounds[: k + 1]), turns, enc) <= max_length:
        k += 1
    if k < len(rounds):
        over = rounds[k]
        mine = [Ref(f, over) for f in FIELDS]
        saved = {r: turns.get(r) for r in mine}
        for r in mine:
            turns.set(r, [])
        room = max_length - fixed - _size(layout(rounds[: k + 1]), turns, enc) - 3 * len(dots)
        for r in mine:
            turns.set(r, saved[r])
        if room >= min_tail:
            for r, frac in zip(mine, fracs, strict=True):
                cur, n = turns.get(r), int(room * frac)
                if len(cur) > n:
                    _add(removed, r.field, len(cur) - n)
                    turns.set(r, cur[:n] + dots)
            k += 1
        _add(removed, "rounds", len(rounds) - k)
        turns.kept = rounds[:k]
    body = _render(layout(turns.kept), turns, enc)
    return hard_cap(head + body, tail, max_length, True, removed)


def hard_cap(ids: list[int], tail: list[int], max_length: int, truncated: bool, removed) -> Encoded:
    """Last resort when the template itself does not fit: cut the end, keep the tail (the question)."""
    if len(ids) + len(tail) <= max_length:
        return Encoded(ids + tail, truncated, removed)
    if max_length <= 0:
        _add(removed, "template", len(ids) + len(tail))
        return Encoded([], True, removed)
    keep_tail = tail[-max_length:]
    out = ids[: max_length - len(keep_tail)] + keep_tail
    _add(removed, "template", len(ids) + len(tail) - len(out))
    return Encoded(out, True, removed)


# ------------------------------------------------------------------------------------ layouts


def per_round(build: Callable[[int, int], Sequence[Piece]], sep: Piece = "") -> Layout:
    """A layout that repeats ``build(position, round index)`` for each kept round, joined by ``sep``.

    ``position`` counts the kept rounds from 0 (first-round variants of a header); ``round index``
    is the round's index in the row (for a ``Ref`` and for round numbers).
    """

    def layout(kept: list[int]) -> list[Piece]:
        out: list[Piece] = []
        for pos, i in enumerate(kept):
            if pos and sep:
                out.append(sep)
            out += build(pos, i)
        return out

    return layout


def grouped(blocks: Sequence[tuple[str, str, str]], joiner: str) -> Layout:
    """A layout that gathers all turns of each field into one block: ``before`` + turns joined by
    ``joiner`` + ``after`` for each ``(field, before, after)`` in ``blocks``."""

    def layout(kept: list[int]) -> list[Piece]:
        out: list[Piece] = []
        for field, before, after in blocks:
            out.append(before)
            for pos, i in enumerate(kept):
                if pos:
                    out.append(joiner)
                out.append(Ref(field, i))
            out.append(after)
        return out

    return layout

