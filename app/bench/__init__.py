"""Benchmarks, one module per `python -m app bench NAME`; each module exposes ``main(argv) -> int``.

Each prints a human-readable table, or one JSON object with ``--json``.
"""
