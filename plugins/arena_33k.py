"""The external 33k Chatbot Arena battles (``lmsys/chatbot_arena_conversations``) as extra training rows.

The 1st, 2nd, 3rd, 4th, 5th, 9th and 16th place solutions all add this set to the Kaggle train
data, usually the de-duplicated ~21k version ([P1] ``lmsys-33k-deduplicated.csv``, [P2], [P3],
[R4], [P5], [P9], [P16]; worth 0.903 -> 0.899 old LB for the 16th [P16]).

Input
-----
``file`` (relative to the data dir, or absolute) is one file or a folder; a folder means every
``.json``, ``.jsonl(.gz)``, ``.parquet`` and ``.csv`` file under it, in name order. Two schemas:

* **The arena release schema** (``question_id, model_a, model_b, winner, judge,
  conversation_a, conversation_b, turn, anony, language, tstamp, ...``). Required columns:
  ``model_a, model_b, winner, conversation_a, conversation_b``; others are ignored.
  ``conversation_*`` is a list of ``{"role": "user" | "assistant", "content": ...}`` messages
  (in CSV files: JSON-encoded). JSON arrays, JSONL(.gz), parquet and CSV are accepted.
* **The competition schema** (``id, model_a, model_b, prompt, response_a, response_b,
  winner_model_a, winner_model_b, winner_tie``), e.g. the Kaggle "33k deduplicated" CSV: rows are
  validated exactly like the competition CSV (:mod:`replicator.core.data.competition`).

When ``file`` is missing and the Hugging Face hub is reachable, ``hub_id`` is loaded with
``datasets`` (the dataset is gated: accept its terms on the hub and log in / set ``HF_TOKEN``).

Conversion rules (arena schema)
-------------------------------
* Each ``user`` message opens a round; the ``assistant`` messages after it, up to the next user
  message, are that round's response (several are joined with a blank line; none -> ``""``).
  ``system`` messages are skipped. ``prompt`` = the user turns of ``conversation_a``,
  ``response_a``/``response_b`` = the assistant turns of ``conversation_a``/``conversation_b``.
* When ``conversation_b``'s user turns differ from ``conversation_a``'s (the arena sends the same
  message to both, so this is a data accident), the prompt is taken from ``conversation_a`` and
  the rows are counted in the log. Different round counts are padded with ``""`` at the end.
* ``null`` content -> ``""``; lone UTF-16 surrogates -> U+FFFD (both counted in the log).
* ``winner``: ``model_a`` -> [1, 0, 0]; ``model_b`` -> [0, 1, 0]; ``tie`` and ``tie (bothbad)``
  -> [0, 0, 1] (the competition has a single tie class). Case and surrounding spaces are ignored.
  Anything else (empty, NaN, ``bothbad`` alone) -> :class:`~replicator.core.errors.DataError`.
* Rejected with a DataError naming file, row (question id and line/record) and field: a missing
  column, a conversation that is not a list of role/content objects, an unknown role, an assistant
  message before any user message, non-string content, a conversation with no user message.
* Ids are ``arena33k-<question_id>`` (``arena33k-<file>-<record>`` without a question id); a
  repeated question id gets ``-2``, ``-3``, ... (counted in the log), so ids never collide with
  Kaggle ids.
* ``dedup: true`` drops rows whose normalised prompt and unordered pair of normalised responses
  equal an earlier row's (an exact A/B-swapped duplicate counts); the count goes to the log.
* ``against`` (default the competition train CSV): rows whose prompt and unordered responses equal a
  row of that file are dropped too -- the public "21k" set is the 33k de-duplicated this way against
  the Kaggle train [P1] [P16]; the count goes to the log; ``null`` keeps them. Every row whose prompt is
  in the validation split is dropped as well (``ctx.held_out_groups``: validation and test prompts).
* Feeds the ``train`` split only; labels are hard one-hot, never NaN.

Differences from the write-ups, stated
--------------------------------------
* The public "21k" set (abdullahmeda's de-duplicated 33k, discussion 500973; [P1]
  ``lmsys-33k-deduplicated.csv``, [P2], [P16]) was built by a rule the posts do not give. ``dedup`` +
  ``against`` is our rule (exact normalised prompt + unordered responses, within the set and against
  the Kaggle train); that it leaves about 21k rows is not checked (the 33k set is not in the offline
  data).
* [R1] added all 33k (de-duplicated) rows to every fold's training rows. Here the rows whose prompt is
  in the run's validation split are dropped, because a run refuses training rows that share a prompt
  with its validation rows (``core/data/collect.py``): the score would count prompts seen in training.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from replicator.core.data.competition import read_competition_csv, rows_from_records
from replicator.core.data.files import clean_text, read_records, resolve_data_path
from replicator.core.data.hub import load_hub_dataset
from replicator.core.errors import DataError
from replicator.core.hookspecs import hookimpl
from replicator.core.lib import sources
from replicator.core.lib.conversations import pad_turns, parse_conversation
from replicator.core.lib.full_size import capped
from replicator.core.params import param
from replicator.core.rows import make_row, prompt_group

log = logging.getLogger(__name__)

REQUIRED = ("model_a", "model_b", "winner", "conversation_a", "conversation_b")
COMPETITION = ("prompt", "response_a", "response_b", "winner_model_a", "winner_model_b", "winner_tie")
WINNERS = {"model_a": [1.0, 0.0, 0.0], "model_b": [0.0, 1.0, 0.0],
           "tie": [0.0, 0.0, 1.0], "tie (bothbad)": [0.0, 0.0, 1.0]}


def winner_label(value) -> list[float] | None:
    """[P(A), P(B), P(tie)] of an arena ``winner`` value, or None when it is not one of the four."""
    if not isinstance(value, str):
        return None
    return WINNERS.get(" ".join(value.strip().lower().split()))


def pair_key(row: dict) -> tuple:
    """Normalised prompt + unordered normalised responses (A/B-swapped duplicates share a key)."""

    a, b = prompt_group(row["response_a"]), prompt_group(row["response_b"])
    return (row["group"], min(a, b), max(a, b))


def dedup_pairs(rows: list[dict], source: str) -> list[dict]:
    seen, out = set(), []
    for r in rows:
        k = pair_key(r)
        if k not in seen:
            seen.add(k)
            out.append(r)
    if len(out) < len(rows):
        log.info("%s: dedup dropped %d of %d row(s) that repeat an earlier row's prompt and responses",
                 source, len(rows) - len(out), len(rows))
    return out


def convert_records(records, file: str, stem: str) -> list[dict]:
    """Rows of the common schema from ``(where, record)`` pairs in the arena schema (rules: module doc)."""

    records = list(records)
    if not records:
        raise DataError(file, [("(file)", "", "no records")])
    columns = set(records[0][1])
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise DataError(file, [("(header)", ", ".join(missing),
                                f"missing required column(s) {', '.join(missing)}; found: "
                                f"{', '.join(sorted(map(str, columns))) or '(none)'}")])
    rows, problems = [], []
    seen: dict[str, int] = {}
    counts = {"null": [], "surrogate": [], "prompt_b": [], "padded": [], "repeated_id": []}
    for where, rec in records:
        qid = rec.get("question_id")
        qid = "" if qid is None or (isinstance(qid, float) and qid != qid) else str(qid).strip()
        rid = f"arena33k-{qid}" if qid else f"arena33k-{stem}-{where.split()[-1]}"
        who = f"{qid} ({where})" if qid else where
        n = seen.get(rid, 0) + 1
        seen[rid] = n
        if n > 1:
            counts["repeated_id"].append(rid)
            rid = f"{rid}-{n}"
        label = winner_label(rec.get("winner"))
        bad = []
        if label is None:
            bad.append((who, "winner", f"expected one of {', '.join(WINNERS)}, got {rec.get('winner')!r}"))
        parsed = {}
        for side in ("a", "b"):
            field = f"conversation_{side}"
            users, answers, fixes, err = parse_conversation(rec.get(field))
            if err:
                bad.append((who, field, err))
            else:
                parsed[side] = (users, answers)
                for k in ("null", "surrogate"):
                    if fixes.get(k):
                        counts[k].append(rid)
        if bad:
            problems.extend(bad)
            continue
        prompt, ra = parsed["a"]
        users_b, rb = parsed["b"]
        if users_b != prompt:
            counts["prompt_b"].append(rid)
        prompt, ra, rb, padded = pad_turns(prompt, ra, rb)
        if padded:
            counts["padded"].append(rid)
        models = [clean_text(rec.get(k)).strip() or None for k in ("model_a", "model_b")]
        rows.append(make_row(rid, prompt, ra, rb, label=label, model_a=models[0],
                             model_b=models[1], source="arena_33k"))
    if problems:
        raise DataError(file, problems)
    for key, what in (("null", "null message content(s) replaced by \"\""),
                      ("surrogate", "lone UTF-16 surrogate(s) replaced by U+FFFD"),
                      ("prompt_b", "conversation_b's user turns differ from conversation_a's; prompt taken "
                                   "from conversation_a"),
                      ("padded", "conversations had different round counts; shorter ones padded with \"\""),
                      ("repeated_id", "repeated question_id; later ones got a -N suffix")):
        ids = counts[key]
        if ids:
            eg = ", ".join(ids[:3]) + (", ..." if len(ids) > 3 else "")
            log.info("%s: %d row(s): %s (e.g. %s)", file, len(ids), what, eg)
    return rows


@dataclasses.dataclass(frozen=True)
class Arena33k:
    """The external 33k arena battles (human hard labels, ties incl. "tie (bothbad)") as extra train rows.

    Reads the ``chatbot_arena_conversations`` schema (JSON/JSONL/parquet/CSV) or a
    competition-format copy, or the hub dataset when the file is missing and the hub is reachable.
    Prompt = user turns, responses = assistant turns; rows whose prompt is in the validation split
    are dropped, and with ``dedup`` repeated prompt+response pairs too [P1] [P2] [P16].
    """

    file: str = param("arena-33k", "file or folder (every .json/.jsonl/.parquet/.csv in it) of the 33k set, "
                                   "relative to the data dir (REPLICATOR_DATA_DIR) or absolute")
    hub_id: str | None = param("lmsys/chatbot_arena_conversations",
                               "Hugging Face dataset loaded when file is missing and the hub is reachable "
                               "(gated: accept its terms and set HF_TOKEN); null = never")
    dedup: bool = param(True, "drop rows whose prompt and (unordered) responses repeat an earlier row's")
    against: str | None = param("lmsys-chatbot-arena/train.csv",
                                "competition CSV whose rows (same prompt and unordered responses) are "
                                "dropped from this set: the 33k -> 21k de-duplication [P1] [P16]; "
                                "null = keep them")
    max_rows: int = sources.max_rows_field("use at most this many rows (after dedup), sampled with the seed; "
                                           "0 = all")

    def __post_init__(self):
        sources.check_source_params(self)

    @hookimpl
    def data_check(self, data_dir) -> list[str]:
        """Problems that would stop this source from loading (missing files), as messages."""
        problems = sources.files_or_hub_check(
            self, data_dir, "33k arena data",
            [f"put the 33k arena file(s) (chatbot_arena_conversations: .json, .jsonl, .parquet or .csv) at "
             f"{self.file} under REPLICATOR_DATA_DIR"], gated=True)
        return problems + self._against_check(data_dir)

    def _against_check(self, data_dir) -> list[str]:

        if self.against is None:
            return []
        return sources.missing_file(resolve_data_path(data_dir, self.against),
                                    "competition file to de-duplicate against (against) not found",
                                    ["set against: null to keep the overlap"])

    def _drop_competition_pairs(self, rows: list[dict], data_dir) -> list[dict]:
        """The rows whose prompt and unordered responses are not those of a row of ``against``."""

        if self.against is None:
            return rows
        problems = self._against_check(data_dir)
        if problems:
            raise sources.missing_data_error(problems)
        path = resolve_data_path(data_dir, self.against)
        known = {pair_key(r)
                 for r in read_competition_csv(path, require_labels=False, source="arena_33k against")}
        out = [r for r in rows if pair_key(r) not in known]
        log.info("arena_33k: %d of %d row(s) repeat a row of %s (same prompt and responses): "
                 "dropped, %d left", len(rows) - len(out), len(rows), self.against, len(out))
        return out

    @hookimpl
    def data_files(self, data_dir) -> list[Path]:

        against = [] if self.against is None else [resolve_data_path(data_dir, self.against)]
        return sources.find_data_files(data_dir, self.file) + [p for p in against if p.is_file()]

    def _read_file(self, path: Path) -> list[dict]:

        records = read_records(path)
        cols = set(records[0][1]) if records else set()
        if "conversation_a" not in cols and all(c in cols for c in COMPETITION):
            rows = rows_from_records([r for _, r in records], str(path), require_labels=True,
                                     source="arena_33k")
            for r in rows:
                r["id"] = f"arena33k-{r['id']}"
            return rows
        return convert_records(records, str(path), path.stem)

    def _load(self, data_dir, seed: int) -> list[dict]:

        def read_hub() -> list[dict]:
            ds = load_hub_dataset(self.hub_id, hint=" (it is gated: accept its terms and set HF_TOKEN)")
            return convert_records(((f"record {i}", rec) for i, rec in enumerate(ds)), f"hf://datasets/{self.hub_id}",
                                   "hub")

        def finish(rows: list[dict]) -> list[dict]:
            return self._drop_competition_pairs(dedup_pairs(rows, "arena_33k") if self.dedup else rows,
                                                data_dir)

        return sources.files_or_hub_rows(self, data_dir, seed, "arena_33k", self._read_file, read_hub,
                                         str(self.hub_id), finish)

    @hookimpl
    def data_sources(self, split, ctx):
        return sources.train_rows(split, ctx, self._load, "arena_33k")

    def full_size_rows(self, stage: str, recipe: str) -> dict:
        """~21k rows de-duplicated ([P2] "21k from abdullahmeda's dedup 33k", [P16]), 33k without
        (``replicate plan``; core/lib/full_size.py)."""
        return {"train": capped(21_000 if self.dedup else 33_000, self.max_rows),
                "size": "~21k de-duplicated [P2][P16]"}
