"""``python -m app bench NAME [args]``: find ``app.bench.NAME``, run its ``main(argv)``, and put the load average
and core count beside its figures (a footer line, or a ``"machine"`` key in its ``--json`` object)."""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import pkgutil
import sys

import app.bench
from app.bench._load import LoadMonitor


def available() -> list[str]:
    """Names of the benchmarks that exist."""
    return sorted(m.name for m in pkgutil.iter_modules(app.bench.__path__) if m.name != "runner"
                  and not m.name.startswith("_"))


def _with_machine(captured: str, machine: dict) -> str:
    """The captured stdout with ``"machine": machine`` added to its last line when that is a JSON object."""
    lines = captured.rstrip("\n").split("\n")
    try:
        obj = json.loads(lines[-1])
    except (json.JSONDecodeError, IndexError):
        obj = None
    if isinstance(obj, dict):
        obj["machine"] = machine
        lines[-1] = json.dumps(obj)
    return "\n".join(lines) + "\n" if captured else ""


def main(argv: list[str]) -> int:
    """Run one benchmark by name."""
    names = available()
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m app bench NAME [--json] [options]\n\nbenchmarks: " + ", ".join(names)
              + "\n\nEvery benchmark reports the load average and core count beside its figures.")
        return 0 if argv else 2
    name = argv[0]
    if name not in names:
        print(f"error: no benchmark named {name!r}; choose one of: {', '.join(names)}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"app.bench.{name}")
    args = argv[1:]
    if "-h" in args or "--help" in args:
        return int(module.main(args) or 0)
    mon = LoadMonitor().start()
    if "--json" not in args:
        try:
            return int(module.main(args) or 0)
        finally:
            mon.stop()
            print(mon.text(), flush=True)
    buf = io.StringIO()  # the bench prints its JSON object last; add the machine's load to it
    try:
        with contextlib.redirect_stdout(buf):
            rc = int(module.main(args) or 0)
    finally:
        mon.stop()
        summary = mon.summary()
        sys.stdout.write(_with_machine(buf.getvalue(), summary))
        sys.stdout.flush()
        if summary["warning"]:
            print(f"warning: {summary['warning']}", file=sys.stderr)
    return rc
