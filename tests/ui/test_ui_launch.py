"""``python -m app --smoke`` (what the README's run command builds) works from a plain process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("demo", "expect"), [("singlecell", "700 cells x 765 genes"), ("genotype", "400 lines")])
def test_smoke_opens_each_demo(demo: str, expect: str) -> None:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    out = subprocess.run([sys.executable, "-m", "app", "--demo", demo, "--smoke"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"{demo} demo: {expect} -> ok" in out.stdout
