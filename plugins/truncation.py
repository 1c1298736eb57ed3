"""Turn-aware truncation shared by the prompt formats (a helper module, not a plugin).

A prompt is a ``head`` (fixed text), ``rounds`` of (prompt, response A, response B) each wrapped
in fixed template text, and a ``tail``. Fixed text is never cut; the three fields of each round
are tokenized separately and cut by one of these policies until the whole fits the budget:

``keep_start``     right truncation: the conversation is laid out in order and cut at the budget,
                   so the beginning survives (1st, 2nd and 3rd place).
``keep_end``       left truncation: whole earliest rounds are dropped until the rest fits; if the
                   last round alone is too long, its fields are cut longest-first (16th, 9th).
``longest_first``  the field (over all rounds) with the most tokens loses one token from its end,
                   repeatedly, so short fields survive whole (the project's default).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

Policy = Literal["keep_start", "keep_end", "longest_first"]
POLICIES = ("keep_start", "keep_end", "longest_first")


@dataclasses.dataclass
class Round:
    """One round: fixed template pieces around the three fields, all as token ids."""

    before_prompt: list[int]
    prompt: list[int]
    before_a: list[int]
    a: list[int]
    before_b: list[int]
    b: list[int]
    after: list[int]

    def fixed(self) -> int:
        return len(self.before_prompt) + len(self.before_a) + len(self.before_b) + len(self.after)

    def size(self) -> int:
        return self.fixed() + len(self.prompt) + len(self.a) + len(self.b)

    def ids(self) -> list[int]:
        return self.before_prompt + self.prompt + self.before_a + self.a + self.before_b + self.b + self.after


def _cut_longest_first(rounds: list[Round], excess: int, removed: dict[str, int]) -> int:
    """Remove ``excess`` tokens from the ends of the longest fields; return what could not be removed."""
    fields = [(r, f) for r in rounds for f in ("prompt", "a", "b")]
    while excess > 0:
        r, f = max(fields, key=lambda rf: len(getattr(rf[0], rf[1])))
        cur = getattr(r, f)
        if not cur:
            break
        # cut in chunks down to the second-longest length to stay fast on long texts
        second = sorted((len(getattr(x, g)) for x, g in fields), reverse=True)[1] if len(fields) > 1 else 0
        n = max(1, min(excess, len(cur) - second))
        setattr(r, f, cur[: len(cur) - n])
        removed[f] = removed.get(f, 0) + n
        excess -= n
    return excess


def fit(head: list[int], rounds: list[Round], tail: list[int], max_length: int, policy: str):
    """Return (input_ids, truncated, removed) fitting ``max_length`` under ``policy``."""
    if policy not in POLICIES:
        raise ValueError(f"unknown truncation policy {policy!r}; known: {', '.join(POLICIES)}")
    removed: dict[str, int] = {}
    total = len(head) + len(tail) + sum(r.size() for r in rounds)
    if total <= max_length:
        return head + [t for r in rounds for t in r.ids()] + tail, False, removed
    fixed = len(head) + len(tail)
    if policy == "keep_start":
        body = [t for r in rounds for t in r.ids()]
        keep = max(0, max_length - fixed)
        removed["body"] = len(body) - keep
        return head + body[:keep] + tail, True, removed
    if policy == "keep_end":
        rounds = list(rounds)
        while len(rounds) > 1 and fixed + sum(r.size() for r in rounds) > max_length:
            rounds.pop(0)
            removed["rounds"] = removed.get("rounds", 0) + 1
    excess = fixed + sum(r.size() for r in rounds) - max_length
    left = _cut_longest_first(rounds, excess, removed)
    ids = head + [t for r in rounds for t in r.ids()] + tail
    if left > 0:  # even the fixed template does not fit: hard cut, keeping the tail (the question)
        ids = ids[: max(0, max_length - len(tail))] + tail[-max_length:]
    return ids, True, removed


def encode_text(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
