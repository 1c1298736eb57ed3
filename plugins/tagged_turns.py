"""3rd place (Mark Tenenholtz): XML-like tags per turn, concatenated."""

from __future__ import annotations

import dataclasses

from replicator.core.hookspecs import hookimpl
from replicator.core.lib import truncation as tr
from replicator.core.lib.truncation import Ref
from replicator.core.params import param


@dataclasses.dataclass(frozen=True)
class TaggedTurns:
    """3rd place, Mark's format [R3m] ``llm_qlora.py format_prompt``, [P3].

    Per turn ``<PROMPT>{prompt}</PROMPT><RESPONSE A>{response_a}</RESPONSE A>\
<RESPONSE B>{response_b}</RESPONSE B>``,
    turns concatenated with no separator; the tags are plain text, not special tokens ("training
    my embeddings seemed to hurt" [P3]). BOS in front and no EOS, as the HF tokenizer call of
    [R3m] gives for Gemma. Truncation: plain tokenizer truncation that keeps the start ("no fancy
    turn truncation" [P3]) = ``keep_start`` (default); the cut may fall inside a tag. Mark's
    lengths: train 1800, validation 8192, inference 4k [P3] (set ``train.max_length`` /
    ``predict.max_length``).
    """

    truncate: tr.Policy = param("keep_start", tr.POLICY_DOC)
    budgets: list[float] = tr.budgets_field()

    @hookimpl
    def prompt_format(self, row, tokenizer, max_length):
        layout = tr.per_round(lambda pos, i: [
            "<PROMPT>", Ref("prompt", i), "</PROMPT><RESPONSE A>", Ref("a", i),
            "</RESPONSE A><RESPONSE B>", Ref("b", i), "</RESPONSE B>"])
        return tr.fit_row(row, tokenizer, layout, max_length, self.truncate, budgets=self.budgets)
