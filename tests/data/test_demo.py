"""The bundled demos open with nothing downloaded, and hold what the README says."""

from __future__ import annotations

import numpy as np
import pandas as pd

from app.data.demo import genotype_demo_paths, pbmc68k_counts


def test_pbmc_demo_has_integer_counts_and_ten_types() -> None:
    a = pbmc68k_counts()
    x = a.X.toarray()
    assert a.shape == (700, 765)
    assert np.all(x >= 0) and np.array_equal(x, np.rint(x))
    # every cell's recovered counts over these 765 genes are at most its total over all genes
    assert np.all(x.sum(1) <= a.obs["n_counts"].to_numpy() + 1e-3)
    assert a.obs["bulk_labels"].nunique() == 10


def test_genotype_demo_files_exist_and_agree() -> None:
    p = genotype_demo_paths()
    pheno = pd.read_csv(p["pheno"])
    causal = pd.read_csv(p["causal"])
    markers = pd.read_csv(p["map"])
    assert len(pheno) == 400 and {"trait", "family"} <= set(pheno.columns)
    assert set(causal["id"]) <= set(markers["id"])
