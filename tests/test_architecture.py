"""The layering rules of ../shared/DESIGN.md hold: checked by import-linter and in a clean process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_import_linter_contracts_hold() -> None:
    exe = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(exe)], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_engine_and_jobs_import_no_qt() -> None:
    # pytest-qt has already imported PySide6 here, so check in a fresh interpreter.
    code = (
        "import sys, importlib, pkgutil\n"
        "import app.engine, app.jobs, app.models, app.data\n"
        "for pkg in (app.data, app.models, app.engine, app.jobs):\n"
        "    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "        importlib.import_module(m.name)\n"
        "bad = sorted(k for k in sys.modules if k.split('.')[0] in ('PySide6', 'pyqtgraph', 'superqt'))\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_cli_help_lists_subcommands() -> None:
    proc = subprocess.run([sys.executable, "-m", "app", "--help"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    for word in ("inspect", "celllm", "gp", "bench", "gui"):
        assert word in proc.stdout


def test_ruff_clean() -> None:
    exe = Path(sys.executable).with_name("ruff")
    proc = subprocess.run([str(exe), "check", "app", "tests", "packaging"], cwd=REPO, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
