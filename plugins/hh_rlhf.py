"""Anthropic HH-RLHF chosen/rejected transcripts as extra training rows (human hard labels, no ties).

Public human-preference pairs in the spirit of the public reward sets the 2nd and 3rd place
solutions add (PKU-SafeRLHF, Capybara, HelpSteer preferences [P2]; reward-bench and arena-hard
subsets [P3]); the 5th place pretrains on "public reward data" [P5]. HH-RLHF itself is not named
by any write-up: it is the offline human-preference instance here (``hh-rlhf`` in the shared data).

Input: JSONL, optionally gzipped, one ``{"chosen": "...", "rejected": "..."}`` object per line,
each a transcript ``"\\n\\nHuman: ...\\n\\nAssistant: ...\\n\\nHuman: ..."``.

Conversion rules
----------------
* A transcript is split on the markers ``"\\n\\nHuman: "`` and ``"\\n\\nAssistant: "`` (also
  without the space, e.g. a final empty ``"\\n\\nAssistant:"``). ``Human:`` inside a turn's text
  without the blank line before it is text, not a marker. Consecutive turns of the same speaker
  are merged with a blank line (the shared test file has 5 chosen transcripts with a doubled
  ``Assistant:`` marker).
* **Multi-turn context is kept as all turns:** each Human turn opens a round; ``prompt`` = the
  Human turns, ``response_a``/``response_b`` = the Assistant turns of the two transcripts, one per
  round (``""`` when a round has no Assistant turn). Chosen and rejected share every turn but the
  last Assistant one, so earlier rounds are identical on both sides and only the last round
  differs, exactly like a multi-turn arena battle whose earlier answers happened to coincide.
  Prompt formats then render the whole conversation with their own round structure.
* The Human turns of ``chosen`` and ``rejected`` must be equal (true of every row of the shared
  test file); otherwise the shared context is ambiguous and the line is rejected.
* A/B order: the chosen transcript is A when a coin seeded by (seed, row id) says so; label is
  the one-hot of the chosen side, never a tie. An empty last response is kept as ``""``.
* Rejected with a :class:`~replicator.core.errors.DataError` naming file, line and field: a line
  that is not a JSON object, a missing or non-string ``chosen``/``rejected``, text before the first
  marker, a transcript that does not start with a Human turn or has no Assistant turn, Human turns
  that differ between the two.
* Ids are ``hh-<file stem>-<line>``. Rows whose prompt is in the validation split are dropped
  (count in the log); train split only; ``max_rows`` samples with the seed.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from replicator.core.data.files import clean_text, resolve_data_path
from replicator.core.data.splits import seeded_coin
from replicator.core.errors import DataError
from replicator.core.hookspecs import hookimpl
from replicator.core.lib import sources
from replicator.core.lib.full_size import capped
from replicator.core.params import param
from replicator.core.rows import make_row

MARKER = re.compile(r"\n\n(Human|Assistant):(?: |(?=\n)|$)")


def parse_transcript(text: str) -> tuple[list[str], list[str], str | None]:
    """(Human turns, Assistant turns aligned to them, error) of one HH transcript (rules: module doc)."""
    parts = MARKER.split(text)
    if parts[0].strip():
        shown = parts[0] if len(parts[0]) <= 40 else parts[0][:40] + "..."
        return [], [], f"text before the first '\\n\\nHuman: ' marker: {shown!r}"
    segs: list[list[str]] = []
    for speaker, turn in zip(parts[1::2], parts[2::2], strict=True):
        if segs and segs[-1][0] == speaker:
            segs[-1][1] += "\n\n" + turn
        else:
            segs.append([speaker, turn])
    if not segs:
        return [], [], "no '\\n\\nHuman: ' / '\\n\\nAssistant: ' markers"
    if segs[0][0] != "Human":
        return [], [], "the transcript does not start with a Human turn"
    if not any(s == "Assistant" for s, _ in segs):
        return [], [], "the transcript has no Assistant turn"
    humans, answers = [], []
    for speaker, turn in segs:
        if speaker == "Human":
            humans.append(turn)
            answers.append("")
        else:
            answers[-1] = turn
    return humans, answers, None


def _stem(path: Path) -> str:
    name = path.name
    for ext in (".gz", ".jsonl", ".json"):
        if name.endswith(ext):
            name = name[: -len(ext)]
    return name


@dataclasses.dataclass(frozen=True)
class HHRLHF:
    """HH-RLHF chosen/rejected transcripts as train rows: all turns kept, random A/B order, \
hard labels, no ties.

    Prompt = Human turns, responses = Assistant turns (only the last differs between the two);
    the chosen side gets the one-hot label. Public human-preference data in the spirit of the
    reward sets of [P2], [P3], [P5].
    """

    file: str = param("hh-rlhf/harmless-base-test.jsonl.gz",
                      "JSONL(.gz) of {chosen, rejected} transcripts, relative to the data dir or absolute")
    max_rows: int = sources.max_rows_field()

    def __post_init__(self):
        sources.check_source_params(self)

    def _path(self, data_dir) -> Path:
        return resolve_data_path(data_dir, self.file)

    @hookimpl
    def data_check(self, data_dir) -> list[str]:
        return sources.missing_file(self._path(data_dir), "HH-RLHF file not found",
                                    [f"set REPLICATOR_DATA_DIR to a folder containing {self.file} "
                                     "(anthropics/hh-rlhf, e.g. harmless-base/test.jsonl.gz)"])

    @hookimpl
    def data_files(self, data_dir) -> list[Path]:
        return [self._path(data_dir)]

    def convert(self, records, file: str, stem: str, seed: int) -> list[dict]:
        """Rows from ``(where, record)`` pairs of a JSONL file (rules: module docstring)."""

        rows, problems = [], []
        for where, rec in records:
            rid = f"hh-{stem}-{where.split()[-1]}"
            parsed, bad = {}, []
            for field in ("chosen", "rejected"):
                v = rec.get(field)
                if not isinstance(v, str):
                    what = ("missing" if field not in rec
                            else f"a {type(v).__name__}, expected a transcript string")
                    bad.append((where, field, what))
                    continue
                humans, answers, err = parse_transcript(clean_text(v))
                if err:
                    bad.append((where, field, err))
                else:
                    parsed[field] = (humans, answers)
            if not bad and parsed["chosen"][0] != parsed["rejected"][0]:
                bad.append((where, "rejected", "its Human turns differ from chosen's (the shared context "
                                               "must be the same)"))
            if bad:
                problems.extend(bad)
                continue
            prompt, chosen = parsed["chosen"]
            rejected = parsed["rejected"][1]
            if seeded_coin(seed, rid):
                ra, rb, label = rejected, chosen, [0.0, 1.0, 0.0]
            else:
                ra, rb, label = chosen, rejected, [1.0, 0.0, 0.0]
            rows.append(make_row(rid, prompt, ra, rb, label=label, source="hh_rlhf"))
        if problems:
            raise DataError(file, problems)
        if not rows:
            raise DataError(file, [("(file)", "", "no records")])
        return rows

    def _load(self, data_dir, seed: int) -> list[dict]:
        path = self._path(data_dir)
        return sources.jsonl_rows(self, path, seed,
                                  lambda recs, file: self.convert(recs, file, _stem(path), seed),
                                  lambda: self.data_check(data_dir))

    @hookimpl
    def data_sources(self, split, ctx):
        return sources.train_rows(split, ctx, self._load, "hh_rlhf")

    def full_size_rows(self, stage: str, recipe: str) -> dict:
        """The shared stand-in as it is: 2,312 rows (the data folder's README) (``replicate plan``;
        core/lib/full_size.py)."""
        return {"train": capped(2_312, self.max_rows), "size": "2,312 (shared data)"}
