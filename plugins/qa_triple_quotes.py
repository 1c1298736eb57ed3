"""1st place (sayoulala): ``User question / Answer A / Answer B`` in triple quotes."""

from __future__ import annotations

import dataclasses
from typing import Literal

from replicator.core.hookspecs import hookimpl
from replicator.core.lib import truncation as tr
from replicator.core.lib.truncation import Ref
from replicator.core.params import param

QAPolicy = Literal["prompt_then_answers", "keep_start", "keep_end", "longest_first", "budgets"]


def first_words(text: str, n: int) -> tuple[str, int]:
    """The first ``n`` space-separated words (``' '.join(text.split(' ')[:n])`` as in [R1]), and how many
    were cut."""
    words = text.split(" ")
    if n <= 0 or len(words) <= n:
        return text, 0
    return " ".join(words[:n]), len(words) - n


@dataclasses.dataclass(frozen=True)
class QATripleQuotes:
    """1st place [R1] ``src/prepare_data.py`` ``create_rounds`` + training script, [P1].

    ``User question:\\n\"\"\"{query}\"\"\"\\nAnswer A:\\n\"\"\"{answer_a}\"\"\"\
\\nAnswer B:\\n\"\"\"{answer_b}\"\"\"\\n``
    where the turns of the prompt and of each answer are joined by ``\\n``; BOS (the tokenizer's
    own, as ``tokenizer(text)`` adds for Gemma) and EOS appended; any literal EOS token text in the
    input is replaced by ``<end>`` [R1].

    Budgets [R1]: first the word pre-cut, always: the joined prompt keeps its first
    ``prompt_words`` (256) words and each joined answer its first ``answer_words`` (700), words
    split on single spaces. Then, if it does not fit (``prompt_then_answers``, default): the prompt
    is cut to its first ``prompt_tokens`` (256) tokens, then the longer answer is trimmed from its
    end until both are equal, then both alternately, so beginnings survive. Deviation: [R1]
    budgets only the three texts (MAX_LENGTH 1024 for training, 2000 at inference, template
    added on top, ids hard-capped at 1100); here ``max_length`` covers the template too, so set it
    ~25 tokens higher to match. Because all turns are joined into one block there is one round:
    ``keep_end`` acts like ``longest_first``.

    ``append_eos: false`` leaves the EOS out, so the last token, the one the head reads, is the
    newline after the last triple quote: [R1] appended EOS, but with the pad token set to EOS the
    sequence-classification head pools the last token before the first pad id, i.e. the token
    before that EOS; under causal attention its hidden state is the same with or without the EOS
    after it.
    """

    truncate: QAPolicy = param("prompt_then_answers", "prompt_then_answers (1st place) | keep_start | "
                               "keep_end | longest_first | budgets (see replicator.core.lib.truncation)")
    budgets: list[float] = tr.budgets_field()
    prompt_words: int = param(256, "word pre-cut: keep the first N words of the prompt [R1]; 0 = off", ge=0)
    answer_words: int = param(700, "word pre-cut: keep the first N words of each answer [R1]; 0 = off", ge=0)
    prompt_tokens: int = param(256, "prompt_then_answers: the prompt keeps its first N tokens [R1]", ge=0)
    eos_replacement: str = param("<end>", "replaces literal EOS token text inside the conversation [R1]")
    append_eos: bool = param(True, "append EOS (the head reads it); false: the head reads the token before "
                                   "where it would stand, as [R1] did with pad = eos")

    @hookimpl
    def prompt_format(self, row, tokenizer, max_length):
        texts = ["\n".join(t or "" for t in row[k]) for k in ("prompt", "response_a", "response_b")]
        if tokenizer.eos_token:
            texts = [t.replace(tokenizer.eos_token, self.eos_replacement) for t in texts]
        cut: dict[str, int] = {}
        for j, (key, n) in enumerate((("prompt_words", self.prompt_words), ("a_words", self.answer_words),
                                      ("b_words", self.answer_words))):
            texts[j], cut[key] = first_words(texts[j], n)
        layout = tr.per_round(lambda pos, i: [
            'User question:\n"""', Ref("prompt", i), '"""\nAnswer A:\n"""', Ref("a", i),
            '"""\nAnswer B:\n"""', Ref("b", i), '"""\n'])
        out = tr.fit_row(row, tokenizer, layout, max_length, self.truncate, eos_end=self.append_eos,
                         rounds=[tuple(texts)], budgets=self.budgets, prompt_tokens=self.prompt_tokens)
        for key, n in cut.items():
            if n:
                out.truncated = True
                out.removed[key] = n
        return out
