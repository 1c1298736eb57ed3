"""UltraFeedback-style rated pairs: two completions of one prompt with numeric ratings -> soft labels.

The 1st place post-pretrains all its models for one epoch on UltraFeedback converted to the
competition format ([P1], [R1] ``ultrafeedback_lmsysformat.parquet``), the 5th place pretrains on
public reward data, "mostly UltraFeedback" ([P5]), the 4th place pseudo-labels 30k UltraFeedback
rows ([R4]); the 3rd place found it "didn't help any more than" the ORPO mix ([P3]).

Relationship to ``alpacaeval_pairs``: UltraFeedback is GPT-4-*rated* (each completion gets a
score), AlpacaEval is GPT-4-*judged* pairwise (one preference per pair). Both are GPT-4 preference
data over two model outputs for one instruction, so the AlpacaEval 30k pairs in the shared data
(``alpacaeval_pairs``) are the offline stand-in for this source; this plugin reads the real
UltraFeedback files when a user supplies them (or the hub copy when reachable).

Input
-----
``file`` (relative to the data dir, or absolute; a folder means every .json/.jsonl/.parquet/.csv
in it) in one of two schemas, detected from the columns:

* **binarized** (``HuggingFaceH4/ultrafeedback_binarized``): ``prompt, chosen, rejected,
  score_chosen, score_rejected`` (``prompt_id`` optional). ``chosen``/``rejected`` are either the
  response text or the whole conversation as ``[{"role", "content"}]`` messages; then the prompt
  is the user turns of ``chosen`` and the responses are the assistant turns.
* **raw** (``openbmb/UltraFeedback``): ``instruction, completions`` where ``completions`` is a
  list of ``{"response", "overall_score", "model"?}``. Pairs are formed by ``pairing``:
  ``best_vs_random`` (highest score vs one other completion drawn with the seed, as the binarized
  set was built), ``best_vs_worst``, or ``all_pairs`` (every pair with different indices).

Label rule (score of the side shown as A minus the score of B: ``d``)
--------------------------------------------------------------------
* ``temperature > 0``: Bradley-Terry soft label ``P(A) = sigmoid(d / temperature)``,
  ``[P(A), 1 - P(A), 0]``. UltraFeedback scores are 1-10, so with the default 1.0 a one-point gap
  gives 0.73 and a three-point gap 0.95.
* ``temperature == 0``: hard one-hot for the higher-rated side.
* ``d == 0`` (equal ratings): ``[0, 0, 1]`` when ``ties`` is true (the only way a tie arises: "no
  ties unless the rating says so"); otherwise ``[0.5, 0.5, 0]`` for soft labels, and for hard
  labels the row is dropped (no hard label exists) with a count in the log.
* A/B order: the chosen (or first) side is A when a coin seeded by (seed, row id) says so, so
  the order is deterministic for a seed, independent of row order, and about half are swapped.
* A score that is not a finite number, a missing column, a response that is neither text nor a
  list of messages -> :class:`~replicator.core.errors.DataError` naming file, row and field.
  ``null`` text -> ``""``. Labels never contain NaN.
* Rows whose prompt is in the validation split are dropped (count in the log). Train split only.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
from pathlib import Path
from typing import Literal

from replicator.core.data.files import clean_text, read_records
from replicator.core.data.hub import load_hub_dataset
from replicator.core.data.splits import seeded_coin
from replicator.core.errors import DataError
from replicator.core.hookspecs import hookimpl
from replicator.core.lib import sources
from replicator.core.lib.conversations import pad_turns, parse_conversation
from replicator.core.lib.full_size import capped
from replicator.core.params import param
from replicator.core.rows import make_row

log = logging.getLogger(__name__)

BINARIZED = ("prompt", "chosen", "rejected", "score_chosen", "score_rejected")
RAW = ("instruction", "completions")


def rating_label(d: float, temperature: float, ties: bool) -> list[float] | None:
    """[P(A), P(B), P(tie)] for the rating gap ``d`` = score(A) - score(B) (rule: module docstring)."""
    if d == 0:
        if ties:
            return [0.0, 0.0, 1.0]
        return [0.5, 0.5, 0.0] if temperature > 0 else None
    if temperature == 0:
        return [1.0, 0.0, 0.0] if d > 0 else [0.0, 1.0, 0.0]
    z = d / temperature
    p = 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))
    return [p, 1.0 - p, 0.0]


def _score(v) -> float | None:
    if isinstance(v, bool):
        return None
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _turns(value, prompt_text: str) -> tuple[list[str], list[str], str | None]:
    """(prompt turns, response turns, error) of a binarized ``chosen``/``rejected`` value."""

    if isinstance(value, str) and value.lstrip().startswith("[{"):
        try:
            value = json.loads(value, strict=False)
        except json.JSONDecodeError:
            pass  # plain text that happens to start with "[{"
    if value is None or isinstance(value, str):
        return [prompt_text], [clean_text(value)], None
    if isinstance(value, list):
        users, answers, _, err = parse_conversation(value)
        if err:
            return [], [], err
        return users, answers, None
    return [], [], (f"expected the response text or a list of {{role, content}} messages, got "
                    f"{type(value).__name__}")


@dataclasses.dataclass(frozen=True)
class UltraFeedbackPairs:
    """UltraFeedback-style rated pairs (binarized or raw schema) as train rows with Bradley-Terry soft labels.

    P(A) = sigmoid((score_A - score_B) / temperature), hard labels at temperature 0, a tie only for
    equal ratings with ``ties``; A/B order random with the seed; validation prompts dropped.
    Post-pretraining data of [P1] and [P5]; ``alpacaeval_pairs`` is the offline stand-in.
    """

    file: str = param("ultrafeedback/ultrafeedback_binarized.parquet",
                      "file or folder of rated pairs (.parquet/.jsonl/.json/.csv), relative to the data dir "
                      "or absolute")
    temperature: float = param(1.0, "Bradley-Terry temperature: P(A) = sigmoid((score_A - score_B) / "
                                    "temperature); 0 = hard one-hot labels", ge=0)
    ties: bool = param(True, "equal ratings give a tie label [0, 0, 1]; false: [0.5, 0.5, 0] (soft) or "
                             "the row is dropped (hard)")
    pairing: Literal["best_vs_random", "best_vs_worst", "all_pairs"] = param(
        "best_vs_random", "raw schema only: which completion pairs become rows")
    max_rows: int = sources.max_rows_field()
    hub_id: str | None = param("HuggingFaceH4/ultrafeedback_binarized",
                               "Hugging Face dataset loaded when file is missing and the hub is reachable; "
                               "null = never")
    hub_split: str = param("train_prefs", "split of hub_id to load")

    def __post_init__(self):
        sources.check_source_params(self)

    @hookimpl
    def data_check(self, data_dir) -> list[str]:
        return sources.files_or_hub_check(
            self, data_dir, "UltraFeedback pairs",
            [f"put an UltraFeedback file (binarized: prompt, chosen, rejected, score_chosen, score_rejected; "
             f"or raw: instruction, completions) at {self.file} under REPLICATOR_DATA_DIR"],
            also=["use alpacaeval_pairs, the offline stand-in"], provide="them")

    @hookimpl
    def data_files(self, data_dir) -> list[Path]:
        return sources.find_data_files(data_dir, self.file)

    # -- conversion ------------------------------------------------------------------------------

    def _row(self, rid, prompt, resp1, resp2, s1, s2, models, seed, stats):
        """One row with the first side shown as A or B by the seeded coin; None when dropped."""

        if seeded_coin(seed, rid):
            resp1, resp2, s1, s2, models = resp2, resp1, s2, s1, (models[1], models[0])
        label = rating_label(s1 - s2, self.temperature, self.ties)
        if label is None:
            stats["equal"] += 1
            return None
        prompt, resp1, resp2, _ = pad_turns(prompt, resp1, resp2)
        return make_row(rid, prompt, resp1, resp2, label=label, model_a=models[0], model_b=models[1],
                        source="ultrafeedback_pairs")

    def convert(self, records, file: str, stem: str, seed: int) -> list[dict]:
        """Rows from ``(where, record)`` pairs (rules: module docstring)."""

        records = list(records)
        if not records:
            raise DataError(file, [("(file)", "", "no records")])
        cols = set(records[0][1])
        if all(c in cols for c in BINARIZED):
            schema = "binarized"
        elif all(c in cols for c in RAW):
            schema = "raw"
        else:
            raise DataError(file, [("(header)", "", "expected the binarized columns " + ", ".join(BINARIZED)
                                    + " or the raw columns " + ", ".join(RAW) + "; found: "
                                    + (", ".join(sorted(map(str, cols))) or "(none)"))])
        rows, problems, stats = [], [], {"equal": 0}
        seen: dict[str, int] = {}
        for where, rec in records:
            pid = clean_text(rec.get("prompt_id")).strip()
            base = f"uf-{pid}" if pid else f"uf-{stem}-{where.split()[-1]}"
            n = seen[base] = seen.get(base, 0) + 1
            rid = base if n == 1 else f"{base}-{n}"
            who = f"{pid} ({where})" if pid else where
            if schema == "binarized":
                bad = []
                scores = []
                for f in ("score_chosen", "score_rejected"):
                    s = _score(rec.get(f))
                    if s is None:
                        bad.append((who, f, f"expected a finite number, got {rec.get(f)!r}"))
                    scores.append(s)
                text = clean_text(rec.get("prompt"))
                sides = []
                for f in ("chosen", "rejected"):
                    p, r, err = _turns(rec.get(f), text)
                    if err:
                        bad.append((who, f, err))
                    sides.append((p, r))
                if bad:
                    problems.extend(bad)
                    continue
                prompt = sides[0][0]
                row = self._row(rid, prompt, sides[0][1], sides[1][1], scores[0], scores[1], (None, None),
                                seed, stats)
                if row is not None:
                    rows.append(row)
                continue
            comps = rec.get("completions")
            if isinstance(comps, str):

                try:
                    comps = json.loads(comps, strict=False)
                except json.JSONDecodeError as e:
                    problems.append((who, "completions", f"invalid JSON ({e.msg} at char {e.pos})"))
                    continue
            if not isinstance(comps, list) or len(comps) < 2:
                problems.append((who, "completions",
                                 "expected a list of at least two {response, overall_score} "
                                 f"objects, got {type(comps).__name__}"
                                 + (f" of length {len(comps)}" if isinstance(comps, list) else "")))
                continue
            parsed, bad = [], []
            for k, c in enumerate(comps):
                if not isinstance(c, dict):
                    bad.append((who, f"completions[{k}]", f"expected an object, got {type(c).__name__}"))
                    continue
                s = _score(c.get("overall_score"))
                if s is None:
                    bad.append((who, f"completions[{k}].overall_score",
                                f"expected a finite number, got {c.get('overall_score')!r}"))
                    continue
                parsed.append((clean_text(c.get("response")), s, clean_text(c.get("model")).strip() or None))
            if bad:
                problems.extend(bad)
                continue
            prompt = [clean_text(rec.get("instruction"))]
            order = sorted(range(len(parsed)), key=lambda k: -parsed[k][1])  # stable: first best wins
            if self.pairing == "all_pairs":
                pairs = [(i, j) for i in range(len(parsed)) for j in range(i + 1, len(parsed))]
            elif self.pairing == "best_vs_worst":
                pairs = [(order[0], order[-1])]
            else:
                others = order[1:]
                pairs = [(order[0], random.Random(f"{seed}\x1f{rid}").choice(others))]
            for i, j in pairs:
                pr = rid if self.pairing != "all_pairs" else f"{rid}-{i}-{j}"
                (t1, s1, m1), (t2, s2, m2) = parsed[i], parsed[j]
                row = self._row(pr, prompt, [t1], [t2], s1, s2, (m1, m2), seed, stats)
                if row is not None:
                    rows.append(row)
        if problems:
            raise DataError(file, problems)
        if stats["equal"]:
            log.info("%s: dropped %d pair(s) with equal ratings (hard labels, ties: false)", file,
                     stats["equal"])
        return rows

    def _load(self, data_dir, seed: int) -> list[dict]:

        def read_hub() -> list[dict]:
            ds = load_hub_dataset(self.hub_id, self.hub_split, what=f"split {self.hub_split!r}")
            return self.convert(((f"record {i}", r) for i, r in enumerate(ds)), f"hf://datasets/{self.hub_id}",
                                "hub", seed)

        return sources.files_or_hub_rows(self, data_dir, seed, "ultrafeedback_pairs",
                                         lambda f: self.convert(read_records(f), str(f), f.stem, seed),
                                         read_hub, f"{self.hub_id}:{self.hub_split}")

    @hookimpl
    def data_sources(self, split, ctx):
        return sources.train_rows(split, ctx, self._load, "ultrafeedback_pairs")

    def full_size_rows(self, stage: str, recipe: str) -> dict:
        """HuggingFaceH4/ultrafeedback_binarized train_prefs: 61,135 pairs (its dataset card; the size of 1st
        place's "ut" set is unknown in SOLUTIONS.md) (``replicate plan``; core/lib/full_size.py)."""
        return {"train": capped(61_135, self.max_rows), "size": "61,135 (UltraFeedback train_prefs)"}
