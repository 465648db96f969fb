"""Entry point of ``python -m app`` and the ``omicslab`` script.

With no argument (or ``--smoke``) it opens the window; ``bench NAME`` runs a benchmark; anything else is
the command line of ``app.cli``. The three faces are siblings that never import each other, so the
dispatch lives here, above them.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Dispatch to the GUI, a benchmark, or the command line."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("--smoke", "gui") or (argv[0].startswith("--") and argv[0] not in (
            "--help", "-h", "--version")):
        from app.ui.launch import main as gui_main

        return gui_main([a for a in argv if a != "gui"])
    if argv[0] == "bench":
        from app.bench.runner import main as bench_main

        return bench_main(argv[1:])
    from app.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
