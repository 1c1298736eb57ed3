"""4th place (Daoyuan Li): ``## Round i`` headers, the overflowing round split 20/40/40."""

from __future__ import annotations

import dataclasses
from typing import Literal

from replicator.core.hookspecs import hookimpl
from replicator.core.lib import truncation as tr
from replicator.core.lib.truncation import Ref
from replicator.core.params import param

RoundPolicy = Literal["overflow_split", "keep_start", "keep_end", "longest_first", "budgets"]


@dataclasses.dataclass(frozen=True)
class RoundHeaders:
    """4th place [R4] readme ``tokenize_cls_p3`` (and ``code/1.train.py``).

    BOS + per round ``## Round {i}:`` (``\\n\\n## Round {i}:`` after the first) +
    ``\\n### Prompt:\\n{p}`` + ``\\n\\n### Response A:\\n{ra}`` + ``\\n\\n### Response B:\\n{rb}``, then
    ``\\n\\n---\\nWhich response is better? [A or B or tie]\\nAnswer: `` + EOS [R4].

    Truncation ``overflow_split`` (default, [R4]): whole early rounds are kept; the round that
    overflows gets the remaining budget (minus three ellipses) split ``budgets`` = 20 % prompt /
    40 % A / 40 % B, each field longer than its share cut from its end with ``ellipsis``
    (``......``) appended; if fewer than ``min_tail_budget`` (80) tokens remain, that round and
    all later ones are dropped. One deviation: [R4] counts each field's header
    (``\\n### Prompt:\\n`` …) inside that field's share and may cut into it; here headers are fixed
    template text, never cut, and the shares apply to the field text only. Rounds dropped by
    ``keep_end`` keep their original numbers (our choice). Lengths: train 2048, inference 3072 [R4].
    """

    truncate: RoundPolicy = param("overflow_split", "overflow_split (4th place) | keep_start | keep_end | "
                                  "longest_first | budgets (see replicator.core.lib.truncation)")
    budgets: list[float] = tr.budgets_field()
    min_tail_budget: int = param(80, "overflow_split: below this many tokens for the overflowing round, "
                                 "drop it and all later rounds [R4]", ge=0)
    ellipsis: str = param("......", "overflow_split: text appended to a field that was cut [R4]")

    @hookimpl
    def prompt_format(self, row, tokenizer, max_length):
        layout = tr.per_round(lambda pos, i: [
            ("\n\n" if pos else "") + f"## Round {i + 1}:", "\n### Prompt:\n", Ref("prompt", i),
            "\n\n### Response A:\n", Ref("a", i), "\n\n### Response B:\n", Ref("b", i)])
        return tr.fit_row(row, tokenizer, layout, max_length, self.truncate,
                          tail="\n\n---\nWhich response is better? [A or B or tie]\nAnswer: ", eos_end=True,
                          budgets=self.budgets, min_tail_budget=self.min_tail_budget, ellipsis=self.ellipsis)
