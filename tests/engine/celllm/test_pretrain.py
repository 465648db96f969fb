"""Pretraining job end to end on tiny synthetic data: run folder, metrics, loadable model, cancel + resume."""

from __future__ import annotations

import json
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from app.data.errors import DataError
from app.engine.celllm.model_io import load_model
from app.engine.celllm.pretrain import pretrain
from app.engine.events import Metrics, Progress
from app.engine.reporter import Reporter

torch.set_num_threads(1)


def _h5ad(path: Path, n_cells: int = 64, n_genes: int = 40, seed: int = 0, prefix: str = "G") -> Path:
    rng = np.random.default_rng(seed)
    x = rng.poisson(rng.gamma(0.6, 2.0, size=(n_cells, n_genes))).astype(np.float32)
    x[:, 0] += 1  # no empty cells
    a = ad.AnnData(sp.csr_matrix(x), obs=pd.DataFrame({"kind": np.where(np.arange(n_cells) % 2, "a", "b")},
                                                       index=[f"c{seed}_{i}" for i in range(n_cells)]),
                   var=pd.DataFrame(index=[f"{prefix}{i}" for i in range(n_genes)]))
    a.write_h5ad(path)
    return path


class StopAfter(Reporter):
    """Asks the job to stop once ``n`` steps are done."""

    def __init__(self, n: int) -> None:
        super().__init__(keep=True)
        self.n = n

    def should_stop(self) -> bool:
        return sum(isinstance(e, Metrics) and e.split == "train" for e in self.history) >= self.n


def _cfg(data: list[Path], run: Path, **kw: object) -> dict:
    base = {"data": [str(p) for p in data], "run_dir": str(run), "preset": "tiny", "batch_size": 32,
            "chunk_size": 8, "epochs": 1, "device": "cpu", "threads": 1, "seed": 3, "max_len": 24}
    base.update(kw)
    return base


def test_two_step_pretrain_writes_loadable_model(tmp_path: Path) -> None:
    data = _h5ad(tmp_path / "d.h5ad")
    rep = Reporter(keep=True)
    res = pretrain(_cfg([data], tmp_path / "run"), rep)
    assert res["steps"] == 2 and not res["cancelled"] and res["vocab_size"] == 40
    metrics = [e for e in rep.history if isinstance(e, Metrics) and e.split == "train"]
    assert len(metrics) == 2
    for m in metrics:
        assert {"loss", "mlm", "contrastive", "lr"} <= set(m.values) and np.isfinite(m.values["loss"])
        assert m.values["loss"] == pytest.approx(m.values["mlm"] + m.values["contrastive"], rel=1e-5)
    assert [e.step for e in rep.history if isinstance(e, Progress)] == [1, 2]
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "kind" not in r]  # training rows (live-map rows carry a kind)
    assert [r["step"] for r in rows] == [1, 2]
    assert list((tmp_path / "run" / "checkpoints").glob("step-2.safetensors"))
    model, cfg, vocab, extra = load_model(tmp_path / "run")  # a run folder -> its model/
    assert vocab == [f"G{i}" for i in range(40)] and cfg.preset == "tiny" and extra["max_len"] == 24
    assert extra["pretrain"]["steps"] == 2
    # the epoch checkpoint loads as a model too (config + vocabulary in its header)
    m2, _, v2, _ = load_model(tmp_path / "run" / "checkpoints" / "step-2.safetensors")
    assert v2 == vocab
    for (k, a), b in zip(model.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(a, b), k


def test_cancel_then_resume_equals_uninterrupted(tmp_path: Path) -> None:
    data = _h5ad(tmp_path / "d.h5ad", n_cells=64)
    full = pretrain(_cfg([data], tmp_path / "full", batch_size=16), Reporter())
    assert full["steps"] == 4
    first = pretrain(_cfg([data], tmp_path / "cut", batch_size=16), StopAfter(1))
    assert first["cancelled"] and first["step"] == 1 and Path(first["checkpoint"]).is_file()
    assert not (tmp_path / "cut" / "model").exists()
    second = pretrain(_cfg([data], tmp_path / "cut", batch_size=16, resume=True), Reporter())
    assert second["steps"] == 4 and not second["cancelled"]
    a, *_ = load_model(tmp_path / "full")
    b, *_ = load_model(tmp_path / "cut")
    for (k, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(x, y, atol=1e-6), k
    steps = [r["step"] for r in map(json.loads, (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines())
             if "kind" not in r]
    assert steps == [1, 2, 3, 4]


def test_vocab_union_supervised_dataset_label_and_init(tmp_path: Path) -> None:
    d1 = _h5ad(tmp_path / "a.h5ad", n_cells=32, n_genes=30, seed=1)
    d2 = _h5ad(tmp_path / "b.h5ad", n_cells=32, n_genes=40, seed=2)  # G0..G39: 10 new genes
    rep = Reporter(keep=True)
    res = pretrain(_cfg([d1, d2], tmp_path / "r1", supervised_key="_dataset", chunk_size=None), rep)
    assert res["vocab_size"] == 40 and res["steps"] == 2
    assert all("supervised" in e.values for e in rep.history if isinstance(e, Metrics) and e.split == "train")
    # continue from it on data named differently in case: harmonised, match rate reported
    d3 = _h5ad(tmp_path / "c.h5ad", n_cells=32, n_genes=20, seed=3, prefix="g")
    res2 = pretrain(_cfg([d3], tmp_path / "r2", init=str(tmp_path / "r1"), supervised_key="kind"), Reporter())
    assert res2["vocab_size"] == 40 and res2["gene_match"][0]["match_rate"] == 1.0
    with pytest.raises(DataError, match="no column 'nope'"):
        pretrain(_cfg([d3], tmp_path / "r3", supervised_key="nope"), Reporter())
    with pytest.raises(DataError, match=r"dropout.*greater than 0"):  # refused by PretrainConfig, before any work
        pretrain(_cfg([d3], tmp_path / "r4", dropout=0.0), Reporter())
    with pytest.raises(DataError, match=r"run_dir.*needs a value"):
        pretrain({"data": [str(d3)]}, Reporter())


def test_fractional_epochs(tmp_path: Path) -> None:
    data = _h5ad(tmp_path / "d.h5ad", n_cells=64)
    res = pretrain(_cfg([data], tmp_path / "half", batch_size=16, epochs=0.5), Reporter())
    assert res["steps"] == 2


def test_gene_subset_keeps_cls_first_and_a_fraction_of_each_cells_genes() -> None:
    from app.engine.celllm.pretrain import gene_subset
    from app.engine.celllm.tokenize import Tokens

    # three cells: 10 genes, 1 gene, 4 genes (CLS = token 1 first, genes are tokens >= 2, bins = ids % 6)
    cells = [(np.r_[1, np.arange(2, 12)], np.r_[0, np.arange(2, 12) % 6]), (np.r_[1, 7], np.r_[0, 1]),
             (np.r_[1, 20, 21, 22, 23], np.r_[0, 2, 3, 4, 5])]
    tok = Tokens.from_cells(cells)
    rng = np.random.default_rng(0)
    a, b = gene_subset(tok, 0.5, rng), gene_subset(tok, 0.5, rng)
    assert list(a.lengths) == [6, 2, 3] and list(b.lengths) == [6, 2, 3]  # CLS + round(0.5 n), at least 1 gene
    for view in (a, b):
        for (ids, bins), (ids0, bins0) in zip(view, cells):
            assert ids[0] == 1 and len(set(ids[1:].tolist())) == len(ids) - 1  # CLS first, no gene twice
            assert set(ids[1:].tolist()) <= set(ids0[1:].tolist())
            assert list(ids) == sorted(ids, key=list(ids0).index)  # the cell's order is kept
            pos = [list(ids0).index(i) for i in ids]
            assert list(bins) == [bins0[p] for p in pos]  # each gene keeps its own bin
    # two draws differ (independent views), the same seed gives the same views
    assert not np.array_equal(a.ids, b.ids)
    rng2 = np.random.default_rng(0)
    assert np.array_equal(gene_subset(tok, 0.5, rng2).ids, a.ids)


def test_gene_subset_views_pretrain_and_are_recorded(tmp_path: Path) -> None:
    from app.engine.celllm.pretrain import make_batch

    data = _h5ad(tmp_path / "d.h5ad", n_genes=60)
    res = pretrain(_cfg([data], tmp_path / "g", view="genes", view_keep=0.3), Reporter())
    assert res["steps"] == 2 and np.isfinite(res["final"]["contrastive"])
    _, _, _, extra = load_model(tmp_path / "g")
    assert extra["pretrain"]["view"] == "genes" and extra["pretrain"]["view_keep"] == 0.3
    # the batch: view A (with the MLM masks) and view B are different, shorter sequences of the same cells
    cells = [(np.r_[1, np.arange(2, 2 + n)], np.r_[0, np.ones(n, np.int64)]) for n in (20, 40)]
    batch = make_batch(cells, None, 0.15, 6, torch.Generator().manual_seed(0), view="genes", view_keep=0.3)
    assert batch["pad_mask"].sum(1).tolist() == [7, 13] and batch["pad_mask_b"].sum(1).tolist() == [7, 13]
    assert not torch.equal(batch["gene_ids"], batch["gene_ids_b"])
    masked = batch["targets"] != -100
    assert bool((batch["pad_mask"] | ~masked).all())  # MLM targets only inside view A
    with pytest.raises(DataError, match="view"):
        pretrain(_cfg([data], tmp_path / "bad", view="nope"), Reporter())
