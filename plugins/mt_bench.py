"""MT-bench human judgments as extra training rows: real human pairwise preferences **with ties**.

The expert and author judgments of MT-bench answers (``lmsys/mt_bench_human_judgments``, split
``human``; ``mt-bench-human`` in the shared data): 80 two-turn questions, 6 models. No write-up
names this set; it is the offline human-preference source with ties, like the competition's own
labels (the public reward and arena sets of [P2], [P3], [P5] play this part there).

Input: JSONL, optionally gzipped, one judgment a line: ``question_id``, ``model_a``, ``model_b``,
``winner`` (``model_a``, ``model_b`` or ``tie``), ``judge``, ``turn`` (1 or 2: which turn was
judged), ``conversation_a`` / ``conversation_b`` (lists of ``{"role", "content"}``, user and
assistant alternating, both turns present even when turn 1 was judged).

Conversion rules
----------------
* ``prompt`` = the user turns, ``response_a`` / ``response_b`` = the assistant turns of the two
  conversations. ``turn_judged: judged_turn`` (default) keeps what the judge saw: a turn-1
  judgment gets only the first turn, a turn-2 judgment both; ``conversation`` keeps both turns
  for every judgment.
* Labels: ``model_a`` -> [1, 0, 0], ``model_b`` -> [0, 1, 0], ``tie`` (and the original release's
  ``tie (bothbad)``) -> [0, 0, 1]. ``ties: false`` drops tie judgments.
* ``aggregate: none`` gives one row per judgment
  (id ``mtbench-<question>-<model_a>-<model_b>-t<turn>-<judge>``); ``soft`` gives one row per
  (question, model_a, model_b, turn) whose label is the mean of its judges' one-hot labels
  (id without the judge), in the order of first appearance.
* A/B order is the file's. The shared subset keeps each pair in one orientation only, so B wins
  59 % of its judgments (A 17 %, tie 24 %): train with swap augmentation (``swap_ab``), which
  shows every row in both orders and so undoes that bias.
* Prompt groups are by question: every row of a question gets the group of the question's full
  user turns, so turn-1 and turn-2 rows of a question travel together. Rows whose question is held
  out (its first user turn, or its full user turns, is the prompt of a validation or test row) are
  dropped (count in the log). Train split only; ``max_rows`` samples rows with the seed, keeping
  their order.
* Rejected with a :class:`~replicator.core.errors.DataError` naming the file, line and field: a
  missing or ill-typed field, a ``winner`` or ``turn`` outside the values above, a conversation
  that does not alternate user/assistant or is shorter than the judged turn, user turns that differ
  between the two conversations, and (``soft``) judges of one pair who saw different answers.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Literal

from replicator.core.data.files import clean_text, resolve_data_path
from replicator.core.errors import DataError
from replicator.core.hookspecs import hookimpl
from replicator.core.lib import sources
from replicator.core.lib.full_size import capped
from replicator.core.params import param
from replicator.core.rows import make_row, prompt_group

log = logging.getLogger(__name__)

WINNERS = {"model_a": (1.0, 0.0, 0.0), "model_b": (0.0, 1.0, 0.0), "tie": (0.0, 0.0, 1.0),
           "tie (bothbad)": (0.0, 0.0, 1.0)}


def split_conversation(conv, turns: int) -> tuple[list[str], list[str], str | None]:
    """(user turns, assistant turns, error) of the first ``turns`` rounds of a ``[{role, content}]`` list."""
    if not isinstance(conv, list) or not all(isinstance(m, dict) for m in conv):
        return [], [], "expected a list of {role, content} objects"
    if len(conv) < 2 * turns:
        return [], [], f"has {len(conv)} message(s); turn {turns} needs {2 * turns}"
    users, answers = [], []
    for k, m in enumerate(conv[:2 * turns]):
        want = "user" if k % 2 == 0 else "assistant"
        if m.get("role") != want:
            return [], [], (f"message {k} has role {m.get('role')!r}, expected {want!r} "
                            "(user and assistant alternate)")
        if not isinstance(m.get("content"), str):
            return [], [], f"message {k} has no string content"
        (users if want == "user" else answers).append(m["content"])
    return users, answers, None


@dataclasses.dataclass(frozen=True)
class MTBenchHuman:
    """MT-bench human pairwise judgments (with ties) as train rows, grouped by question.

    Turn-1 judgments see the first turn only (``turn_judged: judged_turn``) or the whole conversation;
    ties kept as the tie class or dropped; several judges of one pair kept apart or averaged into a soft
    label. The file keeps one A/B orientation (B over-represented): swap augmentation undoes that.
    """

    file: str = param("mt-bench-human/human_judgments.jsonl.gz",
                      "JSONL(.gz) of MT-bench human judgments, relative to the data dir or absolute")
    turn_judged: Literal["judged_turn", "conversation"] = param(
        "judged_turn", "judged_turn: a turn-1 judgment sees only the first turn, turn 2 both; conversation: "
                       "every row gets both turns")
    ties: bool = param(True, "keep tie judgments as the tie class (false: drop them)")
    aggregate: Literal["none", "soft"] = param(
        "none", "none: one row per judgment; soft: one row per (question, models, turn), the mean of its "
                "judges' labels")
    max_rows: int = sources.max_rows_field()

    def __post_init__(self):
        sources.check_source_params(self)

    def _path(self, data_dir) -> Path:
        return resolve_data_path(data_dir, self.file)

    @hookimpl
    def data_check(self, data_dir) -> list[str]:
        return sources.missing_file(self._path(data_dir), "MT-bench human judgments file not found",
                                    [f"set REPLICATOR_DATA_DIR to a folder containing {self.file} "
                                     "(lmsys/mt_bench_human_judgments, split human, as JSONL)"],
                                    hub_id="lmsys/mt_bench_human_judgments")

    @hookimpl
    def data_files(self, data_dir) -> list[Path]:
        return [self._path(data_dir)]

    def _judgment(self, where: str, rec: dict, problems: list) -> dict | None:
        """One judgment's fields (turns cut as ``turn_judged`` says), or None with ``problems`` extended."""
        bad = []
        for field, ok in (("question_id", lambda v: isinstance(v, int | str) and not isinstance(v, bool)),
                          ("model_a", lambda v: isinstance(v, str) and v),
                          ("model_b", lambda v: isinstance(v, str) and v),
                          ("winner", lambda v: v in WINNERS),
                          ("turn", lambda v: v in (1, 2) and not isinstance(v, bool))):
            if not ok(rec.get(field)):
                bad.append((where, field, "missing" if field not in rec
                            else f"unexpected value {rec.get(field)!r}"
                            + (f"; expected one of {', '.join(WINNERS)}" if field == "winner" else "")
                            + ("; expected 1 or 2" if field == "turn" else "")))
        if bad:
            problems.extend(bad)
            return None
        turns = rec["turn"] if self.turn_judged == "judged_turn" else 2
        sides = {}
        for side in ("a", "b"):
            users, answers, err = split_conversation(rec.get(f"conversation_{side}"), turns)
            if err:
                problems.append((where, f"conversation_{side}", err))
                return None
            sides[side] = (users, answers)
        if sides["a"][0] != sides["b"][0]:
            problems.append((where, "conversation_b", "its user turns differ from conversation_a's"))
            return None
        full_a, _, _ = split_conversation(rec["conversation_a"], 2)
        return {"question": str(rec["question_id"]), "model_a": rec["model_a"], "model_b": rec["model_b"],
                "turn": rec["turn"], "judge": str(rec.get("judge") or "unknown"),
                "label": WINNERS[rec["winner"]],
                "prompt": sides["a"][0], "response_a": sides["a"][1], "response_b": sides["b"][1],
                "question_turns": full_a or sides["a"][0]}

    def convert(self, records, file: str) -> list[dict]:
        """Rows from ``(where, record)`` pairs of a JSONL file (rules: module docstring)."""

        problems: list = []
        judged = []
        for where, rec in records:
            j = self._judgment(where, rec, problems)
            if j is not None and (self.ties or j["label"][2] == 0.0):
                for k in ("prompt", "response_a", "response_b", "question_turns"):
                    j[k] = [clean_text(t) for t in j[k]]
                judged.append((where, j))
        rows = self._aggregate(judged, problems)
        if problems:
            raise DataError(file, problems)
        if not rows:
            raise DataError(file,
                            [("(file)", "", "no judgments" + ("" if self.ties else " other than ties"))])
        return sources.suffix_repeated_ids(rows)

    def _aggregate(self, judged: list[tuple[str, dict]], problems: list) -> list[dict]:

        pairs: dict[tuple, list[tuple[str, dict]]] = {}
        for where, j in judged:
            key = ((j["question"], j["model_a"], j["model_b"], j["turn"]) if self.aggregate == "soft"
                   else (where,))
            pairs.setdefault(key, []).append((where, j))
        rows = []
        for group in pairs.values():
            where, j = group[0]
            for w, other in group[1:]:
                if ((other["prompt"], other["response_a"], other["response_b"])
                        != (j["prompt"], j["response_a"], j["response_b"])):
                    problems.append((w, "conversation_a",
                                     f"judges of one pair saw different answers ({where} vs {w})"))
            label = [sum(o["label"][k] for _, o in group) / len(group) for k in range(3)]
            rid = f"mtbench-{j['question']}-{j['model_a']}-{j['model_b']}-t{j['turn']}"
            row = make_row(rid if self.aggregate == "soft" else f"{rid}-{j['judge']}", j["prompt"],
                           j["response_a"], j["response_b"], label=label, model_a=j["model_a"],
                           model_b=j["model_b"], source="mt_bench")
            row["group"] = prompt_group(j["question_turns"])  # by question: turn-1 and turn-2 rows together
            rows.append(row)
        return rows

    def _load(self, data_dir, seed: int) -> list[dict]:
        return sources.jsonl_rows(self, self._path(data_dir), seed, self.convert,
                                  lambda: self.data_check(data_dir))

    @hookimpl
    def data_sources(self, split, ctx):

        if split != "train":
            return None
        rows = self._load(ctx.data_dir, ctx.seed)
        held = ctx.held_out_groups
        # the question's first turn held out
        kept = [r for r in rows if prompt_group(r["prompt"][:1]) not in held]
        if len(kept) < len(rows):
            log.info("mt_bench: dropped %d of %d row(s) whose question's first turn is a validation or "
                     "test prompt", len(rows) - len(kept), len(rows))
        return sources.train_rows(split, ctx, lambda data_dir, seed: kept, "mt_bench")

    def full_size_rows(self, stage: str, recipe: str) -> dict:
        """The shared stand-in as it is: 1,751 rows (the data folder's README) (``replicate plan``;
        core/lib/full_size.py)."""
        return {"train": capped(1_751, self.max_rows), "size": "1,751 (shared data)"}
