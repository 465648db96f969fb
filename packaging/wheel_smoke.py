"""Install OmicsLab as a user would and check it runs: the CI step after the test suite.

    python3 packaging/wheel_smoke.py [--keep]

1. builds the wheel from a clean copy of the sources (an in-tree ``build/`` can carry stale files),
2. creates a fresh virtual environment outside the checkout and installs ``torch==2.13.0`` first (the
   build pip finds locally, never a multi-GB CUDA one), then the wheel (not editable),
3. from another directory, with nothing of the checkout on the path, runs ``omicslab --smoke``,
   ``omicslab --smoke --demo genotype`` and a 1-epoch fine-tune of the bundled model on the bundled
   single-cell demo, and checks that the code and the model used are the installed ones.

Needs only Python 3.11+ with pip (the wheel is built with ``.venv``'s setuptools when ``.venv`` exists).
Exit status 0 = every step passed; the step that failed is named otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TORCH = "torch==2.13.0"  # the same pin as bootstrap.py


class StepFailed(RuntimeError):
    """A smoke step exited non-zero or produced the wrong thing."""


def _run(step: str, cmd: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 900) -> str:
    """Run one step, echo its output, raise StepFailed naming the step when it fails."""
    t0 = time.perf_counter()
    print(f"[wheel smoke] {step}: {' '.join(cmd)}", flush=True)
    try:
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise StepFailed(f"{step}: no answer after {timeout:.0f} s") from exc
    # pip's note on each configured local index folder that lacks a package is noise, not news
    lines = [ln for ln in (proc.stdout + proc.stderr).strip().splitlines() if "is neither a file nor a dir" not in ln]
    if lines:
        print("\n".join("    " + line for line in lines[-25:]), flush=True)
    print(f"[wheel smoke] {step}: exit {proc.returncode} in {time.perf_counter() - t0:.0f} s", flush=True)
    if proc.returncode != 0:
        raise StepFailed(f"{step} exited with {proc.returncode}")
    return proc.stdout


def build_wheel(dest: Path, env: dict[str, str]) -> Path:
    """Build the OmicsLab wheel from a clean copy of the sources into ``dest``."""
    src = dest / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "app", src / "app", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dev_py = ROOT / ".venv" / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    builder = [str(dev_py), "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"] if dev_py.exists() \
        else [sys.executable, "-m", "pip", "wheel", "--no-deps"]
    _run("build the wheel", [*builder, "-q", "-w", str(dest / "dist"), str(src)], cwd=dest, env=env)
    wheels = sorted((dest / "dist").glob("omicslab-*.whl"))
    if len(wheels) != 1:
        raise StepFailed(f"build the wheel: expected one omicslab wheel, found {[w.name for w in wheels]}")
    mb = wheels[0].stat().st_size / 1e6
    print(f"[wheel smoke] wheel {wheels[0].name}: {mb:.1f} MB", flush=True)
    return wheels[0]


def smoke(tmp: Path) -> None:
    """Every step of the module docstring, inside ``tmp``."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(QT_QPA_PLATFORM="offscreen", PIP_DISABLE_PIP_VERSION_CHECK="1", OMP_NUM_THREADS="2")
    wheel = build_wheel(tmp, env)

    venv_dir = tmp / "venv"
    print(f"[wheel smoke] creating {venv_dir}", flush=True)
    venv.EnvBuilder(with_pip=True).create(venv_dir)
    bindir = venv_dir / ("Scripts" if os.name == "nt" else "bin")
    py, omicslab = str(bindir / "python"), str(bindir / "omicslab")
    pip = [py, "-m", "pip", "install", "-q"]
    _run("install torch", [*pip, TORCH], cwd=tmp, env=env)
    _run("install the wheel", [*pip, str(wheel)], cwd=tmp, env=env)

    work = tmp / "elsewhere"  # not the checkout, not the venv: nothing found by accident
    work.mkdir()
    where = json.loads(_run("where the code and model come from", [py, "-c", (
        "import json, app, app.resources as r; "
        "print(json.dumps({'app': app.__file__, 'model': str(r.CELLLM_TINY)}))")], cwd=work, env=env))
    site = venv_dir.resolve()
    for what, path in where.items():
        if not Path(path).resolve().is_relative_to(site):
            raise StepFailed(f"{what} comes from {path}, not from the installed wheel in {site}")

    _run("omicslab --smoke", [omicslab, "--smoke"], cwd=work, env=env, timeout=300)
    _run("omicslab --smoke --demo genotype", [omicslab, "--smoke", "--demo", "genotype"], cwd=work, env=env,
         timeout=300)
    # the CLI reads files: write the bundled single-cell demo (integer counts) the way a notebook user would
    _run("write the single-cell demo", [py, "-c", (
        "from app.data.demo import pbmc68k_counts; pbmc68k_counts().write_h5ad('pbmc_demo.h5ad')")],
        cwd=work, env=env)
    _run("1-epoch fine-tune of the bundled model", [
        omicslab, "celllm", "finetune", "--data", "pbmc_demo.h5ad", "--label-key", "bulk_labels",
        "--out", "run", "--epochs", "1", "--device", "cpu", "--threads", "2", "--quiet"], cwd=work, env=env)
    metrics = work / "run" / "metrics.json"
    if not metrics.is_file():
        raise StepFailed(f"the fine-tune wrote no {metrics}")
    summary = json.loads(metrics.read_text())
    init = Path(str(summary.get("init", ""))).resolve()
    if not init.is_relative_to(site) or summary.get("epochs_run") != 1 or "baseline" not in summary:
        raise StepFailed(f"the fine-tune's metrics.json is not a 1-epoch run from the bundled model with its "
                         f"baseline: init={summary.get('init')}, epochs_run={summary.get('epochs_run')}")
    print(f"[wheel smoke] fine-tuned from {init} for 1 epoch; baseline beside it", flush=True)


def main(argv: list[str]) -> int:
    """Run the smoke check in a fresh temporary folder; 0 when every step passed."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (venv, wheel, run)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="omicslab-wheel-smoke-"))
    try:
        smoke(tmp)
    except StepFailed as exc:  # the folder stays for a look at what went wrong
        print(f"[wheel smoke] FAILED: {exc} (kept {tmp})", file=sys.stderr, flush=True)
        return 1
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"[wheel smoke] ok in {time.perf_counter() - t0:.0f} s" + (f" (kept {tmp})" if args.keep else ""),
          flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
