"""A plain, model-agnostic prompt format with turn-aware truncation."""

from __future__ import annotations

import dataclasses
from typing import Literal

from replicator.core.hookspecs import hookimpl
from replicator.core.lib import truncation as tr
from replicator.core.lib.toggles import SharedToggle, ToggleView, plugins_patch
from replicator.core.lib.truncation import Ref
from replicator.core.params import param


@dataclasses.dataclass(frozen=True)
class PlainTurns:
    """Rounds of ``User: … / Response A: … / Response B: …``, then a question line.

    The project's own simple format (not from a write-up): BOS, then per round
    ``"\\n## Round {i}\\nUser: {prompt}\\n\\nResponse A: {a}\\n\\nResponse B: {b}\\n"`` and finally
    ``"\\nWhich response is better? A, B or tie:"`` and EOS; the last token (EOS) is where the
    head reads. Truncation (our choice, default ``longest_first``): see
    :mod:`replicator.core.lib.truncation`.

    ``show_lengths`` (our option, off by default) adds ``"\nLength in words: A {n_a}, B {n_b}."``
    before the question, counted on the whole untruncated responses. Response length is the
    strongest single signal of this competition's labels (the length features of the early
    GBDT baselines, SOLUTIONS.md §4), and a short token budget otherwise hides it.
    """

    truncate: tr.Policy = param("longest_first", "keep_start | keep_end | longest_first | budgets "
                             "(see replicator.core.lib.truncation)")
    budgets: list[float] = tr.budgets_field()
    question: str = param("\nWhich response is better? A, B or tie:", "closing text before EOS")
    show_lengths: bool = param(False, "state each response's full length in words before the question "
                               "(never truncated), so a short budget still sees it")
    layout: Literal["rounds", "concatenated"] = param(
        "rounds", "rounds: turn by turn (each round's prompt, A, B); concatenated: every prompt turn, then "
                  "every turn of A, then of B (the write-up author's layout, whose turn-by-turn variant did "
                  "not help them, SOLUTIONS.md §4b)")
    turns: Literal["all", "last"] = param("all", "all rounds, or the last round only (the author tried the "
                                                "last prompt turn only, §4b)")
    instruction: str = param("", "text before the conversation (an instruction prompt, §4b); empty = none")

    @hookimpl
    def prompt_format(self, row, tokenizer, max_length):
        if self.layout == "rounds":
            layout = tr.per_round(lambda pos, i: [
                f"\n## Round {i + 1}\nUser: ", Ref("prompt", i), "\n\nResponse A: ", Ref("a", i),
                "\n\nResponse B: ", Ref("b", i), "\n"])
        else:
            layout = _concatenated
        if self.instruction:
            inner, instruction = layout, self.instruction
            layout = lambda kept: [instruction, *inner(kept)]  # noqa: E731
        question = self.question
        if self.show_lengths:
            words = [sum(len(t.split()) for t in row[f]) for f in ("response_a", "response_b")]
            question = f"\nLength in words: A {words[0]}, B {words[1]}." + question
        rounds = tr.row_turns(row)
        return tr.fit_row(row, tokenizer, layout, max_length, self.truncate, tail=question, eos_end=True,
                          budgets=self.budgets, rounds=rounds[-1:] if self.turns == "last" else rounds)


def _concatenated(kept: list[int]) -> list:
    """Every kept prompt turn, then every turn of response A, then of response B."""
    out: list = []
    for field, header in (("prompt", "\nUser: "), ("a", "\n\nResponse A: "), ("b", "\n\nResponse B: ")):
        out.append(header)
        for n, i in enumerate(kept):
            out += (["\n"] if n else []) + [Ref(field, i)]
    return [*out, "\n"]


# ---------------------------------------------------------------- shared toggle: lengths


def _has_lengths(v: ToggleView) -> bool:
    return bool(v.prompt_param("show_lengths")[1].show_lengths)


def _lengths(value: bool):
    return lambda v: [plugins_patch({v.prompt_param("show_lengths")[0]: {"show_lengths": value}})]


#: on any prompt format with a ``show_lengths`` parameter (others: the toggle cannot apply)
SHARED_TOGGLES = [
    SharedToggle("lengths", "response lengths stated in the prompt", _has_lengths, _lengths(False),
                 _lengths(True),
                 "removing the stated response lengths from the prompt (show_lengths: false)",
                 "stating the response lengths in the prompt (show_lengths: true)", rank=110),
]
