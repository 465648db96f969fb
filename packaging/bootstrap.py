"""Set up ``.venv`` when missing or stale, then launch the app or run the test suite.

Needs only Python 3.11+ (no make, no shell):

    python3 packaging/bootstrap.py run     # set up, open the window on the bundled demo data
    python3 packaging/bootstrap.py test    # set up, run the whole test suite headless

torch is installed first and pinned to 2.13.0 so pip never resolves a newer (multi-GB CUDA) build.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv"
TORCH = "torch==2.13.0"


def _python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _stamp() -> str:
    return hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()


def ensure_venv() -> Path:
    """Create and fill ``.venv`` unless it is already up to date with pyproject.toml."""
    if sys.version_info < (3, 11):  # noqa: UP036 - this script may be started by an older python3
        sys.exit(f"OmicsLab needs Python 3.11 or newer; this is {sys.version.split()[0]}.")
    py = _python()
    stamp = VENV / ".omicslab-installed"
    if py.exists() and stamp.exists() and stamp.read_text() == _stamp():
        return py
    if not py.exists():
        print(f"creating {VENV} ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    pip = [str(py), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    print("installing torch (CPU/GPU build of 2.13.0) ...", flush=True)
    subprocess.check_call([*pip, TORCH])
    print("installing OmicsLab and its test tools ...", flush=True)
    subprocess.check_call([*pip, "-e", f"{ROOT}[test]"])
    stamp.write_text(_stamp())
    return py


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("run", "test", "setup"):
        print(__doc__)
        return 2
    py = ensure_venv()
    cmd, rest = argv[0], argv[1:]
    if cmd == "setup":
        return 0
    if cmd == "run":
        return subprocess.call([str(py), "-m", "app", *(rest or ["--demo", "singlecell"])], cwd=ROOT)
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    return subprocess.call([str(py), "-m", "pytest", *rest], cwd=ROOT, env=env)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
