"""Turn raw counts into CellLM tokens, and pad tokenised cells into batches.

Per cell (as the published CellLM/scBERT preprocessing): keep the genes that are in the model vocabulary
(data genes mapping to the same vocabulary gene are summed), normalise their total to 1e4, ``log1p``
(natural log), floor, cap at 5 -> bins 0..5. Only expressed genes (count > 0) become tokens, a CLS token
first. ``max_len`` keeps the ``max_len`` most expressed genes (ties broken at random with ``seed``, else by
vocabulary order); tokens are then listed in vocabulary order.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from app.data.errors import DataError
from app.models.celllm.config import N_BINS
from app.models.celllm.model import CLS_ID, GENE_OFFSET, PAD_ID, cls_bin, pad_bin

TARGET_SUM = 1e4

Cell = tuple[np.ndarray, np.ndarray]
"""(gene token ids int64 with CLS first, bins int64) of one cell."""


def vocab_counts(counts_csr: sp.spmatrix | np.ndarray, data_to_vocab: np.ndarray, vocab_size: int | None = None
                 ) -> sp.csr_matrix:
    """Counts re-indexed to the vocabulary: [cells, vocab] CSR float32 (unmatched genes dropped,
    duplicates summed)."""
    x = sp.csr_matrix(counts_csr, dtype=np.float32)
    d2v = np.asarray(data_to_vocab, dtype=np.int64).ravel()
    if d2v.shape[0] != x.shape[1]:
        raise DataError(f"gene mapping has {d2v.shape[0]} entries but the counts have {x.shape[1]} genes", None,
                        "Harmonise exactly the genes (columns) of this matrix with the vocabulary.")
    nv = int(vocab_size) if vocab_size is not None else (int(d2v.max()) + 1 if d2v.size and d2v.max() >= 0 else 0)
    keep = np.flatnonzero(d2v >= 0)
    mapping = sp.csr_matrix((np.ones(keep.size, np.float32), (keep, d2v[keep])), shape=(x.shape[1], max(nv, 1)))
    out = (x @ mapping).tocsr()
    out.sum_duplicates()
    out.eliminate_zeros()
    return out


def bin_values(values: np.ndarray, total: float, n_bins: int = N_BINS) -> np.ndarray:
    """Bins of one cell's counts: floor(log1p(count / total * 1e4)) capped at n_bins - 1."""
    norm = values.astype(np.float64) * (TARGET_SUM / total) if total > 0 else values.astype(np.float64)
    return np.minimum(np.floor(np.log1p(norm)), n_bins - 1).astype(np.int64)


def tokenize_counts(counts_csr: sp.spmatrix | np.ndarray, data_to_vocab: np.ndarray, max_len: int | None = None,
                    seed: int | None = None, n_bins: int = N_BINS) -> list[Cell]:
    """Tokenise every cell (rows of ``counts_csr``, raw counts) for a model vocabulary.

    ``data_to_vocab[j]`` = vocabulary index of data gene j, or -1. Returns one ``(gene_ids, bins)`` per cell:
    ``gene_ids[0] = CLS``, then ``gene_token(v)`` of the expressed vocabulary genes; ``bins[0] = CLS bin``.
    A cell expressing none of the vocabulary genes yields the CLS token alone.
    """
    if max_len is not None and int(max_len) < 1:
        raise DataError(f"max_len must be at least 1 (got {max_len})", None, "Pass a positive max_len or none.")
    x = vocab_counts(counts_csr, data_to_vocab)
    if x.nnz and float(x.data.min()) < 0:
        raise DataError("the counts contain negative values", None,
                        "CellLM needs raw counts (non-negative); pass layers['counts'] or the raw matrix.")
    rng = np.random.default_rng(seed) if seed is not None else None
    totals = np.asarray(x.sum(axis=1)).ravel()
    cells: list[Cell] = []
    indptr, indices, data = x.indptr, x.indices, x.data
    cb = cls_bin(n_bins)
    for r in range(x.shape[0]):
        lo, hi = indptr[r], indptr[r + 1]
        genes = indices[lo:hi].astype(np.int64)
        vals = data[lo:hi]
        if max_len is not None and genes.size > max_len:
            tie = rng.random(genes.size) if rng is not None else genes
            order = np.lexsort((tie, -vals))  # most expressed first, ties by the tie key
            sel = np.sort(order[:max_len])
            genes, vals = genes[sel], vals[sel]
        bins = bin_values(vals, float(totals[r]), n_bins)
        ids = np.empty(genes.size + 1, np.int64)
        ids[0] = CLS_ID
        ids[1:] = genes + GENE_OFFSET
        b = np.empty(genes.size + 1, np.int64)
        b[0] = cb
        b[1:] = bins
        cells.append((ids, b))
    return cells


def collate(cells: list[Cell], n_bins: int = N_BINS) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pad cells to the longest in the batch: (gene_ids [B, L], bins [B, L], pad_mask [B, L] True = real)."""
    if not cells:
        raise ValueError("collate needs at least one cell")
    n = max(len(c[0]) for c in cells)
    b = len(cells)
    ids = np.full((b, n), PAD_ID, np.int64)
    bins = np.full((b, n), pad_bin(n_bins), np.int64)
    mask = np.zeros((b, n), bool)
    for i, (g, x) in enumerate(cells):
        k = len(g)
        ids[i, :k] = g
        bins[i, :k] = x
        mask[i, :k] = True
    return torch.from_numpy(ids), torch.from_numpy(bins), torch.from_numpy(mask)
