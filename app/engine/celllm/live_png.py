"""Drawing the live map off-screen: one aligned 2-D layout and one PNG per refresh (``runs show RUN --live-png``).

Each refresh's UMAP starts from the previous refresh's layout (umap-learn's ``init=``), so a cell moves as the
model learns instead of the whole picture being re-randomised; refresh 0 starts from a spectral layout.
``next_layout`` is the same step the window can run in a worker thread.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def next_layout(emb: np.ndarray, prev: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
    """UMAP of ``emb`` (float32 n x 2), initialised from ``prev`` (the previous refresh's layout) when given:
    ``app.engine.layout.umap_refine`` with fewer epochs once it starts close to the answer (less drift), then
    rotated, reflected, scaled and shifted onto ``prev`` (orthogonal Procrustes): UMAP's optimiser may still
    turn a small map around, and a turned map reads as cells jumping although their neighbourhoods kept."""
    from app.engine.layout import umap_refine

    x = np.asarray(emb, dtype=np.float32)
    if len(x) < 4:
        return np.pad(x[:, :2], ((0, 0), (0, max(0, 2 - x.shape[1])))).astype(np.float32)
    xy = umap_refine(x, init=prev, seed=seed, n_epochs=200 if prev is not None else None)
    return xy if prev is None else align_to(xy, np.asarray(prev, dtype=np.float32))


def align_to(xy: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """``xy`` moved onto ``ref`` by the rotation/reflection, uniform scale and shift that fit it best."""
    from scipy.linalg import orthogonal_procrustes

    a, b = xy - xy.mean(0), ref - ref.mean(0)
    rot, _ = orthogonal_procrustes(a, b)
    scale = np.sqrt((b**2).sum() / max(float((a**2).sum()), 1e-12))
    return (a @ rot * scale + ref.mean(0)).astype(np.float32)


def _colours(cells: dict[str, Any], probs: np.ndarray | None, colour: str) -> tuple[np.ndarray | None, list[str]]:
    """Per-cell category codes (or None for a continuous colour) and the legend's names."""
    if colour == "confidence":
        return None, []
    if colour == "predicted" and probs is not None and cells.get("classes"):
        return np.asarray(probs).argmax(1), list(cells["classes"])
    values = cells.get("batches") if colour == "batch" else cells.get("labels")
    if not values:
        return np.zeros(int(cells["n_cells"]), np.int64), ["cells"]
    names = sorted(set(values))
    index = {v: i for i, v in enumerate(names)}
    return np.array([index[v] for v in values]), names


def write_live_pngs(run_dir: str | Path, out_dir: str | Path, colour: str = "label", seed: int = 0) -> list[Path]:
    """Write ``refresh-KKKK.png`` per refresh of the run's live map into ``out_dir``; returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from app.data.atomic import atomic_path
    from app.data.errors import DataError
    from app.engine.celllm import live

    idx, cells = live.read_index(run_dir), live.read_cells(run_dir)
    if not idx or not idx.get("refreshes") or cells is None:
        raise DataError("this run has no live map", run_dir,
                        "Train with --live-cells N (N > 0; the default is 5000) to record one.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prev = None
    paths = []
    cmap = plt.get_cmap("tab20")
    for r in idx["refreshes"]:
        xy = next_layout(np.asarray(live.load_refresh(run_dir, r)), prev, seed)
        prev = xy
        probs = live.load_refresh(run_dir, r, "probs")
        codes, names = _colours(cells, probs, colour)
        fig, ax = plt.subplots(figsize=(6, 5), dpi=100)
        if codes is None:
            conf = np.asarray(probs).max(1) if probs is not None else np.ones(len(xy))
            sc = ax.scatter(xy[:, 0], xy[:, 1], c=conf, s=3, cmap="viridis", vmin=0, vmax=1, linewidths=0)
            fig.colorbar(sc, ax=ax, label="confidence")
        else:
            for i, name in enumerate(names):
                m = codes == i
                ax.scatter(xy[m, 0], xy[m, 1], s=3, color=cmap(i % 20), label=name, linewidths=0)
            if 1 < len(names) <= 20:
                ax.legend(markerscale=4, fontsize=7, loc="best", frameon=False)
        q = r.get("quality", {})
        figs = ", ".join(f"{k} {v:.2f}" for k, v in q.items() if isinstance(v, int | float))
        ax.set_title(f"refresh {r['refresh']} (epoch {r['epoch']}, step {r['step']})\n{figs}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        path = out / f"refresh-{int(r['refresh']):04d}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", bbox_inches="tight")
        plt.close(fig)
        paths.append(path)
    return paths
