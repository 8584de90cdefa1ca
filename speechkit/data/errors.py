"""Errors for bad input: each names the file (and manifest line) and says what to do."""

from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """An example that cannot be used. ``where`` is ``file`` or ``manifest:line``."""

    def __init__(self, where: str | Path, problem: str, fix: str = "") -> None:
        self.where = str(where)
        self.problem = problem
        self.fix = fix
        msg = f"{self.where}: {problem}"
        if fix:
            msg += f" — {fix}"
        super().__init__(msg)
