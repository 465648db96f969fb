"""Recover integer UMI counts from scanpy's bundled ``pbmc68k_reduced`` (for pretraining the shipped model).

``pbmc68k_reduced.X`` is scaled (z-scores) and ``.raw.X`` is log1p(counts / n_counts * 1e4) for 765 genes,
where ``obs['n_counts']`` is each cell's total over all genes. So counts = expm1(raw.X) * n_counts / 1e4,
which comes out within 0.09 of an integer for every entry (float32 rounding): rounding gives the raw counts
back exactly. Usage: ``python app/resources/models/make_pbmc68k_counts.py OUT.h5ad``.
"""

from __future__ import annotations

import sys

import anndata as ad
import numpy as np
import scanpy as sc
import scipy.sparse as sp


def main(out: str) -> None:
    a = sc.datasets.pbmc68k_reduced()
    raw = a.raw.X.toarray() if sp.issparse(a.raw.X) else np.asarray(a.raw.X)
    counts = np.expm1(raw.astype(np.float64)) * a.obs["n_counts"].to_numpy()[:, None] / 1e4
    rounded = np.rint(counts)
    assert np.abs(counts - rounded).max() < 0.2, "not recoverable as integer counts"
    b = ad.AnnData(sp.csr_matrix(rounded.astype(np.float32)), obs=a.obs[["bulk_labels"]].copy(),
                   var=a.raw.var[[]].copy())
    b.write_h5ad(out)
    print(f"wrote {b.n_obs} cells x {b.n_vars} genes of integer counts to {out}")


if __name__ == "__main__":
    main(sys.argv[1])
