"""Principal-component scores of a genotype matrix, as DNNGP's input (with loadings kept for new lines).

DNNGP centres the marker columns (no scaling), takes the SVD and keeps the smallest number of PCs that
explain at least 95 % of the variance; the features are the raw scores U·S. :func:`fit_pca` fits on whichever
lines the caller passes (all genotyped lines, as the original, or training lines only) and returns a
:class:`GenotypePCA` whose :meth:`~GenotypePCA.transform` projects any lines onto the same axes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.data.errors import DataError


@dataclass
class GenotypePCA:
    """A fitted PCA: ``scores = (x - mean) @ components.T`` (= U·S on the fitted lines).

    Attributes:
        mean: (m,) column means of the fitted lines.
        components: (k, m) unit-length loadings (rows of V^T).
        singular_values: (k,) singular values.
        explained_variance_ratio: (k,) share of the total variance of each PC.
        total_variance_ratio: cumulative share explained by the k PCs.
    """

    mean: np.ndarray
    components: np.ndarray
    singular_values: np.ndarray
    explained_variance_ratio: np.ndarray

    @property
    def n_components(self) -> int:
        return int(self.components.shape[0])

    @property
    def n_markers(self) -> int:
        return int(self.components.shape[1])

    @property
    def total_variance_ratio(self) -> float:
        return float(self.explained_variance_ratio.sum())

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Scores (n, k) float32 of lines ``x`` (n, m) in the additive coding (missing already imputed)."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_markers:
            raise DataError(
                f"PCA was fitted on {self.n_markers} markers but got an array of shape {x.shape}",
                None,
                "use the same markers (same QC) for the new lines as for the fitted ones",
            )
        return ((x - self.mean) @ self.components.T).astype(np.float32)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Arrays to save with a model (e.g. in safetensors)."""
        return {
            "pca_mean": self.mean.astype(np.float64),
            "pca_components": self.components.astype(np.float64),
            "pca_singular_values": self.singular_values.astype(np.float64),
            "pca_explained_variance_ratio": self.explained_variance_ratio.astype(np.float64),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> GenotypePCA:
        """Inverse of :meth:`to_arrays`."""
        return cls(
            mean=np.asarray(arrays["pca_mean"], dtype=np.float64),
            components=np.asarray(arrays["pca_components"], dtype=np.float64),
            singular_values=np.asarray(arrays["pca_singular_values"], dtype=np.float64),
            explained_variance_ratio=np.asarray(arrays["pca_explained_variance_ratio"], dtype=np.float64),
        )


def fit_pca(x: np.ndarray, variance: float = 0.95, n_components: int | None = None) -> GenotypePCA:
    """Fit a PCA on lines ``x`` (n, m) in the additive coding (no missing values; see ``additive``).

    Args:
        x: the lines to fit on (e.g. all genotyped lines, or the training fold only).
        variance: keep the smallest number of PCs explaining at least this share of the variance
            (DNNGP: 0.95); ignored when ``n_components`` is given.
        n_components: a fixed number of PCs instead.

    Uses the n x n Gram matrix when markers outnumber lines (fast for p >> n, e.g. 374 x 36,901).
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise DataError(f"PCA needs a 2-D matrix with at least 2 lines, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise DataError("PCA input has missing (NaN) values", None, "impute first, e.g. with additive()")
    if not 0.0 < variance <= 1.0:
        raise DataError(f"variance must be in (0, 1], got {variance}")
    mean = x.mean(axis=0)
    xc = x - mean
    n, m = xc.shape
    if m > n:
        gram = xc @ xc.T
        evals, evecs = np.linalg.eigh(gram)
        order = np.argsort(evals)[::-1]
        evals = np.clip(evals[order], 0.0, None)
        s = np.sqrt(evals)
        keep = s > s[0] * 1e-10 if s[0] > 0 else np.zeros_like(s, dtype=bool)
        u = evecs[:, order][:, keep]
        s = s[keep]
        vt = (u.T @ xc) / s[:, None]
    else:
        _, s, vt = np.linalg.svd(xc, full_matrices=False)
        keep = s > (s[0] * 1e-10 if len(s) and s[0] > 0 else np.inf)
        s, vt = s[keep], vt[keep]
    if len(s) == 0:
        raise DataError(
            "all lines have the same genotype: no variance for a PCA",
            None,
            "check the marker QC (monomorphic markers only?)",
        )
    var = s**2
    ratio = var / var.sum()
    if n_components is not None:
        k = max(1, min(int(n_components), len(s)))
    else:
        k = int(np.searchsorted(np.cumsum(ratio), variance - 1e-12) + 1)
        k = min(k, len(s))
    # Fix the sign of each PC (largest absolute loading positive) so results are reproducible.
    vt = vt[:k]
    flip = np.sign(vt[np.arange(k), np.abs(vt).argmax(axis=1)])
    vt = vt * flip[:, None]
    return GenotypePCA(mean=mean, components=vt, singular_values=s[:k], explained_variance_ratio=ratio[:k])
