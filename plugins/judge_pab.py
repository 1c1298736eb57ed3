"""2nd place (tascj et al.): the MT-Bench pairwise judge prompt, PAB and PAPB layouts."""

from __future__ import annotations

import dataclasses
import logging
from typing import Literal

from replicator.core.errors import ReplicatorError
from replicator.core.hookspecs import hookimpl
from replicator.core.lib import truncation as tr
from replicator.core.lib.truncation import Ref
from replicator.core.params import ParamError, param
from replicator.core.rows import pair_key

#: the MT-Bench pairwise judge instruction (arXiv 2306.05685), line breaks as in [R2]
INSTRUCTION = """Please act as an impartial judge and evaluate the quality of the responses provided by two
AI assistants to the user question displayed below. You should choose the assistant that
follows the user’s instructions and answers the user’s question better. Your evaluation
should consider factors such as the helpfulness, relevance, accuracy, depth, creativity,
and level of detail of their responses. Begin your evaluation by comparing the two
responses and provide a short explanation. Avoid any position biases and ensure that the
order in which the responses were presented does not influence your decision. Do not allow
the length of the responses to influence your evaluation. Do not favor certain names of
the assistants. Be as objective as possible. After providing your explanation, output your
final verdict by strictly following this format: "[[A]]" if assistant A is better, "[[B]]"
if assistant B is better, and "[[C]]" for a tie."""

SUFFIX = "verdict is: [["
PAB_START = "<|The Start of Conversation between a User and two Assistants|>"
PAB_END = "<|The End of Conversation between a User and two Assistants|>\n"
PAPB_START = "<|The Start of Assistant A’s Conversation with User|>"
PAPB_SEP = ("<|The End of Assistant A’s Conversation with User|>\n\n"
            "<|The Start of Assistant B’s Conversation with User|>")
PAPB_END = "<|The End of Assistant B’s Conversation with User|>\n"
_SLOT = "\ue000CONVERSATION\ue000"  # a private-use marker where the conversation goes


def judge_wrap(tokenizer, enc, start: str, end: str, system_role: bool) -> tuple[list[int], list[int]]:
    """Token ids before and after the conversation: the judge instruction and the model's chat template
    around the ``start``/``end`` tags, then ``verdict is: [[`` [R2] (BOS + bare text without a chat
    template)."""
    conv = start + _SLOT + end
    if system_role:
        messages = [{"role": "system", "content": INSTRUCTION}, {"role": "user", "content": conv}]
    else:
        messages = [{"role": "user", "content": f"{INSTRUCTION}\n{conv}"}]
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        before, after = text.split(_SLOT)
        return enc(before), enc(after + SUFFIX)
    first = INSTRUCTION + "\n" if system_role else ""
    before, after = (first + messages[-1]["content"]).split(_SLOT)
    return tr.bos(tokenizer) + enc(before), enc(after + SUFFIX)


SYSTEM_ROLE_DOC = "instruction as a system message (ArmoRM [R2]); Gemma has no system role"
#: the fewest tokens of conversation a judge prompt must leave room for
MIN_CONVERSATION = 32
_WARNED: set[tuple[int, int]] = set()
log = logging.getLogger(__name__)


def check_room(max_length: int, fixed: int) -> None:
    """The judge instruction and chat template take ``fixed`` tokens: a ``max_length`` that leaves fewer
    than :data:`MIN_CONVERSATION` for the conversation gets a warning, once per budget (the model would
    see the instruction only, every row alike; a smoke run at 192 tokens did; the tiny test tokenizer,
    one token per character of the instruction, always does)."""
    if max_length - fixed < MIN_CONVERSATION and (max_length, fixed) not in _WARNED:
        _WARNED.add((max_length, fixed))
        log.warning("judge prompt: the instruction and chat template take %d tokens, so max_length %d "
                    "leaves %d for the conversation: every row looks alike; set train.max_length and "
                    "predict.max_length to at least %d (2nd place used about 4,340 [R2])",
                    fixed, max_length, max(0, max_length - fixed), fixed + MIN_CONVERSATION)


@dataclasses.dataclass(frozen=True)
class JudgePAB:
    """2nd place **PAB** format [R2] ``human_pref/data/processors.py``, [P2].

    The MT-Bench pairwise judge instruction (arXiv 2306.05685): SOLUTIONS.md quotes its first and
    last lines and elides the middle ("..."); the middle part was completed from the paper
    (and matches [R2]'s ``PROMPT_PREFIX``, curly apostrophes included). Then
    ``<|The Start of Conversation between a User and two Assistants|>`` + per turn
    ``\\n### User:\\n{prompt}\\n\\n### Assistant A:\\n{response_a}\\n\\n### Assistant B:\\n{response_b}\\n``
    + ``<|The End of Conversation between a User and two Assistants|>\\n``. Instruction and
    conversation are one user message (instruction + ``\\n`` + conversation), or with
    ``system_role`` the instruction is the system message (ArmoRM [R2]); the model's chat template
    is applied with ``add_generation_prompt=True`` and ``verdict is: [[`` is appended [R2].
    A tokenizer without a chat template (tiny test models) gets BOS + the bare message (our
    fallback). ``null`` turns are "" by our data rule ([R2] writes ``null``).

    Truncation default ``keep_start``: the conversation is cut from its end [R2]. Deviation: [R2]
    budgets only the conversation (4096 Gemma, 2048 ArmoRM; ≈4340 tokens in all) and re-tokenizes
    the decoded text; here ``max_length`` covers instruction and template too (≈240 tokens more
    for Gemma), and the ids are kept as cut.
    """

    truncate: tr.Policy = param("keep_start", tr.POLICY_DOC)
    budgets: list[float] = tr.budgets_field()
    system_role: bool = param(False, SYSTEM_ROLE_DOC)

    @hookimpl
    def prompt_format(self, row, tokenizer, max_length):
        enc = tr.encoder(tokenizer)
        head, tail = judge_wrap(tokenizer, enc, PAB_START, PAB_END, self.system_role)
        check_room(max_length, len(head) + len(tail))
        layout = tr.per_round(lambda pos, i: [
            "\n### User:\n", Ref("prompt", i), "\n\n### Assistant A:\n", Ref("a", i),
            "\n\n### Assistant B:\n", Ref("b", i), "\n"])
        return tr.fit(tr.Turns(enc, tr.row_turns(row)), layout, max_length, self.truncate, enc,
                      head=head, tail=tail, budgets=self.budgets)


@dataclasses.dataclass(frozen=True)
class JudgePAPB:
    """2nd place **PAPB** format [R2] ``ProcessorPAPB``, [P2]: A's whole conversation, then B's.

    Same instruction, chat template and ``verdict is: [[`` suffix as :class:`JudgePAB`; the
    conversation is ``<|The Start of Assistant A’s Conversation with User|>`` + per turn
    ``\\n### User:\\n{prompt}\\n\\n### Assistant A:\\n{response_a}\\n`` +
    ``<|The End of Assistant A’s Conversation with User|>\\n\\n<|The Start of Assistant B’s \
Conversation with User|>``
    + per turn ``\\n### User:\\n{prompt}\\n\\n### Assistant B:\\n{response_b}\\n`` +
    ``<|The End of Assistant B’s Conversation with User|>\\n`` [R2]. Each side is truncated on its
    own to half the room left after the template (``max_length/2`` per side [R2]; unused room is
    not passed to the other side), by ``truncate`` (default ``keep_start``, cut from the end).
    [P2]: PAB+PAPB multi-format augmentation +0.001 (stage 1 only).
    """

    truncate: tr.Policy = param("keep_start", tr.POLICY_DOC)
    budgets: list[float] = tr.budgets_field()
    system_role: bool = param(False, SYSTEM_ROLE_DOC)

    @hookimpl
    def prompt_format(self, row, tokenizer, max_length):
        enc = tr.encoder(tokenizer)
        head, tail = judge_wrap(tokenizer, enc, PAPB_START, PAPB_END, self.system_role)
        sep = enc(PAPB_SEP)
        check_room(max_length, len(head) + len(sep) + len(tail))
        room = max(0, max_length - len(head) - len(sep) - len(tail))
        sides = []
        for field, name, budget in (("a", "A", room // 2), ("b", "B", room - room // 2)):
            layout = tr.per_round(lambda pos, i, f=field, n=name: [
                "\n### User:\n", Ref("prompt", i), f"\n\n### Assistant {n}:\n", Ref(f, i), "\n"])
            sides.append(tr.fit(tr.Turns(enc, tr.row_turns(row)), layout, budget, self.truncate, enc,
                                budgets=self.budgets))
        removed: dict[str, int] = {}
        for side in sides:
            for k, v in side.removed.items():
                removed[k] = removed.get(k, 0) + v
        truncated = any(s.truncated for s in sides)
        return tr.hard_cap(head + sides[0].input_ids + sep + sides[1].input_ids, tail, max_length, truncated,
                           removed)


LAYOUTS = {"pab": JudgePAB, "papb": JudgePAPB}


@dataclasses.dataclass(frozen=True)
class JudgeMulti:
    """2nd place **PAB + PAPB multi-format augmentation** [P2] (+0.001, stage 1 only), [R2]: in training
    each row appears once per layout of ``train_layouts``, all copies in the same optimizer step (one
    ``pair`` key; with swap_ab ``full`` each copy's swap joins them: original + swap + PAPB copies
    [R2]); prediction formats every row in ``predict_layout``.

    The layout is a per-row tag (``row["layout"]``) that this plugin's ``augment`` sets and its
    ``prompt_format`` reads; a row without one (validation, test) gets ``predict_layout``. Both layouts
    share ``truncate``, ``budgets`` and ``system_role`` (:class:`JudgePAB`, :class:`JudgePAPB`). Rows
    per optimizer step grow by the number of layouts (the recipe's batch says how many rows a step
    takes)."""

    train_layouts: list[Literal["pab", "papb"]] = param(["pab", "papb"], "the layouts each training row is "
                                                        "copied into (one copy each, same optimizer step)")
    predict_layout: Literal["pab", "papb"] = param("pab", "the layout of rows without a tag (prediction)",
                                                   step="predict")
    truncate: tr.Policy = param("keep_start", tr.POLICY_DOC)
    budgets: list[float] = tr.budgets_field()
    system_role: bool = param(False, SYSTEM_ROLE_DOC)

    def __post_init__(self):
        if not self.train_layouts or len(set(self.train_layouts)) != len(self.train_layouts):
            raise ParamError("train_layouts", f"one or more distinct layouts of {', '.join(LAYOUTS)}, got "
                             f"{self.train_layouts}")

    def layout(self, name: str):
        return LAYOUTS[name](truncate=self.truncate, budgets=self.budgets, system_role=self.system_role)

    @hookimpl
    def augment(self, rows, epoch, seed):
        return [dict(r, layout=name, pair=pair_key(r)) for r in rows for name in self.train_layouts]

    @hookimpl
    def prompt_format(self, row, tokenizer, max_length):
        name = row.get("layout") or self.predict_layout
        if name not in LAYOUTS:
            raise ReplicatorError(f"judge_multi: row {row.get('id')!r}, field 'layout': {name!r} is not "
                                  f"one of {', '.join(LAYOUTS)}")
        return self.layout(name).prompt_format(row=row, tokenizer=tokenizer, max_length=max_length)

    def train_copies(self) -> dict[str, int]:
        """Training rows made of each row: one per layout (PAB + PAPB copies [P2]) (``replicate plan``;
        core/lib/full_size.py)."""
        return {"layout_multiplier": len(self.train_layouts)}
