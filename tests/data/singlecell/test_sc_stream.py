"""CellStream: every cell once per epoch across ranks, seeded shuffling, bounded block reads, many files."""

from __future__ import annotations

import itertools
import tracemalloc
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from app.data.errors import DataError
from app.data.singlecell.stream import CellStream, synthetic_count_blocks, write_h5ad_blocks


def _write(path: Path, n_cells: int, n_genes: int, seed: int, genes: list[str] | None = None) -> Path:
    return write_h5ad_blocks(path, synthetic_count_blocks(n_cells, n_genes, 12, block_cells=97, seed=seed),
                             n_genes, genes=genes, cell_prefix=f"{path.stem}_")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    d = tmp_path_factory.mktemp("stream")
    return [_write(d / "a.h5ad", 1000, 60, 1), _write(d / "b.h5ad", 333, 60, 2), _write(d / "c.h5ad", 7, 60, 3)]


def _ids(stream: CellStream) -> list[tuple[int, int]]:
    return [(c.source, c.row) for c in stream]


def test_written_file_is_a_normal_h5ad(files: list[Path]) -> None:
    a = ad.read_h5ad(files[0])
    assert a.shape == (1000, 60) and sp.issparse(a.X) and a.obs_names[0] == "a_0" and a.var_names[0] == "G0"
    assert a.X.nnz > 1000 and np.all(a.X.data == np.round(a.X.data)) and a.X.data.min() >= 1
    assert a.X.has_sorted_indices
    backed = ad.read_h5ad(files[0], backed="r")
    assert np.array_equal(backed.X[10:20].toarray(), a.X[10:20].toarray())


@pytest.mark.parametrize("world", [1, 2, 3])
def test_every_cell_once_per_epoch_across_ranks(files: list[Path], world: int) -> None:
    total = 1000 + 333 + 7
    seen: list[tuple[int, int]] = []
    batches = []
    for r in range(world):
        with CellStream(files, rank=r, world_size=world, block_cells=64, shuffle_buffer=100, seed=4) as s:
            s.set_epoch(1)
            ids = _ids(s)
            assert len(ids) == len(s)
            assert abs(len(s) - total / world) < 1
            seen += ids
            batches.append(sum(1 for _ in s.iter_batches(50)))
            assert batches[-1] == s.n_batches(50) == (total // world) // 50
    assert len(seen) == total and len(set(seen)) == total
    assert set(seen) == {(k, i) for k, n in enumerate((1000, 333, 7)) for i in range(n)}


def test_cells_hold_the_right_counts(files: list[Path]) -> None:
    mats = [ad.read_h5ad(f).X for f in files]
    with CellStream(files, block_cells=50, shuffle_buffer=30, seed=1) as s:
        for cell in s:
            ref = mats[cell.source][cell.row]
            assert np.array_equal(cell.indices, ref.indices) and np.array_equal(cell.values, ref.data)
        batch = next(iter(s.iter_batches(20)))
        dense = np.stack([mats[k][i].toarray()[0] for k, i in zip(batch.sources, batch.rows)])
        assert np.array_equal(batch.counts.toarray(), dense) and len(batch) == 20


def test_shuffle_is_seeded(files: list[Path]) -> None:
    def order(seed: int, epoch: int) -> list[tuple[int, int]]:
        with CellStream(files, block_cells=64, shuffle_buffer=200, seed=seed) as s:
            s.set_epoch(epoch)
            return _ids(s)

    first = order(7, 0)
    assert first == order(7, 0)
    assert first != order(8, 0) and first != order(7, 1)
    assert sorted(first) == sorted(order(7, 1))
    # shuffled across files and within blocks: not the file order, and consecutive cells rarely neighbours
    assert first != sorted(first)
    neighbours = sum(1 for (k1, i1), (k2, i2) in itertools.pairwise(first) if k1 == k2 and i2 == i1 + 1)
    assert neighbours < 0.1 * len(first)
    with CellStream(files, shuffle=False) as s:
        assert _ids(s) == [(k, i) for k, n in enumerate((1000, 333, 7)) for i in range(n)]


def test_reads_are_blocks_and_memory_stays_bounded(tmp_path: Path) -> None:
    n_cells, n_genes = 20000, 2000
    path = write_h5ad_blocks(tmp_path / "big.h5ad", synthetic_count_blocks(n_cells, n_genes, 100, 4096, seed=0),
                             n_genes)
    with CellStream(path, block_cells=256, shuffle_buffer=512, seed=0) as s:
        tracemalloc.start()
        n = 0
        for _ in s:
            n += 1
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        nnz = s.stats.values_read
    x_bytes = nnz * 8  # float32 values + int32 indices of the whole matrix
    assert n == n_cells
    assert s.stats.reads == -(-n_cells // 256) and s.stats.max_rows_per_read == 256
    assert s.stats.max_values_per_read < nnz / 50  # never more than a block at once
    assert x_bytes > 10_000_000 and peak < x_bytes / 5, (peak, x_bytes)


def test_multiple_files_with_different_genes_through_a_vocabulary(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.h5ad", 40, 5, 1, genes=["A", "B", "C", "D", "E"])
    b = _write(tmp_path / "b.h5ad", 30, 4, 2, genes=["C", "X", "A", "B"])
    vocab = ["A", "B", "C", "D"]
    maps = [np.array([0, 1, 2, 3, -1]), np.array([2, -1, 0, 1])]
    with pytest.raises(DataError, match="genes differ"):
        CellStream([a, b])
    xa, xb = ad.read_h5ad(a).X.toarray(), ad.read_h5ad(b).X.toarray()
    with CellStream([a, b], gene_maps=maps, vocab_size=len(vocab), seed=3) as s:
        assert s.genes[1] == ["C", "X", "A", "B"] and s.n_cols == 4
        rows = []
        for batch in s.iter_batches(16, drop_last=False):
            assert batch.counts.shape[1] == 4
            for k, i, got in zip(batch.sources, batch.rows, batch.counts.toarray()):
                want = xa[i, :4] if k == 0 else xb[i][[2, 3, 0]]
                want = want if k == 0 else np.array([want[0], want[1], want[2], 0.0])
                assert np.array_equal(got, want)
                rows.append((k, i))
        assert len(rows) == 70 and len(set(rows)) == 70


def test_dense_layers_labels_and_bad_input(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.poisson(1.0, (50, 8)).astype(np.float32)
    obs = pd.DataFrame({"type": pd.Categorical(["t", "n"] * 25)}, index=[f"c{i}" for i in range(50)])
    adata = ad.AnnData(X=np.log1p(x), obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(8)]))
    adata.layers["counts"] = x  # dense, in a layer: the default pick
    adata.write_h5ad(tmp_path / "dense.h5ad")
    with CellStream(tmp_path / "dense.h5ad", label_key="type", block_cells=7, seed=0) as s:
        cells = list(s)
        assert len(cells) == 50 and s.stats.max_rows_per_read <= 7
        for c in cells:
            assert np.array_equal(c.values, x[c.row][x[c.row] > 0])
        b = next(iter(s.iter_batches(10)))
        assert list(s.labels_of(b.sources, b.rows)) == [["t", "n"][i % 2] for i in b.rows]
    with pytest.raises(DataError, match="raw counts"):
        list(CellStream(tmp_path / "dense.h5ad", layer="X"))
    with pytest.raises(DataError, match="no column 'cell_type'"):
        CellStream(tmp_path / "dense.h5ad", label_key="cell_type")
    with pytest.raises(DataError, match="no matrix 'spliced'"):
        CellStream(tmp_path / "dense.h5ad", layer="spliced")
    csc = ad.AnnData(X=sp.csc_matrix(x))
    csc.write_h5ad(tmp_path / "csc.h5ad")
    with pytest.raises(DataError, match="CSR"):
        CellStream(tmp_path / "csc.h5ad")
    with pytest.raises(DataError, match="not found"):
        CellStream(tmp_path / "missing.h5ad")
    (tmp_path / "text.h5ad").write_text("not hdf5")
    with pytest.raises(DataError, match="HDF5"):
        CellStream(tmp_path / "text.h5ad")
