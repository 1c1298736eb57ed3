"""The competition data: Kaggle ``train.csv`` (and optionally ``test.csv``), or its hub copy."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from replicator.core.data import hub
from replicator.core.data.competition import read_competition_csv
from replicator.core.data.files import (
    resolve_data_path as resolve,  # ``file`` under the data dir unless absolute
)
from replicator.core.data.splits import copy_row, sample_rows, split_fold, split_valid
from replicator.core.errors import ReplicatorError
from replicator.core.hookspecs import hookimpl
from replicator.core.lib import sources
from replicator.core.lib.full_size import capped
from replicator.core.params import ParamError, param

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")


@dataclasses.dataclass(frozen=True)
class KaggleCSV:
    """Competition rows (human one-hot labels) from the Kaggle CSV format, split by prompt group.

    ``train``/``valid`` come from ``train_file``: a grouped random hold-out of ``valid_fraction``
    (``folds: 0``) or fold ``fold`` of a StratifiedGroupKFold. Duplicate prompts never straddle the
    split. When ``train_file`` is missing and the Hugging Face hub is reachable, the hub copy
    ``hub_id`` is loaded instead. ``test`` rows come from ``test_file`` when given. Validation
    rules for bad rows: :mod:`replicator.core.data.competition`.
    """

    train_file: str = param("lmsys-chatbot-arena/train.csv",
                            "competition train CSV, relative to the data dir (REPLICATOR_DATA_DIR) or "
                            "absolute")
    test_file: str | None = param(None, "competition test CSV (no labels) for the test split; "
                                        "null = no test rows")
    folds: int = param(0, "number of StratifiedGroupKFold folds; 0 = a random grouped hold-out of "
                          "valid_fraction", ge=0)
    fold: int = param(0, "which fold is the validation fold (0 <= fold < folds)", ge=0)
    valid_fraction: float = param(0.15, "share of rows held out for validation when folds is 0", gt=0, lt=1)
    splits: list[str] = param(["train", "valid", "test"],
                              "which splits this source feeds (e.g. [valid] for a pretraining stage)")
    max_rows: int = sources.max_rows_field("use at most this many rows of the train file, sampled with the "
                                           "seed before splitting; 0 = all")
    hub_id: str | None = param("lmsys/lmsys-arena-human-preference-55k",
                               "Hugging Face dataset loaded when train_file is missing and the hub is "
                               "reachable; null = never")

    def __post_init__(self):
        sources.check_source_params(self, file_field="train_file")
        if not isinstance(self.splits, (list, tuple)) or not self.splits:
            raise ParamError("splits",
                             f"splits must be a non-empty list of {', '.join(SPLITS)}, got {self.splits!r}")
        bad = [s for s in self.splits if s not in SPLITS]
        if bad:
            raise ParamError("splits", f"splits: unknown split(s) {', '.join(map(repr, bad))}; known: "
                             f"{', '.join(SPLITS)}")
        if self.folds == 1:
            raise ParamError("folds", f"folds must be 0 (hold-out) or >= 2, got {self.folds}")
        if self.folds and self.fold >= self.folds:
            raise ParamError("fold", f"fold must be in [0, {self.folds}) (fold < folds), got {self.fold}")
        if not self.folds and self.fold != 0:
            raise ParamError("fold",
                             f"fold is {self.fold} but folds is 0 (hold-out); set folds >= 2 to use folds")

    # -- checks and fingerprints ---------------------------------------------------------------

    def _needs_train(self) -> bool:
        return "train" in self.splits or "valid" in self.splits

    @hookimpl
    def data_check(self, data_dir) -> list[str]:
        """Problems that would stop this source from loading (missing files), as messages."""

        problems = []
        train = resolve(data_dir, self.train_file)
        if self._needs_train() and not train.is_file() and (self.hub_id is None or not hub.hub_reachable()):
            no_hub = ["set hub_id to a Hugging Face copy of the competition data and make the hub reachable"]
            problems.append(sources.missing_data_message(
                "competition train file not found", train,
                [f"set REPLICATOR_DATA_DIR to a folder containing {self.train_file}"], field="train_file",
                hub_id=self.hub_id, also=no_hub if self.hub_id is None else ()))
        if self.test_file is not None and "test" in self.splits:
            problems += sources.missing_file(resolve(data_dir, self.test_file),
                                             "competition test file not found",
                                             ["put it under REPLICATOR_DATA_DIR"], field="test_file")
        return problems

    @hookimpl
    def data_files(self, data_dir) -> list[Path]:
        """The files this source reads (a missing train file means the hub copy is used)."""
        out = []
        train = resolve(data_dir, self.train_file)
        if self._needs_train() and train.is_file():
            out.append(train)
        if self.test_file is not None and "test" in self.splits:
            out.append(resolve(data_dir, self.test_file))
        return out

    # -- loading -------------------------------------------------------------------------------

    def _train_valid(self, data_dir, seed: int) -> tuple[list[dict], list[dict]]:

        path = resolve(data_dir, self.train_file)

        def load() -> tuple[list[dict], list[dict]]:
            if path.is_file():
                rows = read_competition_csv(path, require_labels=True)
            elif self.hub_id is not None and hub.hub_reachable():
                log.info("kaggle_csv: %s not found; loading hub dataset %s", path, self.hub_id)
                rows = hub.load_hub_55k(self.hub_id)
            else:
                raise sources.missing_data_error(self.data_check(data_dir))
            rows = sample_rows(rows, self.max_rows, seed)
            if self.folds:
                try:
                    return split_fold(rows, self.folds, self.fold, seed)
                except ReplicatorError as e:  # the file and the parameter named (folds.k sets it)
                    raise ReplicatorError(f"{path}: kaggle_csv folds = {self.folds}: {e}") from None
            return split_valid(rows, self.valid_fraction, seed)

        # one split per instance; a new seed or a changed file replaces it
        stamp = sources.file_stamp([path]) if path.is_file() else f"hub:{self.hub_id}"
        return sources.cached(self, (stamp, seed), load, slot="split")

    def _test(self, data_dir) -> list[dict]:

        path = resolve(data_dir, self.test_file)  # type: ignore[arg-type]
        if not path.is_file():
            raise sources.missing_data_error(self.data_check(data_dir))
        return sources.cached(self, sources.file_stamp([path]),
                              lambda: read_competition_csv(path, require_labels=False), slot="test")

    @hookimpl
    def data_sources(self, split, ctx):

        if split not in self.splits:
            return None
        if split == "test":
            if self.test_file is None:
                return None
            rows = self._test(ctx.data_dir)
        else:
            train, valid = self._train_valid(ctx.data_dir, ctx.seed)
            rows = train if split == "train" else valid
        return [copy_row(r) for r in rows]

    def full_size_rows(self, stage: str, recipe: str) -> dict:
        """The competition's train.csv at full size: 57,477 rows (SOLUTIONS.md section 3, [MLE]), split as
        this block splits it (``replicate plan``; core/lib/full_size.py)."""
        rows = capped(57_477, self.max_rows)
        valid = round(rows / self.folds) if self.folds else round(rows * self.valid_fraction)
        return {"train": (rows - valid) * ("train" in self.splits), "valid": valid * ("valid" in self.splits),
                "size": "57,477 [MLE]"}
