"""The baseline every CellLM annotation result is shown beside: logistic regression as CellTypist trains it.

A weak baseline flatters the deep model, so the default (``method="celltypist"``) follows CellTypist's
custom-model recipe (celltypist/train.py, v1.7.1, with ``feature_selection=True`` as its tutorials use it):
log1p of counts normalised to 1e4 per cell; genes with no training counts dropped; each gene standardised
with the training cells' mean and SD and clipped at +10; a first SGD logistic pass picks the ``top_genes``
genes of largest |coefficient| per class (union over classes); an L2 logistic regression (lbfgs, C = 1) is
refitted on those genes. Every statistic (scaling, gene choice) comes from the training cells only, so
nothing about the test cells leaks in. ``method="l1_hvg"`` keeps the earlier, weaker baseline (L1 logistic
regression on 2,000 highly variable genes, as sc-foundation-eval's "L1-LR") for comparison.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

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


METHODS = {
    "celltypist": "logistic regression as CellTypist trains it (scaled log-normalised genes, SGD-selected top "
                  "genes per class, L2 lbfgs refit; training cells only)",
    "l1_hvg": "L1 logistic regression on log-normalised HVGs (train cells only)",
}
SGD_EPOCHS = 30
"""Epochs of the gene-ranking SGD pass (see ``celltypist_recipe``)."""
MAX_DENSE_VALUES = 4e8
"""Scaling densifies the training matrix (as CellTypist does); above this many values (1.6 GB of float32)
the genes are first cut to the most variable ones so memory stays bounded."""


def standardise(dense: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """CellTypist's input scaling of dense log-normalised rows: (x - mean) / scale, clipped at +10 (the upper
    side only, as CellTypist). The one home of that rule: the baseline and the fine-tuned linear readout."""
    out = (dense - mean) / scale
    np.minimum(out, 10.0, out=out)
    return out


def _scaled(x: sp.csr_matrix, train: np.ndarray, genes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train-fitted standardisation of ``genes``: (mean, scale, clipped scaled training matrix)."""
    xtr = x[train][:, genes].toarray()
    mean = xtr.mean(axis=0)
    sd = xtr.std(axis=0)
    scale = np.where(sd > 0, sd, 1.0).astype(np.float32)
    return mean, scale, standardise(xtr, mean, scale)


@dataclass
class FittedLinear:
    """A fitted CellTypist-recipe model: the training-data gene columns it uses, their training mean and scale,
    and the multinomial logistic regression's ``coef`` [K, G] / ``intercept`` [K] over ``classes`` (sorted)."""

    genes: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    classes: list[str]

    def scaled(self, x: sp.csr_matrix, rows: np.ndarray) -> np.ndarray:
        """The model's input for ``rows`` of log-normalised ``x`` (same columns as training)."""
        return standardise(x[rows][:, self.genes].toarray(), self.mean, self.scale)

    def predict(self, x: sp.csr_matrix, rows: np.ndarray) -> np.ndarray:
        """Predicted class labels of ``rows``."""
        logits = self.scaled(x, rows) @ self.coef.T + self.intercept
        return np.asarray(self.classes)[logits.argmax(1)]


def fit_celltypist(x: sp.csr_matrix, labels: np.ndarray, train: np.ndarray, *, top_genes: int = 300,
                   seed: int = 0) -> FittedLinear:
    """CellTypist's ``train(..., feature_selection=True)`` on log-normalised ``x``, fitted on ``train`` only (see
    the module docstring)."""
    from sklearn.linear_model import LogisticRegression, SGDClassifier

    totals = np.asarray(x[train].sum(axis=0)).ravel()
    genes = np.flatnonzero(totals > 0)
    if len(train) * len(genes) > MAX_DENSE_VALUES:
        genes = select_hvg(x[train], max(1000, int(MAX_DENSE_VALUES // max(len(train), 1))))
    _, _, xtr = _scaled(x, train, genes)
    ytr = np.asarray(labels)[train]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings on tiny data are not the user's concern
        # CellTypist runs this pass to convergence (hundreds of epochs, most of its time); it only ranks genes
        # for the refit, and SGD_EPOCHS epochs rank them as well (bench annotate), several times faster.
        sgd = SGDClassifier(loss="log_loss", alpha=1e-4, random_state=seed, n_jobs=1,
                            max_iter=SGD_EPOCHS).fit(xtr, ytr)
        coef = np.abs(np.atleast_2d(sgd.coef_))
        k = min(int(top_genes), coef.shape[1])
        picked = np.unique(np.argsort(-coef, axis=1)[:, :k].ravel())
        genes = genes[picked]
        mean, scale, xtr = _scaled(x, train, genes)
        lr = LogisticRegression(C=1.0, solver="lbfgs", max_iter=1000).fit(xtr, ytr)
    w, b = np.atleast_2d(lr.coef_), np.atleast_1d(lr.intercept_)
    if len(lr.classes_) == 2 and w.shape[0] == 1:  # binary: one logit z; softmax over [-z/2, z/2] is the same
        w, b = np.vstack([-w / 2, w / 2]), np.array([-b[0] / 2, b[0] / 2])
    return FittedLinear(genes, mean.astype(np.float32), scale.astype(np.float32), w.astype(np.float32),
                        b.astype(np.float32), [str(c) for c in lr.classes_])


def celltypist_recipe(x: sp.csr_matrix, labels: np.ndarray, train: np.ndarray, test: np.ndarray, *,
                      top_genes: int = 300, seed: int = 0) -> tuple[np.ndarray, int]:
    """CellTypist's recipe (``fit_celltypist``): predicted labels of the ``test`` cells and the number of genes of
    the final model."""
    fit = fit_celltypist(x, labels, train, top_genes=top_genes, seed=seed)
    return fit.predict(x, test), len(fit.genes)


def logistic_baseline(counts: sp.spmatrix | np.ndarray, labels: np.ndarray, train: np.ndarray,
                      test: np.ndarray, classes: list[str], *, n_top_genes: int = 2000, C: float = 0.5,
                      seed: int = 0, method: str = "celltypist", lognorm: sp.csr_matrix | None = None,
                      keep_fit: bool = False) -> dict:
    """Fit the baseline on the train cells and score the test cells. ``method``: ``celltypist`` (default, see
    ``celltypist_recipe``) or ``l1_hvg`` (L1 logistic regression, liblinear, one-vs-rest, balanced class
    weights, on ``n_top_genes`` log-normalised HVGs, penalty ``C``). ``lognorm`` reuses an already
    log-normalised matrix. Returns the ``classification_scores`` dict plus ``n_genes``, ``method`` (a
    description) and ``predictions`` (test-cell labels); with ``keep_fit`` (celltypist only) also ``fit``, the
    ``FittedLinear`` (the ``cls+linear`` readout starts from it)."""
    from sklearn.multiclass import OneVsRestClassifier

    if method not in METHODS:
        raise ValueError(f"unknown baseline method {method!r}; use one of {', '.join(METHODS)}")
    x = log_normalise(counts) if lognorm is None else lognorm
    labels = np.asarray(labels).astype(str)
    if method == "celltypist":
        fit = fit_celltypist(x, labels, np.asarray(train), seed=seed)
        pred = fit.predict(x, np.asarray(test))
        out = classification_scores(labels[test], pred, classes)
        out.update(n_genes=len(fit.genes), method=METHODS[method], predictions=pred.tolist())
        if keep_fit:
            out["fit"] = fit
        return out
    genes = select_hvg(x[train], n_top_genes)
    xtr, xte = x[train][:, genes], x[test][:, genes]
    # liblinear is fast and exact for L1 but binary-only since scikit-learn 1.8: wrap it one-vs-rest
    # (what LogisticRegression(multi_class="ovr") used to do).
    clf = OneVsRestClassifier(_l1_logistic(C, seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings on tiny data are not the user's concern
        clf.fit(xtr, labels[train])
    pred = clf.predict(xte)
    out = classification_scores(labels[test], pred, classes)
    out["n_genes"] = len(genes)
    out["method"] = METHODS[method]
    out["predictions"] = pred.tolist()
    return out
