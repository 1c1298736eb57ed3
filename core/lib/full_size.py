"""What ``replicate plan`` asks a plugin about full-size work, without data or weights.

The planner (:mod:`replicator.core.run.resources`) names no plugin: each plugin that knows its own
full-size numbers says them through two optional methods (plain methods, not hooks: they are questions
asked of the plugins the recipe already chose, never part of a run):

* a data-source plugin: ``full_size_rows(stage: str, recipe: str) -> dict | None``, the rows it gives the
  stage at full size, ``{"train": n, "valid": n, "pool": n, "size": "how many, and the source"}`` (missing
  keys are 0; None: unknown);
* an augment plugin: ``train_copies() -> dict``, how many training rows it makes of each row, under the
  name the plan prints (``{"swap_multiplier": 2}`` for a swap duplicate, ``{"layout_multiplier": 2}`` for
  2nd place's PAB + PAPB layouts); without the method, 1.
"""

from __future__ import annotations


def capped(rows: int, max_rows: int) -> int:
    """``rows`` cut at a plugin's ``max_rows`` (0: no cap)."""
    return min(rows, max_rows) if max_rows else rows
