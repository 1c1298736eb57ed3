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
* Rows whose prompt group is in the validation groups are dropped (count printed on stderr), so
  pretraining never sees a validation prompt.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from replicator.core.hookspecs import hookimpl
from replicator.core.params import param

COLUMNS = ("instruction", "output_1", "generator_1", "output_2", "generator_2", "preference")


def _text(v) -> str:
    import re

    if v is None or (isinstance(v, float) and v != v):
        return ""
    return re.sub("[\ud800-\udfff]", "\ufffd", str(v))


def preference_label(p: float) -> list[float]:
    """[P(A), P(B), P(tie)] of an AlpacaEval preference in [1, 2] (see the module docstring)."""
    if p == 1.5:
        return [0.0, 0.0, 1.0]
    return [2.0 - p, p - 1.0, 0.0]


# eq=False: pluggy refuses a plugin equal (==) to one already registered, so two blocks
# with the same parameters would clash; identity equality avoids that.
@dataclasses.dataclass(frozen=True, eq=False)
class AlpacaEvalPairs:
    """GPT-4-judged pairwise preferences (AlpacaEval) as single-turn rows with soft labels, train split only.

    Soft label [2 - p, p - 1, 0] from the preference p in [1, 2]; p = 1.5 is a tie. Rows whose
    prompt is in the validation split are dropped. Stand-in for UltraFeedback-style pretraining data.
    """

    file: str = param("alpacaeval/gpt4_pairwise_30k.parquet",
                      "parquet file of AlpacaEval annotations, relative to the data dir or absolute")
    max_rows: int = param(0, "use at most this many rows, sampled with the seed; 0 = all")
    hard_labels: bool = param(False, "use the argmax one-hot label instead of the soft one")

    def __post_init__(self):
        if self.max_rows < 0:
            raise ValueError(f"max_rows must be >= 0 (0 = all rows), got {self.max_rows}")
        if not self.file:
            raise ValueError("file must not be empty")
        object.__setattr__(self, "_cache", {})

    def _path(self, data_dir) -> Path:
        p = Path(self.file).expanduser()
        return p if p.is_absolute() else Path(data_dir) / p

    def check(self, data_dir) -> list[str]:
        path = self._path(data_dir)
        if path.is_file():
            return []
        return [f"AlpacaEval pairs file not found: {path}; it is expected under REPLICATOR_DATA_DIR "
                f"as {self.file} (or give file as an absolute path)"]

    def data_files(self, data_dir) -> list[Path]:
        return [self._path(data_dir)]

    def _load(self, data_dir, seed: int) -> list[dict]:
        from replicator.core.errors import DataError, ReplicatorError
        from replicator.core.rows import make_row

        path = self._path(data_dir)
        if not path.is_file():
            raise ReplicatorError("; ".join(self.check(data_dir)))
        st = path.stat()
        key = (str(path.resolve()), st.st_mtime_ns, st.st_size, seed)
        cache = self._cache  # type: ignore[attr-defined]
        if key in cache:
            return cache[key]

        import math

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
        n = len(df)
        idx = list(range(n))
        if self.max_rows and n > self.max_rows:
            import random

            idx = sorted(random.Random(seed).sample(idx, self.max_rows))
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
                k = max(range(3), key=lambda j: label[j])
                label = [float(j == k) for j in range(3)]
            g1, g2 = cols["generator_1"][i], cols["generator_2"][i]
            rows.append(make_row(rid, [_text(cols["instruction"][i])], [_text(cols["output_1"][i])],
                                 [_text(cols["output_2"][i])], label=label,
                                 model_a=_text(g1) or None, model_b=_text(g2) or None,
                                 source="alpacaeval_pairs"))
        if problems:
            raise DataError(file, problems)
        cache.clear()
        cache[key] = rows
        return rows

    @hookimpl
    def data_sources(self, split, ctx):
        if split != "train":
            return None
        from replicator.core.data import copy_row

        rows = self._load(ctx.data_dir, ctx.seed)
        valid = ctx.valid_groups or set()
        out = [copy_row(r) for r in rows if r["group"] not in valid]
        dropped = len(rows) - len(out)
        if dropped:
            print(f"replicator: alpacaeval_pairs: dropped {dropped} of {len(rows)} row(s) whose prompt "
                  "is in the validation split", file=sys.stderr)
        return out
