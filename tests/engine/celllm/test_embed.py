"""Embedding cells with CellLM: the AnnData fields written, re-read from disk."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import torch

from app.engine.celllm.embed import embed, embed_adata
from app.engine.celllm.finetune import finetune, stratified_subsample
from app.resources import CELLLM_TINY

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def small_pbmc(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    a = ad.read_h5ad(shared_data / "singlecell" / "pbmc8k_hvg200_h5ad" / "pbmc.h5ad")
    keep = stratified_subsample(a.obs["cell_type"].astype(str).to_numpy(), 90, 2)
    path = tmp_path_factory.mktemp("embed") / "pbmc90.h5ad"
    a[keep].copy().write_h5ad(path)
    return path


@pytest.mark.shared_data
def test_embed_with_finetuned_model_writes_fields(small_pbmc: Path, tmp_path: Path) -> None:
    run = tmp_path / "ft"
    finetune({"data": str(small_pbmc), "label_key": "cell_type", "run_dir": str(run), "epochs": 1,
              "max_len": 64, "device": "cpu", "threads": 1, "baseline_genes": 100})
    out = tmp_path / "emb.h5ad"
    res = embed({"data": str(small_pbmc), "model": str(run), "out": str(out), "device": "cpu", "threads": 1,
                 "batch_size": 16, "run_dir": str(tmp_path / "embrun")})
    back = ad.read_h5ad(out)
    src = ad.read_h5ad(small_pbmc)
    assert back.n_obs == src.n_obs and list(back.obs_names) == list(src.obs_names)
    x = back.obsm["X_celllm"]
    assert x.shape == (src.n_obs, res["dim"]) and np.isfinite(x).all()
    assert set(back.obs["celllm_label"].astype(str)) <= set(back.uns["omicslab"]["celllm_embed"]["classes"])
    conf = back.obs["celllm_confidence"].to_numpy()
    assert ((conf > 0) & (conf <= 1)).all()
    assert "celllm_embed" in back.uns["omicslab"]
    # counts untouched
    assert np.array_equal(np.asarray(back.X.todense() if hasattr(back.X, "todense") else back.X),
                          np.asarray(src.X.todense() if hasattr(src.X, "todense") else src.X))
    assert Path(res["embedding_npy"]).is_file()


@pytest.mark.shared_data
def test_embed_is_batch_independent_with_shipped_model(small_pbmc: Path) -> None:
    if not CELLLM_TINY.is_dir():
        pytest.fail(f"the shipped tiny model is missing at {CELLLM_TINY}")
    a = ad.read_h5ad(small_pbmc)
    full = embed_adata(a, None, batch_size=32, device="cpu", max_len=64)
    assert "celllm_label" not in full.obs  # a pretrained model has no head: embeddings only
    part = embed_adata(a[:7].copy(), None, batch_size=3, device="cpu", max_len=64)
    np.testing.assert_allclose(part.obsm["X_celllm"], full.obsm["X_celllm"][:7], rtol=1e-4, atol=1e-5)


def test_check_cells_have_counts_looks_past_the_first_cells() -> None:
    import scipy.sparse as sp

    from app.data.errors import DataError
    from app.engine.celllm.embed import check_cells_have_counts

    x = sp.lil_matrix((3000, 4), dtype=np.float32)
    x[2500, 1] = 3.0  # only a late cell has a count, in gene 1
    x[10, 3] = 5.0  # an early count in a gene the model does not know
    x = x.tocsr()
    check_cells_have_counts(x, np.array([0, 1, 2, -1]))  # gene 1 is known: accepted
    check_cells_have_counts(x.toarray(), np.array([0, 1, 2, -1]))
    with pytest.raises(DataError, match="zero counts in the 2 genes"):
        check_cells_have_counts(x, np.array([0, -1, 1, -1]))
