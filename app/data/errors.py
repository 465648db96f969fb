"""The one error type every reader and validator raises for bad input."""

from __future__ import annotations

from pathlib import Path


class OmicsLabError(Exception):
    """Base of all errors OmicsLab reports to a user as a message, never as a traceback."""


class DataError(OmicsLabError):
    """Bad input data: says which file, what is wrong and what to do.

    ``str(err)`` is the full message shown in the GUI and printed by the CLI.
    """

    def __init__(self, problem: str, path: str | Path | None = None, hint: str | None = None) -> None:
        self.problem = problem
        self.path = str(path) if path is not None else None
        self.hint = hint
        msg = f"{self.path}: {problem}" if self.path else problem
        if hint:
            msg = f"{msg}\n  What to do: {hint}"
        super().__init__(msg)
