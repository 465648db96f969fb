"""How good is an embedding? The figures the live map reports at every refresh, on one subsample of cells.

- ``silhouette_label``: mean silhouette of the label groups, cosine distance (scikit-learn), in [-1, 1]:
  near 1 for well-separated labelled clusters, about 0 for random labels. (scib-metrics rescales it to
  ``(s + 1) / 2``; we keep the raw value, which reads 0 = no structure.)
- ``knn_accuracy``: leave-one-out kNN label accuracy, k = 15, cosine; chance = the majority-vote rate of
  random labels (about the largest class share).
- ``ilisi``: batch mixing as scib-metrics' ``ilisi_knn`` defines it: per cell, the inverse Simpson index of
  the batch labels among its 90 nearest neighbours (self excluded), weighted by a Gaussian kernel whose
  width is found by binary search to a perplexity of ``k / 3`` (50 halvings/doublings, tolerance 1e-5);
  the median over cells, rescaled ``(median - 1) / (n_batches - 1)`` to [0, 1]: 1 = perfectly mixed.
- ``graph_connectivity``: scib-metrics' definition: for every label, the share of its cells in the largest
  strongly connected component of the 15-nearest-neighbour graph restricted to that label; the mean.
- ``alignment`` / ``uniformity``: Wang & Isola (2020) on L2-normalised embeddings: ``E ||f(x) - f(y)||^2``
  over positive pairs (two views of one cell) and ``log E exp(-2 ||f(x) - f(y)||^2)`` over all pairs.
  Lower is better for both.

scib-metrics itself needs jax, too heavy for a lab desktop; these are faithful re-implementations tested on
synthetic embeddings against the definitions (``tests/engine/test_embedding_quality.py``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

KNN_K = 15
LISI_K = 90


def _codes(values: Any) -> np.ndarray:
    """Integer codes of a label/batch vector (missing values -> -1)."""
    import pandas as pd

    return np.asarray(pd.Categorical(np.asarray(values, dtype=object)).codes, dtype=np.int64)


def _unit(emb: np.ndarray) -> np.ndarray:
    x = np.asarray(emb, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def neighbours(emb: np.ndarray, k: int, metric: str = "euclidean") -> tuple[np.ndarray, np.ndarray]:
    """(distances, indices) of each cell's ``k`` nearest other cells (self excluded), [n, min(k, n-1)]."""
    from sklearn.neighbors import NearestNeighbors

    x = _unit(emb) if metric == "cosine" else np.asarray(emb, dtype=np.float64)
    n = len(x)
    k = int(min(k, n - 1))
    nn = NearestNeighbors(n_neighbors=k + 1).fit(x)  # euclidean on unit vectors ranks as cosine does
    dist, idx = nn.kneighbors(x)
    # drop each row's own entry (usually column 0; duplicates may put it elsewhere)
    own = idx == np.arange(n)[:, None]
    no_self = ~own.any(1)
    own[no_self, -1] = True  # a row whose self fell outside the k+1: drop its farthest instead
    keep = ~own
    return dist[keep].reshape(n, k), idx[keep].reshape(n, k)


def silhouette_label(emb: np.ndarray, labels: Any) -> float:
    """Silhouette of the label groups, cosine distance, in [-1, 1] (NaN with fewer than two labels)."""
    from sklearn.metrics import silhouette_score

    y = _codes(labels)
    ok = y >= 0
    if len(np.unique(y[ok])) < 2 or ok.sum() < 3:
        return float("nan")
    return float(silhouette_score(np.asarray(emb, dtype=np.float64)[ok], y[ok], metric="cosine"))


def knn_accuracy(emb: np.ndarray, labels: Any, k: int = KNN_K) -> float:
    """Leave-one-out kNN accuracy of the labels (majority of the ``k`` nearest others, cosine; ties go to
    the nearer neighbours' label)."""
    y = _codes(labels)
    ok = np.flatnonzero(y >= 0)
    if len(ok) < 2:
        return float("nan")
    _, idx = neighbours(np.asarray(emb)[ok], k, metric="cosine")
    yy = y[ok]
    nl = int(yy.max()) + 1
    nb = yy[idx]
    # votes weighted 1 + tiny rank bonus: a tie goes to the label of the closer neighbours
    w = 1.0 + 1e-6 * (idx.shape[1] - np.arange(idx.shape[1]))[None, :]
    votes = np.zeros((len(ok), nl))
    np.add.at(votes, (np.repeat(np.arange(len(ok)), idx.shape[1]), nb.ravel()), np.broadcast_to(w, nb.shape).ravel())
    return float(np.mean(votes.argmax(1) == yy))


def _simpson_row(d: np.ndarray, lab: np.ndarray, n_lab: int, perplexity: float, tol: float = 1e-5,
                 n_iter: int = 50) -> float:
    """Simpson index of one cell's neighbours (scib-metrics ``_compute_simpson_index_cell``)."""
    log_u = math.log(perplexity)

    def hbeta(beta: float) -> tuple[float, np.ndarray]:
        p = np.exp(-d * beta)
        s = p.sum()
        if s == 0:
            return 0.0, np.zeros_like(d)
        return math.log(s) + beta * float((d * p).sum()) / s, p / s

    beta, bmin, bmax = 1.0, -math.inf, math.inf
    h, p = hbeta(beta)
    hdiff = h - log_u
    for _ in range(n_iter):
        if abs(hdiff) < tol:
            break
        if hdiff > 0:
            bmin = beta
            beta = beta * 2 if bmax == math.inf else (beta + bmax) / 2
        else:
            bmax = beta
            beta = beta / 2 if bmin == -math.inf else (beta + bmin) / 2
        h, p = hbeta(beta)
        hdiff = h - log_u
    if h == 0:
        return 1.0
    s = np.bincount(lab, weights=p, minlength=n_lab)
    return float(s @ s)


def lisi(emb: np.ndarray, values: Any, k: int = LISI_K, perplexity: float | None = None) -> np.ndarray:
    """Per-cell LISI (inverse Simpson index of ``values`` among the ``k`` nearest neighbours), as
    scib-metrics' ``lisi_knn`` with euclidean distances and perplexity ``floor(k / 3)`` by default."""
    codes = _codes(values)
    dist, idx = neighbours(emb, k)
    perp = float(np.floor(idx.shape[1] / 3)) if perplexity is None else float(perplexity)
    perp = max(perp, 1.0)
    n_lab = int(codes.max()) + 1
    lab = codes[idx]
    return np.array([1.0 / _simpson_row(dist[i], lab[i], n_lab, perp) for i in range(len(codes))])


def ilisi(emb: np.ndarray, batches: Any, k: int = LISI_K, scale: bool = True) -> float:
    """Integration LISI of the batches (scib-metrics ``ilisi_knn``): median per-cell LISI, rescaled to
    [0, 1] by ``(x - 1) / (n_batches - 1)``; 1 = batches perfectly mixed, 0 = separated."""
    nb = len(np.unique(_codes(batches)))
    if nb < 2 or len(emb) < 3:
        return float("nan")
    v = float(np.nanmedian(lisi(emb, batches, k)))
    return (v - 1) / (nb - 1) if scale else v


def graph_connectivity(emb: np.ndarray, labels: Any, k: int = KNN_K) -> float:
    """scib-metrics ``graph_connectivity``: mean over labels of the share of the label's cells in the
    largest strongly connected component of the kNN graph restricted to that label."""
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components

    y = _codes(labels)
    n = len(y)
    if n < 3:
        return float("nan")
    _, idx = neighbours(emb, k)
    rows = np.repeat(np.arange(n), idx.shape[1])
    g = sp.csr_matrix((np.ones(rows.size), (rows, idx.ravel())), shape=(n, n))
    res = []
    for lab in np.unique(y[y >= 0]):
        m = np.flatnonzero(y == lab)
        _, comp = connected_components(g[m][:, m], directed=True, connection="strong")
        res.append(np.bincount(comp).max() / len(m))
    return float(np.mean(res)) if res else float("nan")


def alignment(za: np.ndarray, zb: np.ndarray, alpha: float = 2.0) -> float:
    """Wang & Isola alignment: mean ``||f(x) - f(y)||^alpha`` over positive pairs (rows of ``za``/``zb``)."""
    a, b = _unit(za), _unit(zb)
    return float(np.mean(np.linalg.norm(a - b, axis=1) ** alpha))


def uniformity(z: np.ndarray, t: float = 2.0, max_cells: int = 5000, seed: int = 0) -> float:
    """Wang & Isola uniformity: ``log mean exp(-t ||f(x) - f(y)||^2)`` over all pairs of distinct cells (a
    seeded subsample of ``max_cells`` above that). Lower = more uniform on the sphere."""
    x = _unit(z)
    if len(x) > max_cells:
        x = x[np.sort(np.random.default_rng(seed).choice(len(x), max_cells, replace=False))]
    n = len(x)
    if n < 2:
        return float("nan")
    sq = np.maximum(2.0 - 2.0 * (x @ x.T), 0.0)  # squared distance of unit vectors
    iu = np.triu_indices(n, 1)
    v = -t * sq[iu]
    m = v.max()
    return float(m + np.log(np.mean(np.exp(v - m))))


def quality(emb: np.ndarray, labels: Any = None, batches: Any = None) -> dict[str, float]:
    """The figures for one refresh: ``uniformity`` always; ``silhouette`` + ``knn_accuracy`` with labels;
    ``ilisi`` with batches, and ``graph_connectivity`` (over the labels, as scib-metrics defines it) when
    there are both."""
    out: dict[str, float] = {"uniformity": uniformity(emb)}
    if labels is not None:
        out["silhouette"] = silhouette_label(emb, labels)
        out["knn_accuracy"] = knn_accuracy(emb, labels)
    if batches is not None:
        out["ilisi"] = ilisi(emb, batches)
        if labels is not None:
            out["graph_connectivity"] = graph_connectivity(emb, labels)
    return out


def pca_reference(counts: Any, n_top_genes: int = 2000, n_comps: int = 50, seed: int = 0) -> np.ndarray:
    """The reference embedding: PCA of log-normalised highly variable genes (scanpy's "seurat" flavour),
    ``n_comps`` components (fewer when there are fewer cells or genes), float32."""
    from sklearn.decomposition import PCA

    from app.engine.celllm.baseline import log_normalise, select_hvg

    x = log_normalise(counts)
    genes = select_hvg(x, n_top_genes)
    xh = x[:, genes].toarray()
    k = int(max(1, min(n_comps, xh.shape[0] - 1, xh.shape[1])))
    return PCA(n_components=k, random_state=seed).fit_transform(xh).astype(np.float32)
