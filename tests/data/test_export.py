"""write_h5ad_atomic: copying X as stored from the file it was read from gives the same AnnData as writing it."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from app.data.export import write_h5ad_atomic


def _adata(dtype: type = np.float32) -> ad.AnnData:
    x = sp.random(50, 30, density=0.2, format="csr", random_state=0, dtype=np.float64)
    x.data = np.ceil(x.data * 9)
    a = ad.AnnData(x.astype(dtype), obs=pd.DataFrame(index=[f"c{i}" for i in range(50)]),
                   var=pd.DataFrame(index=[f"g{i}" for i in range(30)]))
    a.layers["counts"] = a.X.copy()
    return a


@pytest.mark.parametrize("src_dtype", [np.float32, np.int64], ids=["same-X", "different-dtype"])
def test_x_copied_as_stored_reads_back_the_same(tmp_path: Path, src_dtype: type) -> None:
    src = tmp_path / "in.h5ad"
    _adata(src_dtype).write_h5ad(src, compression="gzip")
    a = ad.read_h5ad(src)
    a.X = sp.csr_matrix(a.X, dtype=np.float32)  # what read_singlecell keeps (or makes) in memory
    a.obsm["X_celllm"] = np.arange(100, dtype=np.float32).reshape(50, 2)
    a.obs["label"] = pd.Categorical(["x", "y"] * 25)
    plain, copied = tmp_path / "plain.h5ad", tmp_path / "copied.h5ad"
    write_h5ad_atomic(a, plain)
    write_h5ad_atomic(a, copied, compression_opts=1, x_from=src)
    p, c = ad.read_h5ad(plain), ad.read_h5ad(copied)
    assert c.X.dtype == np.float32 and (c.X != p.X).nnz == 0
    np.testing.assert_array_equal(c.obsm["X_celllm"], p.obsm["X_celllm"])
    assert list(c.obs["label"]) == list(p.obs["label"]) and list(c.var_names) == list(p.var_names)
    assert (c.layers["counts"] != p.layers["counts"]).nnz == 0
    with h5py.File(copied) as fc:  # the source's stored chunks (its gzip level 4) only when X is the file's
        assert fc["X/data"].compression_opts == (4 if src_dtype is np.float32 else 1)
        assert fc["obsm/X_celllm"].compression_opts == 1
