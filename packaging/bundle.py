"""Build the one-folder OmicsLab bundle with PyInstaller and smoke-check it (see packaging/README.md).

    python packaging/bundle.py [--dist DIR] [--work DIR]      # build, then check
    python packaging/bundle.py --check-only [--dist DIR]       # check an existing bundle

Run it with the Python of an environment where OmicsLab is installed from its wheel, plus PyInstaller
(``pip install torch==2.13.0 && pip install 'omicslab-*.whl[bundle]'``). The check starts the bundle from
another folder with nothing of the checkout on the path: the window smoke checks on both demos, and a
2-fold GBLUP cross-validation through the spawned job process (the part a frozen program most often
breaks). It prints the build time, the bundle's size and file count, and exits 0 when every check passed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SPEC = HERE / "pyinstaller" / "omicslab.spec"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(QT_QPA_PLATFORM="offscreen", OMP_NUM_THREADS="2")
    return env


def build(dist: Path, work: Path) -> float:
    """Run PyInstaller on the spec; returns the wall time in seconds."""
    probe = subprocess.run([sys.executable, "-c", "import PyInstaller, app"], capture_output=True, text=True,
                           env=_env(), cwd=tempfile.gettempdir())
    if probe.returncode != 0:
        sys.exit("bundle: this Python lacks PyInstaller or an installed OmicsLab "
                 f"({probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else 'import failed'}). "
                 "Install them first: pip install torch==2.13.0 && pip install 'omicslab-*.whl[bundle]'.")
    t0 = time.perf_counter()
    rc = subprocess.call([sys.executable, "-m", "PyInstaller", "--noconfirm", "--log-level", "WARN",
                          "--distpath", str(dist), "--workpath", str(work), str(SPEC)],
                         env=_env(), cwd=tempfile.gettempdir())
    if rc != 0:
        sys.exit(f"bundle: PyInstaller failed (exit {rc}); its messages are above. A missing package means "
                 "this environment lacks one of OmicsLab's dependencies: pip install the wheel with its deps.")
    return time.perf_counter() - t0


def _size(folder: Path) -> tuple[int, int]:
    files = [p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()]
    return sum(p.stat().st_size for p in files), len(files)


def check(bundle: Path) -> bool:
    """Start the bundle from a scratch folder; True when every check passed."""
    exe = bundle / ("omicslab.exe" if os.name == "nt" else "omicslab")
    if not exe.is_file():
        print(f"bundle: no executable at {exe}; build it first.", file=sys.stderr)
        return False
    demo = next(bundle.rglob("resources/demo/genotype"), None)
    checks = [("window + single-cell demo", [str(exe), "--smoke"]),
              ("window + genotype demo", [str(exe), "--smoke", "--demo", "genotype"])]
    if demo is not None:
        checks.append(("GBLUP cross-validation in a spawned job", [
            str(exe), "gp", "cv", "--geno", str(demo / "genotypes.csv"), "--pheno", str(demo / "pheno.csv"),
            "--trait", "trait", "--model", "gblup", "--folds", "2", "--out", "cv", "--quiet"]))
    ok = demo is not None
    if demo is None:
        print("bundle: FAILED: the genotype demo is not inside the bundle", flush=True)
    with tempfile.TemporaryDirectory(prefix="omicslab-bundle-check-") as scratch:
        for what, cmd in checks:
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, cwd=scratch, env=_env(), capture_output=True, text=True, timeout=600)
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
            good = proc.returncode == 0
            ok &= good
            print(f"bundle check: {what}: {'ok' if good else f'FAILED (exit {proc.returncode})'} in "
                  f"{time.perf_counter() - t0:.0f} s" + "".join(f"\n    {line}" for line in tail), flush=True)
        if demo is not None and not (Path(scratch) / "cv" / "metrics.json").is_file():
            print("bundle check: the cross-validation wrote no cv/metrics.json", flush=True)
            ok = False
    return ok


def main(argv: list[str]) -> int:
    """Build (unless ``--check-only``) and check; 0 when the bundle passed its checks."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dist", type=Path, default=HERE.parent / "dist", help="where dist/omicslab goes")
    ap.add_argument("--work", type=Path, default=HERE.parent / "build" / "pyinstaller",
                    help="PyInstaller's work folder")
    ap.add_argument("--check-only", action="store_true", help="check an existing bundle")
    args = ap.parse_args(argv)
    bundle = args.dist / "omicslab"
    if not args.check_only:
        if bundle.exists():
            shutil.rmtree(bundle)
        load0 = os.getloadavg()[0]
        secs = build(args.dist, args.work)
        size, n = _size(bundle)
        print(f"bundle: built {bundle} in {secs / 60:.1f} min (load average {load0:.1f} at the start, "
              f"{os.getloadavg()[0]:.1f} at the end, {os.cpu_count()} cores): {size / 1e6:.0f} MB in {n} files",
              flush=True)
    ok = check(bundle)
    print(f"bundle: {'all checks passed' if ok else 'FAILED'}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
