"""9th place (Ebi): the earlier conversation as context, then both last responses."""

from __future__ import annotations

import dataclasses
from typing import Literal

from replicator.core.hookspecs import hookimpl
from replicator.core.lib import truncation as tr
from replicator.core.lib.truncation import Ref
from replicator.core.params import param


@dataclasses.dataclass(frozen=True)
class ContextLast:
    """9th place [P9]: ``response_a`` = last response of A, ``response_b`` = last of B,
    ``context`` = all earlier user turns + one model's earlier responses.

    The exact template is **unknown** [P9]; the tag style is **our choice** after [JP]
    *(secondary)*, which says ``<context>``/``<response_A>``/``<response_B>`` tags::

        <context>\\nUser: {p1}\\nAssistant: {a1}\\n … User: {p_last}\\n</context>\\n
        <response_A>\\n{a_last}\\n</response_A>\\n<response_B>\\n{b_last}\\n</response_B>

    (no line break between ``</context>\\n`` and ``<response_A>``). The earlier responses come from
    model ``context_from`` (A by default, our choice; [P9] says "one model's"). BOS in front, no
    EOS (HF defaults for Gemma). Truncation default ``keep_end``: [P9] uses
    ``truncation_side="left"``; here whole earliest rounds of the context are dropped first, then
    fields longest-first, so the tags survive (our approximation of a token-level left cut).
    Lengths: train 256×6 = 1536, inference 256×7 = 1792 [P9].
    """

    truncate: tr.Policy = param("keep_end", tr.POLICY_DOC)
    budgets: list[float] = tr.budgets_field()
    context_from: Literal["a", "b"] = param("a", "whose earlier responses go into the context (our choice)")

    @hookimpl
    def prompt_format(self, row, tokenizer, max_length):
        ctx = self.context_from

        def layout(kept):
            if not kept:
                return []
            out = ["<context>\n"]
            for i in kept[:-1]:
                out += ["User: ", Ref("prompt", i), "\nAssistant: ", Ref(ctx, i), "\n"]
            last = kept[-1]
            return out + ["User: ", Ref("prompt", last), "\n</context>\n<response_A>\n", Ref("a", last),
                          "\n</response_A>\n<response_B>\n", Ref("b", last), "\n</response_B>"]

        return tr.fit_row(row, tokenizer, layout, max_length, self.truncate, budgets=self.budgets)
