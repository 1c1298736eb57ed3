"""GPT-4-rated pairs (AlpacaEval annotations): extra training data with soft labels.

Label rules (the ``preference`` column, ``p``):

* ``1`` means output_1 better, ``2`` output_2 better; the ``weighted_*`` annotators give soft values
  in between. Soft label = ``[P(A), P(B), P(tie)] = [2 - p, p - 1, 0]``: no tie mass unless the
  rating says so.
* ``p == 1.5`` exactly is AlpacaEval's explicit draw (it writes 1.5 when both outputs are
  identical, and for judge ties) -> ``[0, 0, 1]``. In the shared 30k file 552 of its 555 rows
  with 1.5 have identical outputs.
* ``NaN``, ``0`` (AlpacaEval's "not annotated") or anything outside [1, 2] -> the file is rejected
  with a :class:`~replicator.core.errors.DataError` naming the rows (none occur in the shared file).
* ``hard_labels: true`` replaces the soft label by its argmax (one-hot; 1.5 stays a tie).
* null instructions/outputs become ``""``; lone surrogates become U+FFFD (as for the CSV).
* Rows whose prompt group is in the validation groups are dropped (count in the log), so
  pretraining never sees a validation prompt.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from replicator.core.data.files import clean_text, resolve_data_path
from replicator.core.data.splits import sample_rows
from replicator.core.errors import DataError
from replicator.core.hookspecs import hookimpl
from replicator.core.lib import sources
from replicator.core.lib.full_size import capped
from replicator.core.params import param
from replicator.core.rows import make_row

COLUMNS = ("instruction", "output_1", "generator_1", "output_2", "generator_2", "preference")


def preference_label(p: float) -> list[float]:
    """[P(A), P(B), P(tie)] of an AlpacaEval preference in [1, 2] (see the module docstring)."""
    if p == 1.5:
        return [0.0, 0.0, 1.0]
    return [2.0 - p, p - 1.0, 0.0]


@dataclasses.dataclass(frozen=True)
class AlpacaEvalPairs:
    """GPT-4-judged pairwise preferences (AlpacaEval) as single-turn rows with soft labels, train split only.

    Soft label [2 - p, p - 1, 0] from the preference p in [1, 2]; p = 1.5 is a tie. Rows whose
    prompt is in the validation split are dropped. Stand-in for UltraFeedback-style pretraining data.
    """

    file: str = param("alpacaeval/gpt4_pairwise_30k.parquet",
                      "parquet file of AlpacaEval annotations, relative to the data dir or absolute")
    max_rows: int = sources.max_rows_field()
    hard_labels: bool = param(False, "use the argmax one-hot label instead of the soft one")

    def __post_init__(self):
        sources.check_source_params(self)

    def _path(self, data_dir) -> Path:
        return resolve_data_path(data_dir, self.file)

    @hookimpl
    def data_check(self, data_dir) -> list[str]:
        return sources.missing_file(self._path(data_dir), "AlpacaEval pairs file not found",
                                    [f"put it under REPLICATOR_DATA_DIR as {self.file}"])

    @hookimpl
    def data_files(self, data_dir) -> list[Path]:
        return [self._path(data_dir)]

    def _load(self, data_dir, seed: int) -> list[dict]:
        path = self._path(data_dir)
        if not path.is_file():
            raise sources.missing_data_error(self.data_check(data_dir))
        return sources.cached(self, (sources.file_stamp([path]), seed), lambda: self._read(path, seed))

    def _read(self, path: Path, seed: int) -> list[dict]:
        """Rows of the parquet file (at most ``max_rows``, sampled with the seed; rules: module docstring)."""

        import pandas as pd

        file = str(path)
        try:
            df = pd.read_parquet(path)
        except Exception as e:
            raise DataError(file, [("(file)", "", f"cannot read parquet: {type(e).__name__}: {e}")]) from None
        missing = [c for c in COLUMNS if c not in df.columns]
        if missing:
            raise DataError(file, [("(header)", ", ".join(missing),
                                    f"missing required column(s) {', '.join(missing)}; "
                                    f"found: {', '.join(map(str, df.columns))}")])
        idx = sample_rows(list(range(len(df))), self.max_rows, seed)  # only the sampled rows are checked
        cols = {c: df[c].tolist() for c in COLUMNS}
        rows, problems = [], []
        for i in idx:
            rid = f"alpacaeval-{i}"
            p = cols["preference"][i]
            try:
                p = float(p)
            except (TypeError, ValueError):
                p = math.nan
            if not (math.isfinite(p) and 1.0 <= p <= 2.0):
                problems.append((rid, "preference",
                                 f"expected a number in [1, 2] (1 = output_1 better, 2 = output_2 better), "
                                 f"got {cols['preference'][i]!r}"))
                continue
            label = preference_label(p)
            if self.hard_labels:
                label = sources.hard_label(label)
            g1, g2 = cols["generator_1"][i], cols["generator_2"][i]
            rows.append(make_row(rid, [clean_text(cols["instruction"][i])], [clean_text(cols["output_1"][i])],
                                 [clean_text(cols["output_2"][i])], label=label,
                                 model_a=clean_text(g1) or None, model_b=clean_text(g2) or None,
                                 source="alpacaeval_pairs"))
        if problems:
            raise DataError(file, problems)
        return rows

    @hookimpl
    def data_sources(self, split, ctx):
        return sources.train_rows(split, ctx, self._load, "alpacaeval_pairs")

    def full_size_rows(self, stage: str, recipe: str) -> dict:
        """The shared stand-in as it is: 30,000 rows (the data folder's README) (``replicate plan``;
        core/lib/full_size.py)."""
        return {"train": capped(30_000, self.max_rows), "size": "30,000 (shared data)"}
