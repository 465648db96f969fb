"""PCA scores for DNNGP: 95 % variance, U*S, loadings kept to project new lines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app.data.errors import DataError
from app.data.genotype import GenotypePCA, additive, fit_pca, read_genotypes

pytestmark = pytest.mark.usefixtures("one_blas_thread")




@pytest.mark.shared_data
def test_wheat_pc95_reproduces_dnngp_input(shared_data: Path) -> None:
    d = shared_data / "genotype" / "wheat599_numeric"
    x = additive(read_genotypes(d / "wheat.X"))
    pca = fit_pca(x, variance=0.95)
    assert pca.n_components == 251  # README / spec: 251 PCs
    ref = pd.read_csv(d / "dnngp_example" / "wheat599_pc95.tsv", sep="\t", index_col=0).to_numpy()
    scores = pca.transform(x)
    assert scores.shape == ref.shape == (599, 251)
    for j in (0, 1, 10, 100, 250):
        assert abs(np.corrcoef(scores[:, j], ref[:, j])[0, 1]) > 0.9999
        assert scores[:, j].std() / ref[:, j].std() == pytest.approx(1.0, rel=1e-3)  # U*S, not whitened


def test_scores_are_us_and_new_lines_project() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 3, size=(40, 120)).astype(np.float32)
    train, test = x[:30], x[30:]
    pca = fit_pca(train, n_components=5)
    xc = train - train.mean(axis=0)
    u, s, vt = np.linalg.svd(xc.astype(np.float64), full_matrices=False)
    np.testing.assert_allclose(np.abs(pca.transform(train)), np.abs(u[:, :5] * s[:5]), atol=1e-4)
    np.testing.assert_allclose(np.abs(pca.transform(test)), np.abs((test - train.mean(axis=0)) @ vt[:5].T), atol=1e-4)
    again = GenotypePCA.from_arrays(pca.to_arrays())
    np.testing.assert_array_equal(again.transform(test), pca.transform(test))
    full = fit_pca(train, variance=1.0)
    assert full.total_variance_ratio == pytest.approx(1.0) and full.n_components <= 29
    tall = fit_pca(x[:, :10], variance=0.5)  # more lines than markers: plain SVD path
    assert 1 <= tall.n_components <= 10
    with pytest.raises(DataError, match="fitted on 120 markers"):
        pca.transform(test[:, :50])
    with pytest.raises(DataError, match="NaN"):
        fit_pca(np.full((3, 4), np.nan))
