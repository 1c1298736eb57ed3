"""A plain, model-agnostic prompt format with turn-aware truncation."""

from __future__ import annotations

import dataclasses

from replicator.core.hookspecs import hookimpl
from replicator.core.params import param
from replicator.core.rows import Encoded

from .truncation import Policy, Round, encode_text, fit


@dataclasses.dataclass(frozen=True)
class PlainTurns:
    """Rounds of ``User: … / Response A: … / Response B: …``, then a question line.

    The project's own simple format (not from a write-up): BOS, then per round
    ``"\\n## Round {i}\\nUser: {prompt}\\n\\nResponse A: {a}\\n\\nResponse B: {b}\\n"`` and finally
    ``"\\nWhich response is better? A, B or tie:"`` and EOS; the last token (EOS) is where the
    head reads. Truncation: see :mod:`replicator.plugins.truncation`.
    """

    truncate: Policy = param("longest_first", "keep_start | keep_end | longest_first")
    question: str = param("\nWhich response is better? A, B or tie:", "closing text before EOS")

    @hookimpl
    def prompt_format(self, row, tokenizer, max_length):
        enc = lambda s: encode_text(tokenizer, s)  # noqa: E731
        head = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
        tail = enc(self.question) + ([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])
        rounds = [
            Round(enc(f"\n## Round {i + 1}\nUser: "), enc(p), enc("\n\nResponse A: "), enc(a),
                  enc("\n\nResponse B: "), enc(b), enc("\n"))
            for i, (p, a, b) in enumerate(zip(row["prompt"], row["response_a"], row["response_b"], strict=True))
        ]
        ids, truncated, removed = fit(head, rounds, tail, max_length, self.truncate)
        return Encoded(ids, truncated, removed)
