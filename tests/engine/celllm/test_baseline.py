"""The baseline shown beside every CellLM annotation result: CellTypist's recipe (default) and L1-LR on HVGs."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from app.engine.celllm.baseline import METHODS, celltypist_recipe, log_normalise, logistic_baseline, select_hvg
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


@pytest.mark.parametrize("method", ["celltypist", "l1_hvg"])
def test_baseline_learns_markers_on_split(method: str) -> None:
    x, y = _toy()
    s = stratified_split(y, seed=0)
    out = logistic_baseline(x, y, s.train, s.test, ["B", "NK", "T"], n_top_genes=30, method=method)
    assert out["accuracy"] > 0.9 and out["macro_f1"] > 0.9
    assert len(out["predictions"]) == len(s.test)
    assert out["confusion"]["labels"] == ["B", "NK", "T"]
    assert out["method"] == METHODS[method]
    if method == "l1_hvg":
        assert out["n_genes"] == 30


def test_celltypist_recipe_selects_marker_genes_per_class() -> None:
    """The SGD pass ranks genes per class: with top_genes=5 the 15 marker genes are exactly what is kept."""
    x, y = _toy()
    s = stratified_split(y, seed=0)
    pred, n_genes = celltypist_recipe(log_normalise(x), y, s.train, s.test, top_genes=5)
    assert n_genes <= 15 and (pred == y[s.test]).mean() > 0.9


def test_celltypist_recipe_scales_with_training_cells_only() -> None:
    """Changing the test cells' values must not change what the model learned (nothing leaks from test)."""
    x, y = _toy()
    s = stratified_split(y, seed=0)
    ln = log_normalise(x).tolil()
    a, _ = celltypist_recipe(ln.tocsr(), y, s.train, s.test)
    ln2 = ln.copy()
    ln2[s.test[:1], :] = 0.0  # one test cell emptied: only its own prediction may change
    b, _ = celltypist_recipe(ln2.tocsr(), y, s.train, s.test)
    assert np.array_equal(a[1:], b[1:])


def test_unknown_method_refused() -> None:
    x, y = _toy()
    s = stratified_split(y, seed=0)
    with pytest.raises(ValueError, match="unknown baseline method"):
        logistic_baseline(x, y, s.train, s.test, ["B", "NK", "T"], method="svm")


def test_hvg_uses_given_cells_only() -> None:
    x, _ = _toy()
    ln = log_normalise(x)
    genes = select_hvg(ln[:10], n_top=20)
    assert len(genes) == 20 and genes.max() < x.shape[1]
