"""Stream cells from one or many ``.h5ad`` files without loading ``X`` whole (data larger than memory).

``CellStream`` reads the count matrix of each file straight from HDF5 (the anndata on-disk layout: a CSR
group with ``data``/``indices``/``indptr``, or a dense dataset) in contiguous blocks of rows, so memory is
bounded by ``block_cells`` plus the shuffle buffer whatever the file size.

One epoch, for rank ``r`` of ``world_size``:

1. every file is cut into blocks of ``block_cells`` consecutive rows; the list of all blocks of all files is
   shuffled with a seed shared by every rank (``seed``, ``epoch``);
2. the shuffled blocks, laid end to end, form one sequence of all cells; rank ``r`` takes the ``r``-th of
   ``world_size`` equal contiguous parts of it (sizes differ by at most one cell), so every cell is read by
   exactly one rank, exactly once per epoch (a ``DistributedSampler`` without padding);
3. the rank's cells pass through a shuffle buffer of ``shuffle_buffer`` cells (seeded by seed, epoch, rank):
   each incoming cell goes in, a uniformly chosen one comes out once the buffer is full.

Reading stays sequential inside a block (fast on disks and network file systems) while the order of cells
is random across the whole corpus at the scale of blocks and within the buffer's reach.

``iter_batches(batch_size)`` groups cells into CSR batches (optionally re-indexed to a shared gene
vocabulary by ``gene_maps``) and, with ``drop_last``, yields the same number of batches on every rank,
which collective training steps need.

Also here: ``write_h5ad_blocks`` writes a CSR ``.h5ad`` from row blocks (never holding the matrix whole),
and ``synthetic_count_blocks`` makes such blocks (benchmarks and tests).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import scipy.sparse as sp

from app.data.errors import DataError

DEFAULT_BLOCK_CELLS = 1024
DEFAULT_SHUFFLE_BUFFER = 8192
_DENSE_BLOCK_BYTES = 32 * 2**20
"""Dense matrices are read in blocks of at most this many bytes (rows x genes x itemsize)."""


class StreamCell(NamedTuple):
    """One cell: source file index, row in that file, column indices (int32) and values (float32)."""

    source: int
    row: int
    indices: np.ndarray
    values: np.ndarray


@dataclass
class CellBatch:
    """A batch of streamed cells: ``counts`` CSR float32 [B, n_cols] (columns = the shared vocabulary when
    the stream has ``gene_maps``, else the files' common genes), with each cell's ``sources`` and ``rows``."""

    counts: sp.csr_matrix
    sources: np.ndarray
    rows: np.ndarray

    def __len__(self) -> int:
        return int(self.counts.shape[0])


@dataclass
class ReadStats:
    """What the stream read from disk (to check memory stays bounded): number of block reads, the most rows
    and stored values in one read, the total values read."""

    reads: int = 0
    max_rows_per_read: int = 0
    max_values_per_read: int = 0
    values_read: int = 0

    def add(self, rows: int, values: int) -> None:
        """Record one block read."""
        self.reads += 1
        self.max_rows_per_read = max(self.max_rows_per_read, rows)
        self.max_values_per_read = max(self.max_values_per_read, values)
        self.values_read += values


@dataclass
class _Source:
    path: Path
    key: str  # HDF5 path of the matrix: "X", "layers/counts" or "raw/X"
    n_cells: int
    n_genes: int
    genes: list[str]
    sparse: bool
    labels: np.ndarray | None = None
    handle: Any = field(default=None, repr=False)


def _h5py() -> Any:
    import h5py

    return h5py


def _encoding(node: Any) -> str:
    v = node.attrs.get("encoding-type", "")
    return v.decode() if isinstance(v, bytes) else str(v)


def _pick_matrix(f: Any, path: Path, layer: str | None) -> str:
    """HDF5 key of the raw counts: ``layer`` when given, else layers/counts, X, raw/X (first non-empty)."""
    if layer is not None:
        key = layer if layer in ("X", "raw/X") else f"layers/{layer}"
        if key not in f:
            have = ["X"] + [f"layers/{k}" for k in f.get("layers", {})] + (["raw/X"] if "raw/X" in f else [])
            raise DataError(f"no matrix '{layer}' in this file (found: {', '.join(have)})", path,
                            "Pass one of the listed layers, or none to use layers/counts or X.")
        return key
    for key in ("layers/counts", "X", "raw/X"):
        if key in f and _shape(f[key])[0] > 0 and _shape(f[key])[1] > 0:
            return key
    raise DataError("no count matrix in this .h5ad (X, layers/counts and raw/X are absent or empty)", path,
                    "Write the raw counts into X or layers['counts'] (cells x genes).")


def _shape(node: Any) -> tuple[int, int]:
    if hasattr(node, "shape") and not hasattr(node, "keys"):  # dense dataset
        s = node.shape
        return (int(s[0]), int(s[1])) if len(s) == 2 else (0, 0)
    s = node.attrs.get("shape")
    if s is None or len(s) != 2:
        return (0, 0)
    return int(s[0]), int(s[1])


def _open_source(path: Path, layer: str | None, label_key: str | None) -> _Source:
    """Open one .h5ad read-only and read what is small (gene names, optional labels), never X."""
    import anndata as ad

    h5py = _h5py()
    if not path.is_file():
        raise DataError("file not found", path, "Check the path of the .h5ad file.")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"not a readable HDF5/.h5ad file ({exc})", path,
                        "Streaming reads .h5ad files; convert other formats with `python -m app inspect`.") from exc
    try:
        key = _pick_matrix(f, path, layer)
        node = f[key]
        enc = _encoding(node)
        if isinstance(node, h5py.Group) and enc != "csr_matrix":
            raise DataError(f"the matrix {key} is stored as {enc or 'an unknown group'}, not CSR rows", path,
                            "Re-save it cell-major: adata.X = scipy.sparse.csr_matrix(adata.X); "
                            "adata.write_h5ad(path). Column-major (CSC) files cannot be read row by row.")
        n_cells, n_genes = _shape(node)
        var_key = "raw/var" if key == "raw/X" else "var"
        genes = [str(g).strip() for g in ad.io.read_elem(f[var_key]).index] if var_key in f else []
        if len(genes) != n_genes:
            raise DataError(f"{len(genes)} gene names for {n_genes} matrix columns in {key}", path,
                            "The file is inconsistent; re-write it with anndata.")
        labels = None
        if label_key is not None:
            if "obs" not in f or label_key not in f["obs"]:
                cols = list(f["obs"].keys()) if "obs" in f else []
                cols = [c for c in cols if not c.startswith("_")]
                raise DataError(f"no column '{label_key}' in the cell annotations (columns: "
                                f"{', '.join(cols) or 'none'})", path, "Pick an existing .obs column.")
            col = ad.io.read_elem(f["obs"][label_key])
            labels = np.asarray(
                [None if (v is None or (isinstance(v, float) and np.isnan(v))) else str(v) for v in list(col)],
                dtype=object)
        return _Source(path, key, n_cells, n_genes, genes, isinstance(node, h5py.Group), labels, f)
    except BaseException:
        f.close()
        raise


class CellStream:
    """Cells of one or many ``.h5ad`` files, streamed in blocks with a shuffle buffer and rank sharding.

    Args:
        paths: one path or a list of ``.h5ad`` files (cells x genes).
        layer: matrix to read (``"X"``, ``"raw/X"`` or a ``layers`` key); default: layers/counts, else X,
            else raw/X.
        block_cells: rows read per contiguous disk read (dense files: fewer, so a block is <= 32 MB).
        shuffle_buffer: cells held for shuffling (0 = no buffer). Memory ~ buffer x stored values per cell.
        shuffle: False reads files in order (inference): no block shuffle, no buffer.
        seed: shared by all ranks (block order) and mixed with the rank (buffer).
        rank, world_size: this process's share of every epoch (``torch.distributed`` rank/world size).
        gene_maps: per file, ``data_to_vocab`` (int array, -1 = drop the gene): batches then come in vocabulary
            columns (``n_cols`` = ``vocab_size``). Without it every file must list the same genes.
        vocab_size: number of vocabulary columns (default: max of the maps + 1).
        label_key: an ``.obs`` column to read (small: one value per cell) -> ``labels_of(sources, rows)``.
        require_counts: check the first block holds non-negative whole numbers (raw counts).
    """

    def __init__(self, paths: str | Path | Sequence[str | Path], *, layer: str | None = None,
                 block_cells: int = DEFAULT_BLOCK_CELLS, shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
                 shuffle: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1,
                 gene_maps: Sequence[np.ndarray] | None = None, vocab_size: int | None = None,
                 label_key: str | None = None, require_counts: bool = True) -> None:
        items = [paths] if isinstance(paths, (str, Path)) else list(paths)
        if not items:
            raise DataError("no input files given", None, "Pass one or more .h5ad files to stream.")
        if not 0 <= int(rank) < int(world_size):
            raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
        self.rank, self.world_size = int(rank), int(world_size)
        self.block_cells = max(1, int(block_cells))
        self.shuffle_buffer = max(0, int(shuffle_buffer))
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.epoch = 0
        self.stats = ReadStats()
        self._sources: list[_Source] = []
        try:
            for p in items:
                self._sources.append(_open_source(Path(p), layer, label_key))
        except BaseException:
            self.close()
            raise
        self.gene_maps: list[np.ndarray] | None = None
        if gene_maps is not None:
            if len(gene_maps) != len(self._sources):
                raise ValueError(f"{len(gene_maps)} gene maps for {len(self._sources)} files")
            maps = [np.asarray(m, dtype=np.int64).ravel() for m in gene_maps]
            for s, m in zip(self._sources, maps):
                if m.shape[0] != s.n_genes:
                    raise DataError(f"gene map has {m.shape[0]} entries but the file has {s.n_genes} genes", s.path,
                                    "Harmonise exactly this file's genes (var_names) with the vocabulary.")
            self.gene_maps = maps
            self.n_cols = int(vocab_size) if vocab_size is not None else max(int(m.max(initial=-1)) for m in maps) + 1
        else:
            first = self._sources[0]
            for s in self._sources[1:]:
                if s.genes != first.genes:
                    raise DataError(f"its genes differ from those of {first.path.name}", s.path,
                                    "Give gene_maps (each file's genes -> a shared vocabulary) to stream "
                                    "files with different genes together.")
            self.n_cols = first.n_genes
        self._checked = not require_counts

    # -- description ---------------------------------------------------------------------------------
    @property
    def paths(self) -> list[Path]:
        """The streamed files, in source-index order."""
        return [s.path for s in self._sources]

    @property
    def genes(self) -> list[list[str]]:
        """Each file's gene names (var_names), in source-index order."""
        return [s.genes for s in self._sources]

    @property
    def n_cells_per_source(self) -> list[int]:
        """Cells in each file."""
        return [s.n_cells for s in self._sources]

    @property
    def n_cells_total(self) -> int:
        """Cells in all files (all ranks together)."""
        return sum(s.n_cells for s in self._sources)

    def __len__(self) -> int:
        """Cells this rank yields per epoch."""
        t, w, r = self.n_cells_total, self.world_size, self.rank
        return (r + 1) * t // w - r * t // w

    def n_batches(self, batch_size: int) -> int:
        """Full batches per epoch that EVERY rank can yield (the smallest rank share // batch_size)."""
        return (self.n_cells_total // self.world_size) // max(1, int(batch_size))

    @property
    def label_values(self) -> list[np.ndarray]:
        """Each file's ``label_key`` values (str or None per cell), in source-index order."""
        if any(s.labels is None for s in self._sources):
            raise ValueError("the stream was opened without label_key")
        return [s.labels for s in self._sources]  # type: ignore[misc]

    def labels_of(self, sources: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Label (str or None) of each (source, row) cell, from ``label_key``."""
        out = np.empty(len(rows), dtype=object)
        for k, s in enumerate(self._sources):
            if s.labels is None:
                raise ValueError("the stream was opened without label_key")
            sel = np.asarray(sources) == k
            out[sel] = s.labels[np.asarray(rows)[sel]]
        return out

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order the next iteration follows (call on every rank, like
        ``DistributedSampler.set_epoch``)."""
        self.epoch = int(epoch)

    # -- the plan of an epoch --------------------------------------------------------------------------
    def _block_rows(self, s: _Source) -> int:
        if s.sparse:
            return self.block_cells
        item = 4
        return max(1, min(self.block_cells, _DENSE_BLOCK_BYTES // max(1, s.n_genes * item)))

    def segments(self, epoch: int | None = None) -> list[tuple[int, int, int]]:
        """This rank's ``(source, start, stop)`` row ranges for an epoch, in reading order."""
        ep = self.epoch if epoch is None else int(epoch)
        blocks = [(k, a, min(a + self._block_rows(s), s.n_cells))
                  for k, s in enumerate(self._sources) for a in range(0, s.n_cells, self._block_rows(s))]
        if self.shuffle and blocks:
            order = np.random.default_rng([self.seed, ep, 0x5EED]).permutation(len(blocks))
            blocks = [blocks[i] for i in order]
        t, w, r = self.n_cells_total, self.world_size, self.rank
        lo, hi = r * t // w, (r + 1) * t // w
        out, pos = [], 0
        for k, a, b in blocks:
            n = b - a
            s0, s1 = max(lo, pos), min(hi, pos + n)
            if s0 < s1:
                out.append((k, a + (s0 - pos), a + (s1 - pos)))
            pos += n
            if pos >= hi:
                break
        return out

    # -- reading ---------------------------------------------------------------------------------------
    def read_rows(self, source: int, start: int, stop: int) -> sp.csr_matrix:
        """Rows ``start:stop`` of one file as CSR float32 (file columns), read contiguously from disk."""
        s = self._sources[source]
        node = s.handle[s.key]
        if s.sparse:
            indptr = np.asarray(node["indptr"][start:stop + 1], dtype=np.int64)
            lo, hi = int(indptr[0]), int(indptr[-1])
            indices = np.asarray(node["indices"][lo:hi], dtype=np.int32)
            data = np.asarray(node["data"][lo:hi], dtype=np.float32)
            m = sp.csr_matrix((data, indices, indptr - lo), shape=(stop - start, s.n_genes))
        else:
            m = sp.csr_matrix(np.asarray(node[start:stop], dtype=np.float32))
        self.stats.add(stop - start, int(m.nnz) if s.sparse else (stop - start) * s.n_genes)
        if not self._checked:
            self._check_counts(m, s)
        return m

    def _check_counts(self, m: sp.csr_matrix, s: _Source) -> None:
        d = m.data
        if d.size and (float(d.min()) < 0 or not np.all(np.isclose(d, np.round(d)))):
            raise DataError(f"the matrix {s.key} does not hold raw counts (negative or fractional values)", s.path,
                            "CellLM pretraining needs raw counts: give the un-normalised file, or save the raw counts "
                            "in the file's layers['counts'] (read first when present).")
        self._checked = True

    def _map(self, source: int, m: sp.csr_matrix) -> sp.csr_matrix:
        """Re-index a block's columns to the vocabulary (unmatched genes dropped)."""
        if self.gene_maps is None:
            return m
        d2v = self.gene_maps[source]
        cols = d2v[m.indices]
        keep = cols >= 0
        kept = np.concatenate([[0], np.cumsum(keep, dtype=np.int64)])
        indptr = kept[m.indptr]  # kept values before each row's start
        out = sp.csr_matrix((m.data[keep], cols[keep].astype(np.int32), indptr), shape=(m.shape[0], self.n_cols))
        out.sum_duplicates()  # two data genes mapped to one vocabulary gene
        return out

    def __iter__(self) -> Iterator[StreamCell]:
        """This rank's cells for the current epoch (see ``set_epoch``)."""
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, 0xB0F])
        buf: list[StreamCell] = []
        cap = self.shuffle_buffer if self.shuffle else 0
        for k, a, b in self.segments():
            m = self._map(k, self.read_rows(k, a, b))
            ip, ix, dv = m.indptr, m.indices, m.data
            for i in range(m.shape[0]):
                # copies: a cell kept in the buffer must not pin its whole block in memory
                cell = StreamCell(k, a + i, ix[ip[i]:ip[i + 1]].copy(), dv[ip[i]:ip[i + 1]].copy())
                if cap == 0:
                    yield cell
                    continue
                buf.append(cell)
                if len(buf) > cap:
                    j = int(rng.integers(len(buf)))
                    buf[j], buf[-1] = buf[-1], buf[j]
                    yield buf.pop()
        for j in rng.permutation(len(buf)) if buf else []:
            yield buf[j]

    def iter_batches(self, batch_size: int, drop_last: bool = True) -> Iterator[CellBatch]:
        """This rank's cells in CSR batches of ``batch_size``. ``drop_last``: exactly ``n_batches(batch_size)``
        full batches (the same count on every rank); otherwise every cell, the last batch possibly short."""
        bs = max(1, int(batch_size))
        limit = self.n_batches(bs) if drop_last else None
        done = 0
        pending: list[StreamCell] = []
        for cell in self:
            pending.append(cell)
            if len(pending) == bs:
                yield self._batch(pending)
                pending = []
                done += 1
                if limit is not None and done >= limit:
                    return
        if pending and not drop_last:
            yield self._batch(pending)

    def _batch(self, cells: list[StreamCell]) -> CellBatch:
        lens = np.fromiter((len(c.indices) for c in cells), np.int64, len(cells))
        indptr = np.concatenate([[0], np.cumsum(lens)])
        indices = np.concatenate([c.indices for c in cells]) if indptr[-1] else np.zeros(0, np.int32)
        data = np.concatenate([c.values for c in cells]) if indptr[-1] else np.zeros(0, np.float32)
        counts = sp.csr_matrix((data, indices, indptr), shape=(len(cells), self.n_cols))
        return CellBatch(counts, np.array([c.source for c in cells], np.int64),
                         np.array([c.row for c in cells], np.int64))

    # -- lifetime --------------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the files."""
        for s in self._sources:
            if s.handle is not None:
                s.handle.close()
                s.handle = None

    def __enter__(self) -> CellStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError("CellStream holds open files; create one per process (e.g. per rank)")


# --------------------------------------------------------------------------------------------------
# sizing: what a file would cost in memory, what memory there is
# --------------------------------------------------------------------------------------------------
def h5ad_matrix_info(path: str | Path, layer: str | None = None) -> dict[str, Any]:
    """Shape and stored values of an ``.h5ad``'s count matrix from HDF5 metadata alone (X is not read):
    ``{"n_cells", "n_genes", "nnz", "sparse", "key"}`` (``nnz`` of a dense matrix = cells x genes)."""
    src = _open_source(Path(path), layer, None)
    try:
        node = src.handle[src.key]
        nnz = int(node["data"].shape[0]) if src.sparse else src.n_cells * src.n_genes
        return {"n_cells": src.n_cells, "n_genes": src.n_genes, "nnz": nnz, "sparse": src.sparse, "key": src.key}
    finally:
        src.handle.close()


def read_h5ad_genes(path: str | Path, layer: str | None = None) -> list[str]:
    """Gene names (the count matrix's columns) of an ``.h5ad``, without reading X."""
    src = _open_source(Path(path), layer, None)
    src.handle.close()
    return src.genes


IN_MEMORY_BYTES_PER_VALUE = 32
"""Loading a file whole and tokenising it costs about this much per stored count: CSR float32 value + int32
index, a vocabulary-indexed copy of both, and the int64 gene id + bin of each token (measured order)."""
IN_MEMORY_BYTES_PER_CELL = 400
"""Per-cell overhead of holding tokenised cells (two numpy arrays and a tuple per cell)."""


def in_memory_bytes(paths: Sequence[str | Path], layer: str | None = None) -> int:
    """Estimated memory to load these ``.h5ad`` files whole and tokenise them (pretraining's in-memory path)."""
    total = 0
    for p in paths:
        info = h5ad_matrix_info(p, layer)
        total += info["nnz"] * IN_MEMORY_BYTES_PER_VALUE + info["n_cells"] * IN_MEMORY_BYTES_PER_CELL
    return total


def available_memory_bytes() -> int:
    """Memory the system can still give (``MemAvailable`` of /proc/meminfo; elsewhere free physical pages)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30  # unknown: assume a modest machine


def peak_rss_bytes() -> int:
    """This process's peak resident memory so far. Linux: ``VmHWM`` of /proc/self/status (its own memory
    image; ``ru_maxrss`` would also carry the peak of the parent it was forked from); elsewhere ``ru_maxrss``."""
    import resource
    import sys

    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    peak = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return peak if sys.platform == "darwin" else peak * 1024


def prefetch(items: Iterable[Any], depth: int = 2) -> Iterator[Any]:
    """Yield ``items`` while a background thread produces the next ``depth`` of them (disk reads and
    tokenising overlap the training step; h5py and numpy release the GIL for the heavy parts). An exception
    in the producer is re-raised here; closing the generator stops the producer."""
    import queue
    import threading

    q: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=max(1, int(depth)))
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put(("item", item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(("end", None))
        except BaseException as exc:  # handed to the consumer
            q.put(("error", exc))

    t = threading.Thread(target=produce, name="omicslab-prefetch", daemon=True)
    t.start()
    try:
        while True:
            kind, val = q.get()
            if kind == "end":
                return
            if kind == "error":
                raise val
            yield val
    finally:
        stop.set()
        while t.is_alive():  # unblock a producer waiting on a full queue, then let it see ``stop``
            try:
                q.get_nowait()
            except queue.Empty:
                t.join(timeout=0.05)


# --------------------------------------------------------------------------------------------------
# writing large files block by block
# --------------------------------------------------------------------------------------------------
def _write_dataframe(group_parent: Any, name: str, index: Sequence[str]) -> None:
    import anndata as ad
    import pandas as pd

    ad.io.write_elem(group_parent, name, pd.DataFrame(index=pd.Index(list(index), dtype=str)))


def write_h5ad_blocks(path: str | Path, blocks: Iterable[sp.csr_matrix], n_genes: int,
                      genes: Sequence[str] | None = None, cell_ids: Sequence[str] | None = None,
                      cell_prefix: str = "cell") -> Path:
    """Write a cells x genes CSR ``.h5ad`` (anndata's on-disk layout) from row blocks, never holding the
    whole matrix. Cell IDs default to ``{cell_prefix}{i}``, gene names to ``G{j}``. Atomic (temp + rename).
    Returns the path."""
    import anndata as ad

    h5py = _h5py()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["encoding-type"] = "anndata"
            f.attrs["encoding-version"] = "0.1.0"
            g = f.create_group("X")
            g.attrs["encoding-type"] = "csr_matrix"
            g.attrs["encoding-version"] = "0.1.0"
            chunk = 1 << 18
            data = g.create_dataset("data", shape=(0,), maxshape=(None,), dtype="float32", chunks=(chunk,))
            indices = g.create_dataset("indices", shape=(0,), maxshape=(None,), dtype="int32", chunks=(chunk,))
            indptr_parts: list[np.ndarray] = [np.zeros(1, np.int64)]
            nnz, n_cells = 0, 0
            for block in blocks:
                m = sp.csr_matrix(block, dtype=np.float32)
                if m.shape[1] != n_genes:
                    raise ValueError(f"block has {m.shape[1]} columns, expected {n_genes}")
                m.sort_indices()
                k = int(m.nnz)
                data.resize((nnz + k,))
                indices.resize((nnz + k,))
                data[nnz:nnz + k] = m.data
                indices[nnz:nnz + k] = m.indices.astype(np.int32)
                indptr_parts.append(m.indptr[1:].astype(np.int64) + nnz)
                nnz += k
                n_cells += m.shape[0]
            g.create_dataset("indptr", data=np.concatenate(indptr_parts))
            g.attrs["shape"] = np.array([n_cells, n_genes], dtype=np.int64)
            ids = list(cell_ids) if cell_ids is not None else [f"{cell_prefix}{i}" for i in range(n_cells)]
            if len(ids) != n_cells:
                raise ValueError(f"{len(ids)} cell IDs for {n_cells} cells")
            _write_dataframe(f, "obs", ids)
            del ids
            _write_dataframe(f, "var", list(genes) if genes is not None else [f"G{j}" for j in range(n_genes)])
            for name in ("layers", "obsm", "varm", "obsp", "varp", "uns"):
                ad.io.write_elem(f, name, {})
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def synthetic_count_blocks(n_cells: int, n_genes: int, genes_per_cell: float = 500.0, block_cells: int = 65536,
                           seed: int = 0) -> Iterator[sp.csr_matrix]:
    """Random raw-count CSR blocks (cells x genes): each cell expresses ~``genes_per_cell`` genes (sorted
    distinct columns drawn as random gaps), counts 1, 2, 3, ... (geometric). Vectorised per block."""
    rng = np.random.default_rng(seed)
    mean_gap = max(1.0, n_genes / max(1.0, float(genes_per_cell)))
    for a in range(0, n_cells, block_cells):
        b = min(a + block_cells, n_cells)
        rows = b - a
        # per cell, draw more gaps than needed; keep the cumulative positions that fall inside the genes
        k = int(min(n_genes, np.ceil(genes_per_cell * 1.6))) + 1
        gaps = rng.integers(1, int(2 * mean_gap) + 1, size=(rows, k), dtype=np.int32)
        pos = np.cumsum(gaps, axis=1, dtype=np.int64) - 1 - rng.integers(0, int(mean_gap) + 1, size=(rows, 1))
        keep = (pos >= 0) & (pos < n_genes)
        lens = keep.sum(1)
        indptr = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        indices = pos[keep].astype(np.int32)
        data = rng.geometric(0.4, size=indices.size).astype(np.float32)
        yield sp.csr_matrix((data, indices, indptr), shape=(rows, n_genes))
