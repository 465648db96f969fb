"""Turn raw counts into CellLM tokens, and pad tokenised cells into batches: the one tokeniser and the one
collate of CellLM (embedding, fine-tuning, pretraining, streaming and the benchmarks all use these).

Per cell (as the published CellLM/scBERT preprocessing): keep the genes that are in the model vocabulary
(data genes mapping to the same vocabulary gene are summed), normalise their total to 1e4, ``log1p``
(natural log), floor, cap at 5 -> bins 0..5. Only expressed genes (count > 0) become tokens, a CLS token
first. ``max_len`` keeps the ``max_len`` most expressed genes (ties broken at random with ``seed``, else by
vocabulary order); tokens are then listed in vocabulary order.

Tokenising is vectorised over the CSR matrix (no per-cell Python loop): the result is ``Tokens``, every cell's
ids and bins in two flat arrays with row pointers, as CSR itself. ``Tokens`` indexes like a list of
``(gene_ids, bins)`` pairs (``tokens[i]``, ``len``, iteration), and ``tokens[rows]`` with an index array is a
vectorised subset; ``collate`` pads either form into a batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from app.data.errors import DataError
from app.models.celllm.config import N_BINS
from app.models.celllm.model import CLS_ID, GENE_OFFSET, PAD_ID, cls_bin, pad_bin

TARGET_SUM = 1e4
PARALLEL_MIN_CELLS = 20_000
"""Fewer cells than this are tokenised in one thread (threads cost more than they give)."""

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
    if len(np.unique(d2v[keep])) == keep.size:  # no two data genes share a vocabulary gene: re-index columns
        new_col = d2v.astype(np.int32)[x.indices]  # gathered as int32: no int64 copy of every value
        if keep.size == d2v.size:  # every gene is known: nothing to drop (copies: sorting works in place)
            data, indptr = x.data.copy(), x.indptr.copy()
        else:
            ok = new_col >= 0
            kept_before = np.concatenate([[0], np.cumsum(ok)])
            data, new_col, indptr = x.data[ok], new_col[ok], kept_before[x.indptr]
        out = sp.csr_matrix((data, new_col, indptr), shape=(x.shape[0], max(nv, 1)))
        # genes listed in vocabulary order keep each row sorted (no sort needed); else sort
        out.has_sorted_indices = x.has_sorted_indices and bool(np.all(np.diff(d2v[keep]) > 0))
        out.sort_indices()
        out.eliminate_zeros()
        return out
    mapping = sp.csr_matrix((np.ones(keep.size, np.float32), (keep, d2v[keep])), shape=(x.shape[1], max(nv, 1)))
    out = (x @ mapping).tocsr()
    out.sum_duplicates()
    out.eliminate_zeros()
    return out


def _keep_top(vals: np.ndarray, indptr: np.ndarray, lens: np.ndarray, max_len: int, seed: int | None,
              block: int = 4_000_000) -> np.ndarray:
    """Mask of the stored values to keep: every value of a cell with at most ``max_len``, else its ``max_len``
    largest (ties at the cut: at random from ``seed``, else the lower vocabulary index first).

    Cells over ``max_len`` are laid out as rows of a padded dense block (``block`` values at a time) and cut
    with one ``np.partition`` per block: linear in the values, where sorting them all was ~4x slower than the
    old per-cell loop."""
    keep = np.ones(len(vals), bool)
    long_rows = np.flatnonzero(lens > max_len)
    rng = np.random.default_rng(seed) if seed is not None else None
    start = 0
    while start < len(long_rows):
        width = int(lens[long_rows[start]])
        stop = start + 1
        while stop < len(long_rows) and max(width, int(lens[long_rows[stop]])) * (stop + 1 - start) <= block:
            width = max(width, int(lens[long_rows[stop]]))
            stop += 1
        rows = long_rows[start:stop]
        start = stop
        col = np.arange(width)
        valid = col[None, :] < lens[rows][:, None]
        pos = np.minimum(indptr[rows][:, None] + col[None, :], len(vals) - 1)
        dense = np.where(valid, vals[pos], -np.inf)
        thr = -np.partition(-dense, max_len - 1, axis=1)[:, max_len - 1]  # the max_len-th largest value
        above = dense > thr[:, None]
        tie = valid & (dense == thr[:, None])
        need = max_len - above.sum(1)  # how many of the tied values at the cut to keep
        if rng is None:
            rank = np.cumsum(tie, axis=1)  # ties in vocabulary order (values are gene-sorted)
        else:
            key = np.where(tie, rng.random(dense.shape), np.inf)
            rank = np.argsort(np.argsort(key, axis=1), axis=1) + 1  # ties in a random order
        sel = above | (tie & (rank <= need[:, None]))
        keep[pos[valid]] = sel[valid]
    return keep


def bin_values(values: np.ndarray, total: float, n_bins: int = N_BINS) -> np.ndarray:
    """Bins of one cell's counts: floor(log1p(count / total * 1e4)) capped at n_bins - 1."""
    norm = values.astype(np.float64) * (TARGET_SUM / total) if total > 0 else values.astype(np.float64)
    return np.minimum(np.floor(np.log1p(norm)), n_bins - 1).astype(np.int64)


@dataclass(frozen=True, eq=False)
class Tokens:
    """Tokenised cells, ragged: cell ``r`` is ``ids[ptr[r]:ptr[r + 1]]`` (CLS first) and the same slice of
    ``bins`` (integer arrays; ``collate`` gives int64 tensors)."""

    ids: np.ndarray
    bins: np.ndarray
    ptr: np.ndarray

    @classmethod
    def from_cells(cls, cells: Sequence[Cell]) -> Tokens:
        """Pack a list of ``(gene_ids, bins)`` pairs."""
        if isinstance(cells, Tokens):
            return cells
        lens = np.array([len(c[0]) for c in cells], dtype=np.int64)
        ptr = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        if not len(cells):
            return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), ptr)
        return cls(np.concatenate([np.asarray(c[0], np.int64) for c in cells]),
                   np.concatenate([np.asarray(c[1], np.int64) for c in cells]), ptr)

    @classmethod
    def concat(cls, parts: Sequence[Tokens]) -> Tokens:
        """The cells of ``parts`` one after another."""
        if not parts:
            return cls.from_cells([])
        offsets = np.cumsum([0] + [len(p.ids) for p in parts[:-1]])
        ptr = np.concatenate([[0]] + [p.ptr[1:] + o for p, o in zip(parts, offsets)]).astype(np.int64)
        return cls(np.concatenate([p.ids for p in parts]), np.concatenate([p.bins for p in parts]), ptr)

    def __len__(self) -> int:
        return len(self.ptr) - 1

    @property
    def lengths(self) -> np.ndarray:
        """Tokens per cell (CLS included), int64 [n]."""
        return np.diff(self.ptr)

    def __getitem__(self, key: int | slice | np.ndarray | Sequence[int]) -> Cell | Tokens:
        if isinstance(key, int | np.integer):
            r = int(key) + (len(self) if key < 0 else 0)
            if not 0 <= r < len(self):
                raise IndexError(key)
            a, b = self.ptr[r], self.ptr[r + 1]
            return self.ids[a:b], self.bins[a:b]
        rows = np.arange(len(self))[key] if isinstance(key, slice) else np.asarray(key, dtype=np.int64)
        return self.take(rows)

    def __iter__(self) -> Iterator[Cell]:
        for r in range(len(self)):
            yield self[r]  # type: ignore[misc]

    def take(self, rows: np.ndarray) -> Tokens:
        """The cells ``rows`` (in that order) as new ``Tokens``, gathered without a per-cell loop."""
        rows = np.asarray(rows, dtype=np.int64)
        lens = self.lengths[rows]
        ptr = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        src = np.repeat(self.ptr[rows] - ptr[:-1], lens) + np.arange(int(ptr[-1]))
        return Tokens(self.ids[src], self.bins[src], ptr)


def tokenize_counts(counts_csr: sp.spmatrix | np.ndarray, data_to_vocab: np.ndarray, max_len: int | None = None,
                    seed: int | None = None, n_bins: int = N_BINS, workers: int = 1) -> Tokens:
    """Tokenise every cell (rows of ``counts_csr``, raw counts) for a model vocabulary.

    ``data_to_vocab[j]`` = vocabulary index of data gene j, or -1. Cell ``r`` of the result is
    ``(gene_ids, bins)``: ``gene_ids[0] = CLS``, then ``gene_token(v)`` of the expressed vocabulary genes;
    ``bins[0] = CLS bin``. A cell expressing none of the vocabulary genes yields the CLS token alone.
    ``workers`` > 1 (without ``seed``: random ties would depend on the split) tokenises blocks of cells in
    that many threads (numpy releases the GIL in its loops); the tokens are the same.
    """
    if max_len is not None and int(max_len) < 1:
        raise DataError(f"max_len must be at least 1 (got {max_len})", None, "Pass a positive max_len or none.")
    x = vocab_counts(counts_csr, data_to_vocab)
    if workers <= 1 or seed is not None or x.shape[0] < PARALLEL_MIN_CELLS:
        return tokenize_vocab(x, max_len, seed, n_bins)
    from concurrent.futures import ThreadPoolExecutor
    from itertools import pairwise

    edges = np.linspace(0, x.shape[0], 4 * int(workers) + 1).astype(int)  # a few blocks per worker
    with ThreadPoolExecutor(int(workers), thread_name_prefix="celllm-tokenize") as pool:
        parts = list(pool.map(lambda ab: tokenize_vocab(x[ab[0]:ab[1]], max_len, None, n_bins),
                              pairwise(edges)))
    return Tokens.concat(parts)


def tokenize_vocab(x: sp.spmatrix, max_len: int | None = None, seed: int | None = None,
                   n_bins: int = N_BINS) -> Tokens:
    """``tokenize_counts`` for counts already in vocabulary columns (what ``vocab_counts`` and ``CellStream``
    with gene maps give), vectorised over the batch: one pass of numpy over the CSR arrays."""
    x = sp.csr_matrix(x, dtype=np.float32)
    x.sum_duplicates()  # also sorts indices
    x.eliminate_zeros()
    if x.nnz and float(x.data.min()) < 0:
        raise DataError("the counts contain negative values", None,
                        "CellLM needs raw counts (non-negative); pass layers['counts'] or the raw matrix.")
    n = x.shape[0]
    lens = np.diff(x.indptr).astype(np.int64)
    vals = x.data
    genes = x.indices
    totals = np.zeros(n)
    nonempty = lens > 0
    if x.nnz:
        totals[nonempty] = np.add.reduceat(vals, x.indptr[:-1][nonempty], dtype=np.float64)
    if max_len is not None and x.nnz and int(lens.max()) > int(max_len):
        keep = _keep_top(vals, x.indptr, lens, int(max_len), seed)
        vals, genes = vals[keep], genes[keep]  # still gene-sorted within each row
        lens = np.minimum(lens, int(max_len))
    scale = np.where(totals > 0, TARGET_SUM / np.where(totals > 0, totals, 1.0), 1.0)
    # float64 for the product: a count that lands exactly on a bin edge must floor as the per-cell formula does
    norm = vals * np.repeat(scale, lens)
    bins = np.minimum(np.floor(np.log1p(norm, out=norm), out=norm), n_bins - 1).astype(np.int8)
    # a CLS token before each cell's genes; the genes fill the other slots in order (one boolean mask, no
    # per-token position arrays)
    ptr = np.concatenate([[0], np.cumsum(lens + 1)]).astype(np.int64)
    total = int(ptr[-1])
    # compact dtypes (int32 ids, int8 bins): a 100k-cell file's tokens are a quarter of the memory traffic;
    # collate widens them to int64 per batch
    ids = np.empty(total, np.int32)
    out_bins = np.empty(total, np.int8)
    is_gene = np.ones(total, bool)
    is_gene[ptr[:-1]] = False
    ids[ptr[:-1]] = CLS_ID
    out_bins[ptr[:-1]] = cls_bin(n_bins)
    ids[is_gene] = genes + GENE_OFFSET
    out_bins[is_gene] = bins
    return Tokens(ids, out_bins, ptr)


def collate(cells: Tokens | Sequence[Cell], n_bins: int = N_BINS) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pad cells to the longest in the batch: (gene_ids [B, L], bins [B, L], pad_mask [B, L] True = real)."""
    tok = Tokens.from_cells(cells)
    b = len(tok)
    if not b:
        raise ValueError("collate needs at least one cell")
    lens = tok.lengths
    n = int(lens.max())
    pos = np.arange(n)
    mask = pos[None, :] < lens[:, None]
    src = np.minimum(tok.ptr[:-1, None] + pos[None, :], max(len(tok.ids) - 1, 0))
    ids = np.where(mask, tok.ids[src].astype(np.int64), PAD_ID)
    bins = np.where(mask, tok.bins[src].astype(np.int64), pad_bin(n_bins))
    return torch.from_numpy(ids), torch.from_numpy(bins), torch.from_numpy(mask)


def length_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator | None = None,
                   pool: int = 50) -> list[np.ndarray]:
    """Indices of batches of cells of similar length (less padding, the same results).

    Without ``rng``: sorted by length (inference; put rows back in order afterwards). With ``rng`` (training):
    a random permutation cut into pools of ``pool`` batches, each pool sorted by length and cut into
    batches, the batches shuffled: every epoch still sees every cell once in a random order of batches.
    """
    lengths = np.asarray(lengths)
    n = len(lengths)
    bs = max(1, int(batch_size))
    if rng is None:
        order = np.argsort(lengths, kind="stable")
        return [order[s:s + bs] for s in range(0, n, bs)]
    perm = rng.permutation(n)
    batches: list[np.ndarray] = []
    step = bs * max(1, int(pool))
    for s in range(0, n, step):
        chunk = perm[s:s + step]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i:i + bs] for i in range(0, len(chunk), bs))
    return [batches[i] for i in rng.permutation(len(batches))]


def pad_values(values: np.ndarray, ptr: np.ndarray, rows: np.ndarray, fill: int = 0
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """One per-token array of ragged cells (``values[ptr[r]:ptr[r + 1]]`` is cell ``r``) padded for the cells
    ``rows``: (values [B, L] int64 with ``fill`` at padded positions, pad_mask [B, L] True = real)."""
    rows = np.asarray(rows, dtype=np.int64)
    if not len(rows):
        raise ValueError("pad_values needs at least one cell")
    start, lens = ptr[rows], ptr[rows + 1] - ptr[rows]
    pos = np.arange(int(lens.max()))
    mask = pos[None, :] < lens[:, None]
    src = np.minimum(start[:, None] + pos[None, :], max(len(values) - 1, 0))
    out = np.where(mask, values[src], fill).astype(np.int64, copy=False)
    return torch.from_numpy(out), torch.from_numpy(mask)


def token_batches(lengths: np.ndarray, max_cells: int, max_tokens: int) -> list[np.ndarray]:
    """Inference batches of cells sorted by length, each at most ``max_cells`` cells and (unless one cell is
    longer) at most ``max_tokens`` padded tokens: short cells go many to a batch, long ones few (a CPU keeps
    a batch's activations in its caches)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(lengths, kind="stable")
    out: list[np.ndarray] = []
    s, n = 0, len(order)
    while s < n:
        # the batch's width is its last (longest) cell: take the most cells that keep count x width in budget
        stop = min(n, s + max(1, int(max_cells)))
        widths = lengths[order[s:stop]]
        fits = np.flatnonzero(widths * np.arange(1, len(widths) + 1) <= max_tokens)
        take = int(fits[-1]) + 1 if len(fits) else 1
        out.append(order[s:s + take])
        s += take
    return out
