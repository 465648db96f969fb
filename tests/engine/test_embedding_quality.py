"""Embedding-quality figures on synthetic embeddings whose answer is known by construction."""

from __future__ import annotations

import numpy as np
import pytest

from app.engine import embedding_quality as eq


def clusters(n_per: int, k: int, dim: int = 16, spread: float = 0.05, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``k`` tight clusters around orthogonal directions (well separated in cosine distance)."""
    rng = np.random.default_rng(seed)
    centres = np.eye(dim)[:k] * 5.0
    x = np.concatenate([c + spread * rng.standard_normal((n_per, dim)) for c in centres])
    y = np.repeat(np.arange(k), n_per)
    return x, y


def test_separated_clusters_score_near_one() -> None:
    x, y = clusters(100, 4)
    assert eq.silhouette_label(x, y) > 0.95
    assert eq.knn_accuracy(x, y) == 1.0
    # scib-metrics uses strongly connected components of the directed kNN graph: a cell nobody lists among
    # its 15 neighbours is its own component, so even clean blobs score a little under 1
    assert eq.graph_connectivity(x, y) > 0.95


def test_random_labels_score_about_zero_and_chance() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((600, 16))
    y = rng.integers(0, 4, 600)
    assert abs(eq.silhouette_label(x, y)) < 0.05
    assert abs(eq.knn_accuracy(x, y) - 0.25) < 0.08  # chance with 4 balanced classes


def test_mixed_batches_high_ilisi_separated_low() -> None:
    rng = np.random.default_rng(2)
    x, y = clusters(150, 2, spread=0.3)
    mixed = rng.integers(0, 2, len(y))  # batch independent of position: perfectly mixed
    assert eq.ilisi(x, mixed) > 0.85
    assert eq.ilisi(x, y) < 0.05  # each batch its own cluster: no mixing
    # unscaled LISI lies between 1 and the number of batches
    v = eq.lisi(x, mixed)
    assert np.all(v >= 1 - 1e-9) and np.all(v <= 2 + 1e-9)


def test_simpson_matches_definition_for_uniform_weights() -> None:
    # equal distances -> equal kernel weights whatever beta: Simpson = sum of squared label shares
    d = np.ones(9)
    lab = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    assert eq._simpson_row(d, lab, 3, perplexity=3.0) == pytest.approx(1 / 3)
    lab2 = np.array([0] * 6 + [1] * 3)
    assert eq._simpson_row(d, lab2, 2, perplexity=3.0) == pytest.approx((6 / 9) ** 2 + (3 / 9) ** 2)


def test_graph_connectivity_detects_a_split_label() -> None:
    x, y = clusters(50, 2)
    y2 = np.zeros_like(y)  # one label spread over two far-apart clusters: two components of 50 each
    assert 0.4 <= eq.graph_connectivity(x, y2) <= 0.5


def test_alignment_and_uniformity() -> None:
    rng = np.random.default_rng(3)
    z = rng.standard_normal((500, 8))
    assert eq.alignment(z, z) == pytest.approx(0.0, abs=1e-12)
    assert eq.alignment(z, -z) == pytest.approx(4.0)  # antipodal unit vectors: squared distance 4
    collapsed = np.ones((200, 8)) + 1e-9 * rng.standard_normal((200, 8))
    assert eq.uniformity(collapsed) == pytest.approx(0.0, abs=1e-6)  # all at one point: log(1)
    # uniform on the sphere is far lower (more negative)
    assert eq.uniformity(z) < -1.5
    # against a direct O(n^2) evaluation of the definition
    u = z[:50] / np.linalg.norm(z[:50], axis=1, keepdims=True)
    pairs = [np.exp(-2 * np.sum((u[i] - u[j]) ** 2)) for i in range(50) for j in range(i + 1, 50)]
    assert eq.uniformity(z[:50]) == pytest.approx(np.log(np.mean(pairs)))


def test_quality_keys_and_pca_reference() -> None:
    x, y = clusters(40, 3)
    q = eq.quality(x, y, batches=np.arange(len(y)) % 2)
    assert set(q) == {"uniformity", "silhouette", "knn_accuracy", "ilisi", "graph_connectivity"}
    rng = np.random.default_rng(4)
    counts = rng.poisson(1.0, (60, 300)).astype(np.float32)
    counts[:30, :40] += 30  # two populations
    ref = eq.pca_reference(counts, n_top_genes=100, n_comps=5)
    assert ref.shape == (60, 5)
    assert eq.knn_accuracy(ref, np.repeat([0, 1], 30)) == 1.0
