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


def os_error_words(exc: OSError) -> tuple[str, str]:
    """(problem, what to do) in plain words for an operating-system error while reading or writing a file.

    One home for these words, so a full disk or a missing permission reads the same everywhere.
    """
    import errno

    code = getattr(exc, "errno", None)
    text = str(exc)
    if code == errno.ENOSPC or "os error 28" in text or "No space left" in text:
        return "the disk is full", "Free some space on that disk (or choose a folder on another disk), then try again."
    if code in (errno.EACCES, errno.EPERM) or isinstance(exc, PermissionError):
        return "permission denied", ("You may not read or write this file or folder: change its permissions, or copy "
                                     "it to a folder of yours.")
    if code == errno.EROFS:
        return "the disk is read-only", "Choose a folder on a writable disk."
    if code == errno.EDQUOT:
        return "the disk quota is exceeded", "Free some of your space, or choose another disk."
    return (exc.strerror or str(exc) or type(exc).__name__).lower(), "Check the path and that the disk is working."


def check_readable(path: str | Path) -> None:
    """DataError (plain words: permission, ...) when ``path`` exists but cannot be opened for reading.

    Readers call it first, so an unreadable file is never reported as a bad layout.
    """
    import os

    p = Path(path)
    try:
        if p.is_dir():
            os.listdir(p)
        elif p.exists():
            with open(p, "rb") as fh:
                fh.read(1)
    except OSError as exc:
        problem, hint = os_error_words(exc)
        raise DataError(f"cannot read this {'folder' if p.is_dir() else 'file'}: {problem}", p, hint) from exc
