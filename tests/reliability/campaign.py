"""Helpers of the reliability campaign: run the real command line, build small bad inputs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from app.resources import CELLLM_TINY

REPO = Path(__file__).resolve().parents[2]
VOCAB = (CELLLM_TINY / "vocab.txt").read_text().split()[:60]


def cli(args: list[str], tmp_path: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m app ARGS`` in a fresh process (the user's path), runs folder inside ``tmp_path``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMICSLAB_RUNS_DIR": str(tmp_path / "runs")}
    return subprocess.run([sys.executable, "-m", "app", *args], cwd=REPO, capture_output=True, text=True, env=env,
                          timeout=timeout)


def assert_refused(p: subprocess.CompletedProcess, *words: str) -> str:
    """Exit 2 with one clear message (what, where, what to do), never a traceback or "unexpected error"."""
    err = p.stderr
    assert p.returncode == 2, (p.returncode, err[-2000:])
    assert "Traceback" not in err and "unexpected error" not in err, err[-2000:]
    assert "What to do:" in err, err[-2000:]
    for w in words:
        assert w in err, (w, err[-2000:])
    return err


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes (to prove nothing the user had was changed)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def sc_counts(n_cells: int = 40, seed: int = 0) -> tuple[np.ndarray, list[str], list[str]]:
    """Counts (cells x genes) over genes the shipped tiny model knows, and cell IDs."""
    rng = np.random.default_rng(seed)
    X = rng.poisson(3.0, size=(n_cells, len(VOCAB))).astype(np.float32)
    return X, [f"cell{i:03d}" for i in range(n_cells)], list(VOCAB)


def write_h5ad(path: Path, X: np.ndarray, cells: list[str], genes: list[str], obs: dict | None = None,
               var: dict | None = None) -> Path:
    a = ad.AnnData(X=X, obs=pd.DataFrame(obs or {}, index=cells), var=pd.DataFrame(var or {}, index=genes))
    a.write_h5ad(path)
    return path


def geno_csv(path: Path, n_lines: int = 60, n_markers: int = 30, seed: int = 0, corner: str = "ID",
             lines_as_rows: bool = True) -> tuple[Path, np.ndarray, list[str]]:
    """A numeric 0/1/2 genotype CSV (lines x markers, or transposed) with IDs; returns (path, calls, line IDs)."""
    rng = np.random.default_rng(seed)
    calls = rng.integers(0, 3, size=(n_lines, n_markers))
    lines = [f"L{i:03d}" for i in range(n_lines)]
    markers = [f"snp{j}" for j in range(n_markers)]
    df = pd.DataFrame(calls, index=pd.Index(lines, name=corner), columns=markers)
    if not lines_as_rows:
        df = df.T
        df.index.name = corner
    df.to_csv(path)
    return path, calls, lines


def pheno_csv(path: Path, lines: list[str], calls: np.ndarray, seed: int = 1) -> Path:
    """A phenotype table whose trait depends on the genotypes (so a model has something to find)."""
    rng = np.random.default_rng(seed)
    y = calls[:, :5].sum(axis=1) + rng.normal(0, 0.5, len(lines))
    pd.DataFrame({"ID": lines, "yield": y}).to_csv(path, index=False)
    return path


@pytest.fixture
def gp_data(tmp_path: Path) -> tuple[Path, Path]:
    """A good genotype CSV (lines as rows) and its phenotype table."""
    g, calls, lines = geno_csv(tmp_path / "geno.csv")
    return g, pheno_csv(tmp_path / "pheno.csv", lines, calls)
