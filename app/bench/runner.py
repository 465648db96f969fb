"""``python -m app bench NAME [args]``: find ``app.bench.NAME`` and run its ``main(argv)``."""

from __future__ import annotations

import importlib
import pkgutil
import sys

import app.bench


def available() -> list[str]:
    """Names of the benchmarks that exist."""
    return sorted(m.name for m in pkgutil.iter_modules(app.bench.__path__) if m.name != "runner"
                  and not m.name.startswith("_"))


def main(argv: list[str]) -> int:
    """Run one benchmark by name."""
    names = available()
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m app bench NAME [--json] [options]\n\nbenchmarks: " + ", ".join(names))
        return 0 if argv else 2
    name = argv[0]
    if name not in names:
        print(f"error: no benchmark named {name!r}; choose one of: {', '.join(names)}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"app.bench.{name}")
    return int(module.main(argv[1:]) or 0)
