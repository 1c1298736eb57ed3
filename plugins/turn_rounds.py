"""16th place (Chris Deotte): Gemma-style turn markers per round, earliest rounds dropped."""

from __future__ import annotations

import dataclasses

from replicator.core.hookspecs import hookimpl
from replicator.core.lib import truncation as tr
from replicator.core.lib.truncation import Ref
from replicator.core.params import param


@dataclasses.dataclass(frozen=True)
class TurnRounds:
    """16th place [P16]: rounds of (prompt, response A, response B); the exact strings are unknown
    there, so this follows a third-party copy *(secondary, unverified)* (SOLUTIONS.md §1, 16th).

    Per round ``<start_of_turn>prompt\\n{p}<end_of_turn>\\n<start_of_turn>response_a\\n{a}<end_of_turn>\\n\
<start_of_turn>response_b\\n{b}<end_of_turn>``,
    rounds joined by ``\\n``. BOS in front and EOS at the end are **our choice** (unknown in
    [P16]; the public notebook 16th started from appends EOS). With a Gemma tokenizer the markers
    are its special tokens; elsewhere they are plain text. Truncation: drop whole **earliest**
    rounds until the rest fits = ``keep_end`` (default; "left truncation" 0.890 → 0.885 [P16]);
    if the last round alone is too long its fields are cut longest-first (our choice). Lengths:
    train 2048, inference 3072 [P16].
    """

    truncate: tr.Policy = param("keep_end", tr.POLICY_DOC)
    budgets: list[float] = tr.budgets_field()

    @hookimpl
    def prompt_format(self, row, tokenizer, max_length):
        layout = tr.per_round(lambda pos, i: [
            "<start_of_turn>prompt\n", Ref("prompt", i),
            "<end_of_turn>\n<start_of_turn>response_a\n", Ref("a", i),
            "<end_of_turn>\n<start_of_turn>response_b\n", Ref("b", i), "<end_of_turn>"], sep="\n")
        return tr.fit_row(row, tokenizer, layout, max_length, self.truncate, eos_end=True,
                          budgets=self.budgets)
