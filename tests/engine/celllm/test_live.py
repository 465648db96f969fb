"""The live map of fine-tuning and pretraining: refreshes at epoch 0..E (every K steps), files, quality rows,
events, resume, and that the refreshes leave the training itself unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from app.engine.celllm import live
from app.engine.celllm.finetune import finetune
from app.engine.reporter import Reporter

torch.set_num_threads(1)

PBMC = "singlecell/pbmc8k_hvg200_h5ad/pbmc.h5ad"


def _data(shared_data: Path, tmp_path: Path, n: int = 160) -> Path:
    import anndata as ad

    a = ad.read_h5ad(shared_data / PBMC)
    a = a[np.random.default_rng(0).choice(a.n_obs, n, replace=False)].copy()
    a.obs["batch"] = np.where(np.arange(n) % 2 == 0, "b0", "b1")
    path = tmp_path / "small.h5ad"
    a.write_h5ad(path)
    return path


def _cfg(data: Path, run: Path, **kw: object) -> dict:
    return {"data": str(data), "label_key": "cell_type", "run_dir": str(run), "epochs": 3, "batch_size": 32,
            "max_len": 64, "seed": 0, "device": "cpu", "threads": 1, "baseline_genes": 100, "patience": 10,
            "live_cells": 100, "batch_key": "batch", **kw}


def test_live_subsample_is_stratified_seeded_and_complete() -> None:
    labels = np.array(["a"] * 700 + ["b"] * 290 + ["c"] * 10)
    s = live.live_subsample(1000, 100, labels, seed=3)
    assert len(s) == 100 and len(set(s.tolist())) == 100
    counts = {c: int(np.sum(labels[s] == c)) for c in "abc"}
    assert counts == {"a": 70, "b": 29, "c": 1}
    assert np.array_equal(s, live.live_subsample(1000, 100, labels, seed=3))
    assert not np.array_equal(s, live.live_subsample(1000, 100, labels, seed=4))
    assert np.array_equal(live.live_subsample(50, 100, labels[:50]), np.arange(50))  # fewer cells: all
    assert live.refresh_every(1000, 0) == 50 and live.refresh_every(7, 0) == 1 and live.refresh_every(1000, 7) == 7


@pytest.mark.shared_data
@pytest.mark.slow
def test_finetune_live_map_every_epoch(shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = _data(shared_data, tmp_path)
    run = tmp_path / "run"
    rep = Reporter(keep=True)
    finetune(_cfg(data, run), rep)
    idx = live.read_index(run)
    cells = live.read_cells(run)
    assert [r["epoch"] for r in idx["refreshes"]] == [0, 1, 2, 3]  # epoch 0 = the starting model
    assert cells["n_cells"] == 100 and len(set(cells["cell_ids"])) == 100 and cells["batch_key"] == "batch"
    embs = [live.load_refresh(run, r) for r in idx["refreshes"]]
    assert all(e.shape == embs[0].shape and np.isfinite(e).all() for e in embs)
    assert not np.allclose(embs[0], embs[-1])  # the model learned something
    probs = live.load_refresh(run, idx["refreshes"][-1], "probs")
    assert probs.shape == (100, len(cells["classes"])) and np.allclose(probs.sum(1), 1, atol=1e-4)
    q = idx["refreshes"][-1]["quality"]
    assert {"silhouette", "knn_accuracy", "ilisi", "graph_connectivity", "uniformity"} <= set(q)
    assert idx["reference"]["method"] == "pca_hvg" and np.load(run / "live" / "reference.npy").shape[0] == 100
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["refresh"] for r in rows if r.get("kind") == "live"] == [0, 1, 2, 3]
    assert sum(r.get("kind") == "live_reference" for r in rows) == 1
    maps = [e for e in rep.history if type(e).__name__ == "Artifact" and e.kind == "live_map"]
    assert [Path(e.path).name for e in maps] == ["emb-0000.npy", "emb-0001.npy", "emb-0002.npy", "emb-0003.npy"]
    lm = [e for e in rep.history if type(e).__name__ == "Metrics" and e.split == "live"]
    assert [e.epoch for e in lm] == [0, 1, 2, 3]
    table = live.quality_table(run)
    assert len(table) == 1 + 4 + 1 and "knn_accuracy" in table[0] and table[-1].strip().startswith("PCA-HVG")

    # CLI twin: the quality table per refresh, and a PNG per refresh with aligned (not re-randomised) layouts
    from app.cli import main
    from app.engine.celllm.live_png import next_layout

    assert main(["runs", "show", str(run), "--live-png", str(tmp_path / "png")]) == 0
    out = capsys.readouterr().out
    assert "live map quality per refresh" in out and "PCA-HVG" in out
    assert sorted(p.name for p in (tmp_path / "png").glob("*.png")) == [f"refresh-{k:04d}.png" for k in range(4)]
    a = next_layout(embs[2])
    b = next_layout(embs[3], a)
    r = [np.corrcoef(a[:, j], b[:, j])[0, 1] for j in range(2)]
    assert min(r) > 0.5  # the next layout starts from the previous one: cells stay near where they were

    # the live map does not change training: same losses and test scores with it off
    off = tmp_path / "off"
    finetune(_cfg(data, off, live_cells=0))
    assert not (off / "live").exists()
    m_on, m_off = (json.loads((p / "metrics.json").read_text()) for p in (run, off))
    assert [h["train_loss"] for h in m_on["history"]] == [h["train_loss"] for h in m_off["history"]]
    assert m_on["test"]["accuracy"] == m_off["test"]["accuracy"]


def test_pretrain_live_map_every_k_steps_and_resume(tmp_path: Path) -> None:
    from test_pretrain import StopAfter, _cfg, _h5ad

    from app.engine.celllm.model_io import load_model
    from app.engine.celllm.pretrain import pretrain

    d1, d2 = _h5ad(tmp_path / "a.h5ad", seed=0), _h5ad(tmp_path / "b.h5ad", seed=1)
    kw = {"batch_size": 32, "live_every": 2, "live_cells": 50, "batch_key": "_dataset", "label_key": "kind"}
    rep = Reporter(keep=True)
    res = pretrain(_cfg([d1, d2], tmp_path / "full", **kw), rep)
    assert res["steps"] == 4
    idx = live.read_index(tmp_path / "full")
    assert [r["step"] for r in idx["refreshes"]] == [0, 2, 4]
    q = idx["refreshes"][-1]["quality"]
    assert {"alignment", "uniformity", "ilisi", "silhouette", "knn_accuracy"} <= set(q)
    assert q["alignment"] > 0  # two dropout views differ
    cells = live.read_cells(tmp_path / "full")
    assert cells["n_cells"] == 50 and set(cells["batches"]) == {"a.h5ad", "b.h5ad"}
    assert sorted(set(cells["labels"])) == ["a", "b"] and cells["cell_ids"][0].split(":")[0] in ("a.h5ad", "b.h5ad")

    # a run stopped after one step and resumed has the same refreshes and weights as the uninterrupted run
    pretrain(_cfg([d1, d2], tmp_path / "cut", **kw), StopAfter(1))
    pretrain(_cfg([d1, d2], tmp_path / "cut", resume=True, **kw), Reporter())
    idx2 = live.read_index(tmp_path / "cut")
    assert [r["step"] for r in idx2["refreshes"]] == [0, 2, 4]
    for r1, r2 in zip(idx["refreshes"], idx2["refreshes"]):
        assert np.allclose(live.load_refresh(tmp_path / "full", r1), live.load_refresh(tmp_path / "cut", r2),
                           atol=1e-5)
    a, *_ = load_model(tmp_path / "full")
    b, *_ = load_model(tmp_path / "cut")
    assert all(torch.allclose(x, y, atol=1e-6) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_live_map_work_keeps_torch_threads() -> None:
    # scanpy/scikit-learn (the PCA reference) reset the OpenMP pool torch shares: a 1-thread training run
    # silently became a 2-thread one; the live map restores the count
    from app.engine import embedding_quality as eq

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        counts = np.random.default_rng(0).poisson(1.0, (60, 300)).astype(np.float32)
        with live._keep_torch_threads():
            eq.pca_reference(counts, 100, 5)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_align_to_undoes_a_turned_scaled_shifted_map() -> None:
    from app.engine.celllm.live_png import align_to

    rng = np.random.default_rng(0)
    ref = rng.normal(size=(200, 2)).astype(np.float32)
    t = np.deg2rad(130)
    turned = (ref @ np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]) * np.array([1, -1])) * 3 + 7
    assert np.allclose(align_to(turned.astype(np.float32), ref), ref, atol=1e-4)
    other = rng.normal(size=(200, 2)).astype(np.float32)  # unrelated points stay unrelated
    assert abs(np.corrcoef(align_to(other, ref)[:, 0], ref[:, 0])[0, 1]) < 0.3
