"""Errors that name where the problem is: the file, the key or row, the field."""

from __future__ import annotations


class ReplicatorError(Exception):
    """Base class of errors shown to users without a traceback."""


class RecipeError(ReplicatorError):
    def __init__(self, file: str, key: str, message: str):
        self.file, self.key = file, key
        super().__init__(f"{file}: {key}: {message}")


class DataError(ReplicatorError):
    """One or more bad rows of a data file; ``problems`` lists (row_id, field, message)."""

    def __init__(self, file: str, problems: list[tuple[str, str, str]], total: int | None = None):
        self.file, self.problems = file, problems
        total = total if total is not None else len(problems)
        lines = [f"{file}: row {rid}: field {field!r}: {msg}" for rid, field, msg in problems[:10]]
        more = f"\n... and {total - 10} more" if total > 10 else ""
        super().__init__(f"{total} bad row(s) in {file}:\n" + "\n".join(lines) + more)
