"""3rd place (Mark Tenenholtz): XML-like tags per turn, concatenated."""

from __future__ import annotations

import dataclasses

from replicator.core.hookspecs import hookimpl
from replicator.core.lib.truncation import (
    POLICY_DOC,
    Policy,
    Ref,
    Turns,
    bos,
    budgets_field,
    check_budgets,
    encoder,
    fit,
    per_round,
    row_turns,
)
from replicator.core.params import param


@dataclasses.dataclass(frozen=True)
class TaggedTurns:
    """3rd place, Mark's format [R3m] ``llm_qlora.py format_prompt``, [P3].

    Per turn ``<PROMPT>{prompt}</PROMPT><RESPONSE A>{response_a}</RESPONSE A><RESPONSE B>{response_b}</RESPONSE B>``,
    turns concatenated with no separator; the tags are plain text, not special tokens ("training
    my embeddings seemed to hurt" [P3]). BOS in front and no EOS, as the HF tokenizer call of
    [R3m] gives for Gemma. Truncation: plain tokenizer truncation that keeps the start ("no fancy
    turn truncation" [P3]) = ``keep_start`` (default); the cut may fall inside a tag. Mark's
    lengths: train 1800, validation 8192, inference 4k [P3] (set ``train.max_length`` /
    ``predict.max_length``).
    """

    truncate: Policy = param("keep_start", POLICY_DOC)
    budgets: list[float] = budgets_field()

    def __post_init__(self):
        check_budgets(self.budgets)

    @hookimpl
    def prompt_format(self, row, tokenizer, max_length):
        enc = encoder(tokenizer)
        layout = per_round(lambda pos, i: [
            "<PROMPT>", Ref("prompt", i), "</PROMPT><RESPONSE A>", Ref("a", i),
            "</RESPONSE A><RESPONSE B>", Ref("b", i), "</RESPONSE B>"])
        return fit(Turns(enc, row_turns(row)), layout, max_length, self.truncate, enc,
                   head=bos(tokenizer), budgets=self.budgets)
