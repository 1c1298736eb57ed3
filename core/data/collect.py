"""The rows of one stage: every data source's answer through the ``data_sources`` hook, checked
(splits not empty, no prompt shared between train and valid, every row labelled) and repaired
(NUL characters)."""

from __future__ import annotations

import logging
from typing import NoReturn

from replicator.core.data.competition import strip_nul
from replicator.core.errors import DataError
from replicator.core.rows import prompt_group

log = logging.getLogger(__name__)


def stage_rows_error(stage: str, split: str, why: str) -> NoReturn:
    """The one error for a stage's rows (a split missing or empty, rows without labels, a leak):
    a :class:`DataError` naming the stage, the split and why."""
    raise DataError(f"stage {stage or 'main'}", [(f"({split} split)", "", why)])


def _repair_nul(rows: list[dict]) -> None:
    """NUL characters removed from the turns of any source's rows (the competition CSV's are gone
    already), the prompt group recomputed; one notice per source naming rows and fields."""
    found: dict[str, list[str]] = {}
    for r in rows:
        fields = strip_nul(r)
        if fields:
            r["group"] = prompt_group(r["prompt"])
            source = r.get("source") or "(unknown source)"
            found.setdefault(source, []).extend(f"{r['id']} {f}" for f in fields)
    for source, where in found.items():
        examples = ", ".join(where[:3]) + (", ..." if len(where) > 3 else "")
        log.info("%s: %d field(s): NUL character(s) (\\x00) removed from the text of the named field(s) "
                 "(e.g. id %s)", source, len(where), examples)


def collect_rows(plugins, ctx) -> tuple[list[dict], list[dict]]:
    """Validation rows first (so train sources can de-duplicate against them), then training rows.

    Raises :func:`stage_rows_error` when a split is empty, a training row shares a prompt with a
    validation row, or a row has no label.
    """
    def split(name: str) -> list[dict]:
        return [r for rows in plugins.all("data_sources", split=name, ctx=ctx) if rows for r in rows]

    valid = split("valid")
    ctx.valid_groups = {r["group"] for r in valid}
    ctx.test_groups = {r["group"] for r in split("test")}
    train = split("train")
    if not train:
        stage_rows_error(ctx.stage, "train", "no training rows (no data source fed the 'train' split)")
    if not valid:
        stage_rows_error(ctx.stage, "valid", "no validation rows (a data source must feed the 'valid' split)")
    leaked = [r["id"] for r in train if r["group"] in ctx.valid_groups]
    if leaked:
        stage_rows_error(ctx.stage, "train",
                         f"{len(leaked)} training rows share a prompt with validation rows (first: "
                         f"{leaked[0]}); a data source did not de-duplicate against ctx.valid_groups")
    _repair_nul(train + valid)
    for name, rows in (("train", train), ("valid", valid)):
        bad = [r["id"] for r in rows if r.get("label") is None]
        if bad:
            stage_rows_error(ctx.stage, name, f"{len(bad)} rows have no label (first: {bad[0]})")
    return train, valid
