"""The L1-logistic HVG baseline shown beside every CellLM annotation result."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from app.engine.celllm.baseline import log_normalise, logistic_baseline, select_hvg
from app.engine.celllm.splits import stratified_split


def _toy(seed: int = 0) -> tuple[sp.csr_matrix, np.ndarray]:
    """Three cell types, each with its own 5 marker genes over Poisson background."""
    rng = np.random.default_rng(seed)
    n, g = 150, 60
    y = np.repeat(np.array(["T", "B", "NK"]), n // 3)
    lam = np.full((n, g), 1.0)
    for k, cls in enumerate(["T", "B", "NK"]):
        lam[y == cls, k * 5:(k + 1) * 5] = 12.0
    return sp.csr_matrix(rng.poisson(lam).astype(np.float32)), y


def test_log_normalise_sums() -> None:
    x = sp.csr_matrix(np.array([[1.0, 3.0], [0.0, 0.0]], dtype=np.float32))
    ln = log_normalise(x).toarray()
    assert np.allclose(np.expm1(ln[0]).sum(), 1e4, rtol=1e-4)
    assert np.all(ln[1] == 0)  # an empty cell stays zero, no division by zero


def test_baseline_learns_markers_on_split() -> None:
    x, y = _toy()
    s = stratified_split(y, seed=0)
    out = logistic_baseline(x, y, s.train, s.test, ["B", "NK", "T"], n_top_genes=30)
    assert out["accuracy"] > 0.9 and out["macro_f1"] > 0.9
    assert len(out["predictions"]) == len(s.test)
    assert out["n_genes"] == 30
    assert out["confusion"]["labels"] == ["B", "NK", "T"]


def test_hvg_uses_given_cells_only() -> None:
    x, _ = _toy()
    ln = log_normalise(x)
    genes = select_hvg(ln[:10], n_top=20)
    assert len(genes) == 20 and genes.max() < x.shape[1]
