"""Entry point of ``python -m app`` and the ``omicslab`` script.

With no argument (or ``--smoke``, or a data PATH) it opens the window; ``bench NAME`` runs a benchmark;
anything else is the command line of ``app.cli``. The three faces are siblings that never import each other, so the
dispatch lives here, above them.
"""

from __future__ import annotations

import sys
from pathlib import Path

COMMANDS = ("gui", "bench", "inspect", "celllm", "gp", "runs")
"""The first words that are commands; any other first word that names a file or folder opens the window on it."""


def looks_like_path(word: str) -> bool:
    """``python -m app PATH`` / ``omicslab PATH``: a first argument that is a data path, not a command (an
    existing file or folder, or a name with a folder or an extension, so a missing file gets the window's
    clear message rather than the parser's "invalid choice")."""
    if word.startswith("-") or word in COMMANDS:
        return False
    return Path(word).exists() or "/" in word or "\\" in word or bool(Path(word).suffix)


def main(argv: list[str] | None = None) -> int:
    """Dispatch to the GUI, a benchmark, or the command line."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("--smoke", "gui") or looks_like_path(argv[0]) or (
            argv[0].startswith("--") and argv[0] not in ("--help", "-h", "--version")):
        from app.ui.launch import main as gui_main

        return gui_main([a for a in argv if a != "gui"])
    if argv[0] == "bench":
        from app.bench.runner import main as bench_main

        return bench_main(argv[1:])
    from app.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
