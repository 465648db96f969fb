"""Run ``python -m app ...`` the way a user does (a subprocess from the checkout), for the CLI tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_app(args: list[str], runs_root: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m app *args`` with one OpenMP thread and its runs under ``runs_root``; output captured."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMICSLAB_RUNS_DIR": str(runs_root)}
    return subprocess.run([sys.executable, "-m", "app", *args], cwd=REPO, capture_output=True, text=True,
                          env=env, timeout=timeout)
