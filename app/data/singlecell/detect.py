"""What a single-cell matrix holds, computed in row blocks so a backed (on-disk) matrix is never loaded whole."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

BLOCK_ROWS = 4096
MAX_SCAN_CELLS = 100_000  # beyond this, statistics come from evenly spread blocks of cells
DENSE_BLOCK_VALUES = 1 << 23  # ~32 MB of float32 per dense block, however many genes
LOG_MAX = 50.0  # log1p of any realistic normalised value stays far below this


@dataclass
class MatrixStats:
    """Figures from one pass over (a sample of) the cells of a cells x genes matrix."""

    n_cells: int
    n_genes: int
    n_scanned: int
    sampled: bool
    min: float
    max: float
    n_nan: int
    n_negative: int
    all_integer: bool
    nnz: int
    cell_sums: np.ndarray  # per scanned cell
    cell_nnz: np.ndarray  # per scanned cell
    gene_sums: np.ndarray  # per gene, over scanned cells
    gene_nnz: np.ndarray
    first_nan: tuple[int, int] | None = None  # (row, column) of a NaN or infinite value, for messages
    n_inf: int = 0  # +-Inf values (counted in n_nan too: neither is a usable number)

    @property
    def value_kind(self) -> str:
        """ "counts", "normalised", "log" or "scaled" (see ``value_kind``)."""
        return value_kind(self)


def value_kind(st: MatrixStats) -> str:
    """Classify values: negatives -> "scaled" (z-scores); all integers -> "counts"; equal totals per cell ->
    "normalised"; non-integers below ``LOG_MAX`` -> "log"; larger non-integers -> "normalised"."""
    if st.n_negative > 0:
        return "scaled"
    if st.all_integer:
        return "counts"
    sums = st.cell_sums[st.cell_sums > 0]
    if sums.size >= 3 and float(np.std(sums)) <= 1e-3 * float(np.mean(sums)):
        return "normalised"
    return "log" if st.max <= LOG_MAX else "normalised"


def _row_blocks(n: int, max_cells: int | None, block: int) -> list[tuple[int, int]]:
    if max_cells is None or n <= max_cells:
        return [(s, min(n, s + block)) for s in range(0, n, block)]
    n_blocks = max(1, max_cells // block)
    starts = np.linspace(0, n - block, n_blocks).astype(int)
    return [(int(s), int(min(n, s + block))) for s in np.unique(starts)]


def matrix_stats(X: Any, *, max_cells: int | None = MAX_SCAN_CELLS, block: int = BLOCK_ROWS) -> MatrixStats:
    """One pass over the rows of ``X`` (numpy, scipy sparse, h5py dataset or anndata backed dataset).

    Reads ``block`` rows at a time. With more than ``max_cells`` rows only evenly spread blocks are read and
    ``sampled`` is True (per-cell figures then cover the scanned cells only).
    """
    n, m = (int(X.shape[0]), int(X.shape[1]))
    if isinstance(X, np.ndarray) or type(X).__module__.startswith("h5py"):  # dense: bound the block's memory
        block = max(1, min(block, DENSE_BLOCK_VALUES // max(m, 1)))
    gene_sums = np.zeros(m, dtype=np.float64)
    gene_nnz = np.zeros(m, dtype=np.int64)
    cell_sums: list[np.ndarray] = []
    cell_nnz: list[np.ndarray] = []
    vmin, vmax = np.inf, -np.inf
    n_nan = n_neg = nnz = n_inf = 0
    all_int = True
    first_nan: tuple[int, int] | None = None
    scanned = 0
    for s, e in _row_blocks(n, max_cells, block):
        blk = X[s:e]
        if sp.issparse(blk):
            blk = sp.csr_matrix(blk)
            vals = blk.data
            nan_mask = ~np.isfinite(vals) if vals.dtype.kind == "f" else np.zeros(vals.shape, dtype=bool)
            n_inf += int(np.isinf(vals).sum()) if vals.dtype.kind == "f" else 0
            if nan_mask.any() and first_nan is None:
                r = int(np.searchsorted(blk.indptr, np.flatnonzero(nan_mask)[0], side="right") - 1)
                first_nan = (s + r, int(blk.indices[np.flatnonzero(nan_mask)[0]]))
            clean = blk.copy()
            clean.data = np.where(nan_mask, 0, vals)
            clean.eliminate_zeros()  # explicit zeros must not count as detected genes
            cell_sums.append(np.asarray(clean.sum(axis=1)).ravel())
            cell_nnz.append(np.diff(clean.indptr).astype(np.int64))
            gene_sums += np.asarray(clean.sum(axis=0)).ravel()
            gene_nnz += np.bincount(clean.indices, minlength=m)
            nnz += int(clean.nnz)
            finite = vals[~nan_mask]
            has_implicit_zero = blk.nnz < (e - s) * m
        else:
            blk = np.asarray(blk)
            nan_mask = ~np.isfinite(blk) if blk.dtype.kind == "f" else np.zeros(blk.shape, dtype=bool)
            n_inf += int(np.isinf(blk).sum()) if blk.dtype.kind == "f" else 0
            if nan_mask.any():
                if first_nan is None:
                    r, c = np.argwhere(nan_mask)[0]
                    first_nan = (s + int(r), int(c))
                blk = np.where(nan_mask, 0, blk)
            nzm = blk != 0
            cell_sums.append(blk.sum(axis=1, dtype=np.float64))
            cell_nnz.append(nzm.sum(axis=1))
            gene_sums += blk.sum(axis=0, dtype=np.float64)
            gene_nnz += nzm.sum(axis=0)
            nnz += int(nzm.sum())
            finite = blk[~nan_mask] if nan_mask.any() else blk.ravel()
            has_implicit_zero = False
        n_nan += int(nan_mask.sum())
        if finite.size:
            vmin = min(vmin, float(finite.min()))
            vmax = max(vmax, float(finite.max()))
            n_neg += int((finite < 0).sum())
            if all_int and finite.dtype.kind == "f":
                all_int = bool(np.all(np.mod(finite, 1) == 0))
        if has_implicit_zero:
            vmin = min(vmin, 0.0)
            vmax = max(vmax, 0.0)
        scanned += e - s
    return MatrixStats(
        n_cells=n, n_genes=m, n_scanned=scanned, sampled=scanned < n,
        min=float(vmin) if np.isfinite(vmin) else 0.0, max=float(vmax) if np.isfinite(vmax) else 0.0,
        n_nan=n_nan, n_negative=n_neg, all_integer=all_int, nnz=nnz,
        cell_sums=np.concatenate(cell_sums) if cell_sums else np.zeros(0),
        cell_nnz=np.concatenate(cell_nnz) if cell_nnz else np.zeros(0, dtype=np.int64),
        gene_sums=gene_sums, gene_nnz=gene_nnz, first_nan=first_nan, n_inf=n_inf,
    )


def looks_like_counts(X: Any, max_cells: int = 2000) -> bool:
    """True when a sample of rows holds only finite, non-negative whole numbers."""
    st = matrix_stats(X, max_cells=max_cells, block=min(BLOCK_ROWS, max_cells))
    return st.n_nan == 0 and st.n_negative == 0 and st.all_integer
