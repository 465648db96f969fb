"""The baseline every CellLM annotation result is shown beside: L1-regularised logistic regression on
log-normalised highly variable genes.

Independent evaluations (clinicalml/sc-foundation-eval, scEval) found this simple model matches or beats
scBERT-like models on cell-type annotation, so users must see it on the same split. Highly variable genes
are chosen on the training cells only, so nothing about the test cells leaks into the features.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp

from app.engine.celllm.splits import classification_scores


def log_normalise(counts: sp.spmatrix | np.ndarray, target_sum: float = 1e4) -> sp.csr_matrix:
    """Counts per cell scaled to ``target_sum`` then ``log1p`` (natural log, as scanpy), as CSR float32."""
    x = sp.csr_matrix(counts, dtype=np.float32)
    totals = np.asarray(x.sum(axis=1)).ravel()
    scale = np.divide(target_sum, totals, out=np.zeros_like(totals), where=totals > 0)
    x = sp.diags(scale.astype(np.float32)) @ x
    x.data = np.log1p(x.data)
    return sp.csr_matrix(x)


def select_hvg(lognorm_train: sp.csr_matrix, n_top: int = 2000) -> np.ndarray:
    """Indices of the ``n_top`` highly variable genes (scanpy, flavour "seurat" on log data) computed on
    the training cells passed in. Falls back to all expressed genes when there are few genes."""
    import anndata as ad
    import scanpy as sc

    expressed = np.flatnonzero(np.asarray((lognorm_train > 0).sum(axis=0)).ravel() > 0)
    if len(expressed) <= n_top:
        return expressed
    a = ad.AnnData(lognorm_train[:, expressed])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.highly_variable_genes(a, n_top_genes=n_top, flavor="seurat")
    return expressed[np.asarray(a.var["highly_variable"].to_numpy(), dtype=bool)]


def _l1_logistic(C: float, seed: int) -> object:
    """An L1-penalised liblinear LogisticRegression across scikit-learn versions (``penalty`` is
    deprecated from 1.8 in favour of ``l1_ratio``)."""
    import sklearn
    from sklearn.linear_model import LogisticRegression

    major, minor = (int(v) for v in sklearn.__version__.split(".")[:2])
    kw: dict = {"l1_ratio": 1.0} if (major, minor) >= (1, 8) else {"penalty": "l1"}
    return LogisticRegression(solver="liblinear", C=C, class_weight="balanced", max_iter=500,
                              random_state=seed, **kw)


def logistic_baseline(counts: sp.spmatrix | np.ndarray, labels: np.ndarray, train: np.ndarray,
                      test: np.ndarray, classes: list[str], *, n_top_genes: int = 2000, C: float = 0.5,
                      seed: int = 0) -> dict:
    """Fit L1 logistic regression (liblinear, one-vs-rest, balanced class weights) on the train cells'
    log-normalised HVGs and score the test cells. Returns the ``classification_scores`` dict plus
    ``n_genes`` and ``predictions`` (test-cell labels)."""
    from sklearn.multiclass import OneVsRestClassifier

    x = log_normalise(counts)
    genes = select_hvg(x[train], n_top_genes)
    xtr, xte = x[train][:, genes], x[test][:, genes]
    labels = np.asarray(labels).astype(str)
    # liblinear is fast and exact for L1 but binary-only since scikit-learn 1.8: wrap it one-vs-rest
    # (what LogisticRegression(multi_class="ovr") used to do).
    clf = OneVsRestClassifier(_l1_logistic(C, seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings on tiny data are not the user's concern
        clf.fit(xtr, labels[train])
    pred = clf.predict(xte)
    out = classification_scores(labels[test], pred, classes)
    out["n_genes"] = len(genes)
    out["predictions"] = pred.tolist()
    return out
