"""Small synthetic single-cell files in every supported format (written into tmp_path by the tests)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

GENES = ["CD3E", "MS4A1", "LYZ", "NKG7", "GNLY", "CD14", "FCGR3A", "PPBP"]


def counts(n_cells: int = 6, n_genes: int = len(GENES), seed: int = 0) -> np.ndarray:
    """cells x genes integer counts with every cell and gene non-empty."""
    rng = np.random.default_rng(seed)
    X = rng.poisson(2.0, size=(n_cells, n_genes)).astype(np.float32)
    X[np.arange(n_cells), np.arange(n_cells) % n_genes] += 1
    X[np.arange(n_genes) % n_cells, np.arange(n_genes)] += 1
    return X


def cell_ids(n: int) -> list[str]:
    bases = "ACGT"
    rng = np.random.default_rng(1)
    return ["".join(bases[i] for i in rng.integers(0, 4, 16)) + "-1" for _ in range(n)]


def write_mtx(folder: Path, X: np.ndarray, genes: list[str], cells: list[str], *, v3: bool, gz: bool,
              prefix: str = "") -> Path:
    """A 10x folder: v2 (genes.tsv, 2 columns) or v3 (features.tsv, 3 columns), gzipped or not."""
    from scipy.io import mmwrite

    folder.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    mtx = folder / f"{prefix}matrix.mtx"
    mmwrite(str(mtx), sp.coo_matrix(X.T.astype(np.int64)), field="integer")
    if gz:
        mtx.with_name(mtx.name + ".gz").write_bytes(gzip.compress(mtx.read_bytes()))
        mtx.unlink()
    ids = [f"ENSG{i:011d}" for i in range(len(genes))]
    if v3:
        feat = "\n".join(f"{i}\t{g}\tGene Expression" for i, g in zip(ids, genes)) + "\n"
        name = "features.tsv"
    else:
        feat = "\n".join(f"{i}\t{g}" for i, g in zip(ids, genes)) + "\n"
        name = "genes.tsv"
    bcs = "\n".join(cells) + "\n"
    for fname, text in ((name, feat), ("barcodes.tsv", bcs)):
        p = folder / f"{prefix}{fname}{ext}"
        p.write_bytes(gzip.compress(text.encode()) if gz else text.encode())
    return folder


def write_10x_h5(path: Path, X: np.ndarray, genes: list[str], cells: list[str]) -> Path:
    """A Cell Ranger v3 style .h5 (group 'matrix', genes x cells CSC stored as the cells' CSR)."""
    import h5py

    M = sp.csc_matrix(X.T.astype(np.int32))  # genes x cells, column = cell
    with h5py.File(path, "w") as f:
        g = f.create_group("matrix")
        g.create_dataset("data", data=M.data)
        g.create_dataset("indices", data=M.indices)
        g.create_dataset("indptr", data=M.indptr)
        g.create_dataset("shape", data=np.array(M.shape, dtype=np.int32))
        g.create_dataset("barcodes", data=np.array(cells, dtype="S"))
        fe = g.create_group("features")
        fe.create_dataset("id", data=np.array([f"ENSG{i:011d}" for i in range(len(genes))], dtype="S"))
        fe.create_dataset("name", data=np.array(genes, dtype="S"))
        fe.create_dataset("feature_type", data=np.array(["Gene Expression"] * len(genes), dtype="S"))
        fe.create_dataset("genome", data=np.array(["GRCh38"] * len(genes), dtype="S"))
    return path


def write_loom(path: Path, X: np.ndarray, genes: list[str], cells: list[str]) -> Path:
    import anndata as ad

    a = ad.AnnData(X=sp.csr_matrix(X), obs=pd.DataFrame(index=cells), var=pd.DataFrame(index=genes))
    a.write_loom(path)
    return path


def write_dense(path: Path, X: np.ndarray, genes: list[str], cells: list[str], *, genes_x_cells: bool,
                sep: str = ",") -> Path:
    df = pd.DataFrame(X.T, index=genes, columns=cells) if genes_x_cells else pd.DataFrame(X, index=cells,
                                                                                          columns=genes)
    df.to_csv(path, sep=sep, compression="gzip" if path.name.endswith(".gz") else None)
    return path
