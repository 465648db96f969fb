"""2-D layouts of embeddings (no Qt; the window runs them in a worker thread): a fast preview, then a refined UMAP.

The preview is a PCA of all cells (exact from the covariance for up to 256 dimensions, randomized above):
tens of milliseconds for 100k x 32, so something shows at once. The refinement runs umap-learn on at most
``max_fit`` cells (initialised from the preview so the picture does not jump) and places the remaining cells
with ``transform``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np


def pca_preview(emb: np.ndarray, seed: int = 0) -> np.ndarray:
    """First two principal components (randomized SVD), float32 n x 2."""
    x = np.asarray(emb, dtype=np.float32)
    if x.shape[1] <= 2:
        return np.pad(x, ((0, 0), (0, 2 - x.shape[1])))
    if x.shape[1] <= 256:
        # exact PCA from the d x d covariance (one BLAS pass over the cells): 100k x 32 in ~20 ms, where
        # scikit-learn's randomized solver took ~1 s on a busy 2-core box
        mean = x.mean(0, dtype=np.float64)
        xc = x - mean.astype(np.float32)
        cov = (xc.T.astype(np.float64) @ xc.astype(np.float64)) / max(len(x) - 1, 1)
        _, vecs = np.linalg.eigh(cov)
        top = vecs[:, ::-1][:, :2]
        top *= np.sign(top[np.argmax(np.abs(top), axis=0), [0, 1]])  # a fixed sign: the map does not flip
        return (xc @ top.astype(np.float32)).astype(np.float32)
    from sklearn.decomposition import PCA

    sub = x if len(x) <= 200_000 else x[np.random.default_rng(seed).choice(len(x), 200_000, replace=False)]
    pca = PCA(n_components=2, svd_solver="randomized", random_state=seed).fit(sub)
    return pca.transform(x).astype(np.float32)


def umap_refine(emb: np.ndarray, init: np.ndarray | None = None, max_fit: int = 30_000, seed: int = 0,
                n_neighbors: int = 15, n_epochs: int | None = None) -> np.ndarray:
    """UMAP (umap-learn) of the embedding; fit on a subsample above ``max_fit`` cells, transform the rest."""
    import umap

    x = np.asarray(emb, dtype=np.float32)
    n = len(x)
    fit_idx = np.arange(n) if n <= max_fit else np.sort(np.random.default_rng(seed).choice(n, max_fit, replace=False))
    start: Any = "spectral"
    if init is not None:
        start = np.asarray(init, dtype=np.float32)[fit_idx]
        start = (start - start.mean(0)) / (start.std(0) + 1e-6) * 5.0
    reducer = umap.UMAP(n_neighbors=min(n_neighbors, max(2, len(fit_idx) - 1)), init=start,
                        random_state=seed, n_epochs=n_epochs, low_memory=True, n_jobs=1)
    fitted = reducer.fit_transform(x[fit_idx]).astype(np.float32)
    if len(fit_idx) == n:
        return fitted
    out = np.empty((n, 2), np.float32)
    out[fit_idx] = fitted
    rest = np.setdiff1d(np.arange(n), fit_idx)
    out[rest] = reducer.transform(x[rest]).astype(np.float32)
    return out


def timed(fn: Any, *args: Any, **kw: Any) -> tuple[Any, float]:
    """(result, seconds)."""
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t0
