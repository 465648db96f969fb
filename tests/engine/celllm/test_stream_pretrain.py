"""Pretraining on data larger than memory: the job streams backed .h5ad files block by block (never loading X),
reads every stored count exactly once per epoch, resumes mid-epoch exactly, and switches to streaming by
itself when X would not fit."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

import app.data.singlecell as sc
from app.data.errors import DataError
from app.data.singlecell.stream import CellStream, h5ad_matrix_info, synthetic_count_blocks, write_h5ad_blocks
from app.engine.celllm import pretrain as pt
from app.engine.celllm.distributed import DistInfo
from app.engine.celllm.model_io import load_model
from app.engine.events import Metrics
from app.engine.reporter import Reporter

torch.set_num_threads(1)


def _write(path: Path, n_cells: int, genes: list[str], seed: int, per_cell: float = 8.0) -> Path:
    return write_h5ad_blocks(path, synthetic_count_blocks(n_cells, len(genes), per_cell, block_cells=50, seed=seed),
                             len(genes), genes=genes, cell_prefix=f"{path.stem}_")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    d = tmp_path_factory.mktemp("sp")
    # b lists fewer genes, in another order: streamed through a gene map onto the shared vocabulary
    return [_write(d / "a.h5ad", 64, [f"G{i}" for i in range(30)], 1),
            _write(d / "b.h5ad", 32, [f"G{i}" for i in reversed(range(10, 40))], 2)]


def _cfg(files: list[Path], run: Path, **kw: object) -> dict:
    base = {"data": [str(p) for p in files], "run_dir": str(run), "preset": "tiny", "batch_size": 16,
            "chunk_size": 8, "epochs": 1, "device": "cpu", "threads": 1, "seed": 2, "max_len": 16,
            "stream": "on", "block_cells": 16, "shuffle_buffer": 24}
    base.update(kw)
    return base


@pytest.fixture
def no_whole_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to load a file whole fails the test."""
    import anndata

    def boom(*_a: object, **_k: object) -> None:
        raise AssertionError("X was loaded whole")

    monkeypatch.setattr(sc, "read_singlecell", boom)
    monkeypatch.setattr(sc, "counts_matrix", boom)
    monkeypatch.setattr(anndata, "read_h5ad", boom)


def test_streamed_pretrain_reads_each_value_once_in_blocks(files: list[Path], tmp_path: Path,
                                                           no_whole_reads: None) -> None:
    nnz = sum(h5ad_matrix_info(f)["nnz"] for f in files)
    rep = Reporter(keep=True)
    res = pt.pretrain(_cfg(files, tmp_path / "run"), rep)
    assert res["steps"] == 96 // 16 and res["n_cells"] == 96 and res["vocab_size"] == 40
    assert [g["match_rate"] for g in res["gene_match"]] == [1.0, 1.0]
    st = res["stream"]
    # 64/16 + 32/16 block reads, each value once (no re-read, no whole-matrix read)
    assert st["reads"] == 6 and st["max_rows_per_read"] == 16 and st["values_read"] == nnz
    assert st["max_values_per_read"] < nnz / 3
    assert any("data: streaming (asked for)" in getattr(e, "line", "") for e in rep.history)
    metrics = [e.values for e in rep.history if isinstance(e, Metrics)]
    assert len(metrics) == 6 and all(np.isfinite(m["loss"]) for m in metrics)
    _, _, vocab, extra = load_model(tmp_path / "run")
    assert vocab[:30] == [f"G{i}" for i in range(30)] and len(vocab) == 40 and extra["pretrain"]["streamed"]


def test_streamed_cancel_then_resume_mid_epoch_equals_uninterrupted(files: list[Path], tmp_path: Path) -> None:
    class StopAfter(Reporter):
        def should_stop(self) -> bool:
            return sum(isinstance(e, Metrics) for e in self.history) >= 2

    kw = {"supervised_key": "_dataset", "epochs": 1}
    full = pt.pretrain(_cfg(files, tmp_path / "full", **kw), Reporter())
    assert full["steps"] == 6
    cut = pt.pretrain(_cfg(files, tmp_path / "cut", **kw), StopAfter(keep=True))
    assert cut["cancelled"] and cut["step"] == 2
    again = pt.pretrain(_cfg(files, tmp_path / "cut", resume=True, **kw), Reporter())
    assert again["steps"] == 6
    a, *_ = load_model(tmp_path / "full")
    b, *_ = load_model(tmp_path / "cut")
    for (k, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(x, y, atol=1e-6), k
    rows = [json.loads(x) for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    ref = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 7))
    assert all("supervised" in r for r in rows)
    assert rows[4]["loss"] == pytest.approx(ref[4]["loss"], rel=1e-5)


def test_auto_streams_only_when_x_would_not_fit(files: list[Path], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    paths = [str(p) for p in files]
    need = sum(h5ad_matrix_info(p)["nnz"] * 32 + h5ad_matrix_info(p)["n_cells"] * 400 for p in paths)
    assert pt.choose_streaming("auto", paths, available=need * 10)[0] is False
    assert pt.choose_streaming("auto", paths, available=need)[0] is True
    assert pt.choose_streaming("auto", paths, local_ranks=8, available=need * 10)[0] is True  # 8 ranks load it
    assert pt.choose_streaming("off", paths, available=1)[0] is False
    csv = tmp_path / "x.csv"
    csv.write_text("cell,G0\nc0,1\n")
    assert pt.choose_streaming("auto", [*paths, str(csv)], available=1)[0] is False
    with pytest.raises(DataError, match=r"\.h5ad files only"):
        pt.choose_streaming("on", [str(csv)])
    with pytest.raises(DataError, match="auto, on or off"):
        pt.choose_streaming("sometimes", paths)
    # the job itself: little memory left -> it streams without being asked
    import app.data.singlecell.stream as stream_mod

    monkeypatch.setattr(stream_mod, "available_memory_bytes", lambda: 1000)
    res = pt.pretrain(_cfg(files, tmp_path / "auto", stream="auto", epochs=0.5), Reporter())
    assert "stream" in res and res["steps"] == 3


def test_stream_loader_memory_is_bounded_by_blocks_not_the_file(tmp_path: Path) -> None:
    """The pretraining loader (block reads, shuffle buffer, tokenising in a thread) peaks at the same memory for
    a file three times larger, and far below the size of X."""

    def peak_for(n_cells: int) -> tuple[int, int]:
        path = write_h5ad_blocks(tmp_path / f"c{n_cells}.h5ad",
                                 synthetic_count_blocks(n_cells, 2000, 200, block_cells=500, seed=0), 2000)
        info = h5ad_matrix_info(path)
        with CellStream(path, block_cells=128, shuffle_buffer=256, seed=0) as s:
            src = pt.StreamSource(s, 32, 64, 6, 0, DistInfo(), None)
            tracemalloc.start()
            n = 0
            for cells, _ in src.batches(0, 0):
                n += len(cells)
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            assert n == n_cells // 32 * 32
            assert s.stats.values_read <= info["nnz"] and s.stats.max_rows_per_read <= 128
        return peak, info["nnz"] * 8

    small, _ = peak_for(1500)
    big, x_bytes = peak_for(4500)
    assert x_bytes > 6_000_000
    assert big < 1.3 * small, (small, big)
    assert big < x_bytes / 3, (big, x_bytes)


def test_prefetch_hands_over_errors_and_stops_when_closed() -> None:
    import threading
    import time

    from app.data.singlecell.stream import prefetch

    def failing():
        yield 1
        yield 2
        raise ValueError("bad block")

    it = prefetch(failing(), 1)
    assert next(it) == 1 and next(it) == 2
    with pytest.raises(ValueError, match="bad block"):
        next(it)
    produced: list[int] = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    g = prefetch(endless(), 2)
    assert next(g) == 0
    g.close()
    n = len(produced)
    time.sleep(0.3)
    assert len(produced) == n <= 4  # bounded read-ahead, nothing produced after close
    assert not any(t.name == "omicslab-prefetch" and t.is_alive() for t in threading.enumerate())


def test_vectorised_batch_tokens_equal_tokenize_counts() -> None:
    import scipy.sparse as sp

    from app.engine.celllm.tokenize import bin_values, tokenize_counts, tokenize_vocab

    rng = np.random.default_rng(0)
    dense = rng.poisson(rng.gamma(0.3, 3.0, size=(40, 60))).astype(np.float32)
    dense[3] = 0  # an empty cell: CLS alone
    dense[5, :] = 2  # all ties
    x = sp.csr_matrix(dense)
    ident = np.arange(60)
    # no truncation: identical tokens and bins
    ref = tokenize_counts(x, ident, max_len=None, n_bins=6)
    got = tokenize_vocab(x, None, 0, 6)
    assert len(got) == 40 and len(got[3][0]) == 1
    for (g1, b1), (g2, b2) in zip(ref, got):
        assert np.array_equal(g1, g2) and np.array_equal(b1, b2)
    # truncation to the 7 most expressed genes: the kept counts are the top 7, bins from the cell's full total
    # (raw counts take a packed-key sort, other values a lexsort: both)
    for mat in (dense, dense * 0.5):
        for r, (g, b) in enumerate(tokenize_vocab(sp.csr_matrix(mat), 7, 1, 6)):
            row = mat[r]
            kept = g[1:] - 2
            assert len(kept) == min(7, int((row > 0).sum())) and np.all(np.diff(kept) > 0)
            dropped = np.setdiff1d(np.flatnonzero(row > 0), kept)
            if len(dropped):
                assert row[kept].min() >= row[dropped].max()
            assert np.array_equal(b[1:], bin_values(row[kept], float(row.sum()), 6))
    assert not np.array_equal(tokenize_vocab(x, 7, 1, 6)[5][0], tokenize_vocab(x, 7, 2, 6)[5][0])
