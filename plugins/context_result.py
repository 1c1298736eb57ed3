"""3rd place (Raja Biswas): ``[CONTEXT] … [RESPONSE A] … [RESPONSE B] … [Result]:``."""

from __future__ import annotations

import dataclasses

from replicator.core.hookspecs import hookimpl
from replicator.core.lib import truncation as tr
from replicator.core.params import param


@dataclasses.dataclass(frozen=True)
class ContextResult:
    """3rd place, Raja's format [P3]: \
``[CONTEXT] {prompt}\\n\\n[RESPONSE A] {response_a}\\n\\n[RESPONSE B] {response_b}\\n\\n[Result]:``.

    [P3] gives the template for one turn only. For several turns (**our choice**, following the
    layout of [R3r]'s code, which gathers all prompts, then all A turns, then all B turns) the
    turns of each field are joined by ``joiner`` (``\\n\\n``) inside its block. If a row has more
    than 2 × ``keep_turns`` turns, only the first ``keep_turns`` and the last ``keep_turns`` are
    kept ([P3]: "if > 4 turns keep first 2 and last 2"; [R3r] ``lmsys_dataset.py``). BOS in front,
    no EOS (HF tokenizer defaults for Gemma). Truncation default ``keep_end``: Raja's configs set
    ``truncation_side: left`` [R3r]; HF left truncation cuts tokens from the start, here whole
    earliest turns are dropped (then fields longest-first) so the block tags survive (our
    approximation). Lengths: 1664 (Gemma), 1792 (Llama) for training [R3r]; 4096/3072 inference [P3].
    """

    truncate: tr.Policy = param("keep_end", tr.POLICY_DOC)
    budgets: list[float] = tr.budgets_field()
    keep_turns: int = param(2, "with more than 2×keep_turns turns keep the first and last keep_turns "
                            "turns [P3]; 0 keeps all", ge=0)
    joiner: str = param("\n\n", "text between the turns of one field (our choice; unknown in [P3])")

    @hookimpl
    def prompt_format(self, row, tokenizer, max_length):
        rounds = tr.row_turns(row)
        k, dropped = self.keep_turns, 0
        if k > 0 and len(rounds) > 2 * k:
            dropped = len(rounds) - 2 * k
            rounds = rounds[:k] + rounds[-k:]
        layout = tr.grouped([("prompt", "[CONTEXT] ", ""), ("a", "\n\n[RESPONSE A] ", ""),
                             ("b", "\n\n[RESPONSE B] ", "")], self.joiner)
        out = tr.fit_row(row, tokenizer, layout, max_length, self.truncate, tail="\n\n[Result]:",
                         rounds=rounds, budgets=self.budgets)
        if dropped:
            out.truncated = True
            out.removed["turns"] = dropped
        return out
