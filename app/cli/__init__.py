"""The command line: ``python -m app SUBCOMMAND ...``. Every GUI action has a twin here.

Each subcommand lives in its own module exposing ``register(subparsers)``; the parser's ``func`` default
takes the parsed namespace and returns an exit code. Errors meant for the user (``OmicsLabError``) are
printed as one clear message, never as a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys

from app import __version__
from app.data.errors import OmicsLabError

# Subcommand modules, in the order --help lists them.
SUBCOMMANDS = ("inspect_cmd", "celllm_cmd", "gp_cmd", "runs_cmd")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (used by ``main`` and by the docs)."""
    parser = argparse.ArgumentParser(
        prog="python -m app",
        description=(
            "OmicsLab: train and use CellLM and genomic-prediction models on your own data.\n"
            "Run with no arguments to open the window (add --smoke to build it and quit)."
        ),
        epilog="Benchmarks: python -m app bench {jobs,contrastive,embed,gp,ui,stream} [--json]",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"OmicsLab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("gui", help="open the window (the default with no arguments)")
    sub.add_parser("bench", help="run a benchmark: bench NAME [--json] (see the epilog)")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"app.cli.{name}")
        except ModuleNotFoundError as exc:  # a subcommand not built yet must not break the others
            if exc.name != f"app.cli.{name}":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return int(args.func(args) or 0)
    except OmicsLabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # output piped into `head` and closed early: not an error of ours; silence the flush at exit
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
