"""A plain, model-agnostic prompt format with turn-aware truncation."""

from __future__ import annotations

import dataclasses

from replicator.core.hookspecs import hookimpl
from replicator.core.params import param

from .truncation import Policy, Ref, TruncationParams, Turns, bos, encoder, eos, fit, per_round, row_turns


@dataclasses.dataclass(frozen=True)
class PlainTurns(TruncationParams):
    """Rounds of ``User: … / Response A: … / Response B: …``, then a question line.

    The project's own simple format (not from a write-up): BOS, then per round
    ``"\\n## Round {i}\\nUser: {prompt}\\n\\nResponse A: {a}\\n\\nResponse B: {b}\\n"`` and finally
    ``"\\nWhich response is better? A, B or tie:"`` and EOS; the last token (EOS) is where the
    head reads. Truncation (our choice, default ``longest_first``): see
    :mod:`replicator.plugins.truncation`.
    """

    truncate: Policy = param("longest_first", "keep_start | keep_end | longest_first | budgets "
                             "(see replicator.plugins.truncation)")
    question: str = param("\nWhich response is better? A, B or tie:", "closing text before EOS")

    @hookimpl
    def prompt_format(self, row, tokenizer, max_length):
        enc = encoder(tokenizer)
        layout = per_round(lambda pos, i: [
            f"\n## Round {i + 1}\nUser: ", Ref("prompt", i), "\n\nResponse A: ", Ref("a", i),
            "\n\nResponse B: ", Ref("b", i), "\n"])
        return fit(Turns(enc, row_turns(row)), layout, max_length, self.truncate, enc,
                   head=bos(tokenizer), tail=enc(self.question) + eos(tokenizer), budgets=self.budgets)
