"""The live cell map of a training run, without Qt: its refreshes, their aligned 2-D layouts, what to colour by.

The engine (``app.engine.celllm.live``) embeds a fixed subsample of cells before the first step and at every
refresh (epoch end of a fine-tune, every K steps of pretraining) and writes ``RUN/live/`` (``cells.json`` once,
``emb-KKKK.npy`` / ``probs-KKKK.npy`` per refresh, ``index.json`` listing them with their quality figures).
``LiveMap`` holds what the window knows of them; views bind to its events (psygnal): ``refreshes`` (the index
grew), ``layout_ready(k)`` (refresh k has a layout), ``shown`` (which refresh the map shows), ``colour_by``.

Each layout starts from the previous one, so cells move rather than jump: ``live_layout`` moves the previous
layout halfway toward the PCA of the refresh's embedding (exact, from the d x d covariance: milliseconds for
5,000 cells) turned onto it (orthogonal Procrustes); with ``method="umap"`` it takes the engine's
step (``app.engine.celllm.live_png.next_layout``: umap-learn initialised from the previous layout, ``init=``),
aligned the same way. Aligned PCA is the default: umap-learn's first call in a process compiles its numba
kernels (measured here: 332 s on the 2-core machine at load 10; later calls 1.7-4 s for 5,000 cells), which a
live view cannot wait for.
Layouts are computed in a worker thread (``app.ui.live_view``), never on the GUI thread.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from psygnal import Signal, SignalGroup, SignalGroupDescriptor

COLOUR_BY = ("label", "predicted", "confidence", "batch")
METHODS = ("pca", "umap")


def procrustes_to(xy: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """``xy`` rotated/reflected, scaled and shifted to best match ``ref`` (least squares, same rows)."""
    from scipy.linalg import orthogonal_procrustes

    a = np.asarray(xy, np.float64)
    b = np.asarray(ref, np.float64)
    ma, mb = a.mean(0), b.mean(0)
    a0, b0 = a - ma, b - mb
    r, _ = orthogonal_procrustes(a0, b0)
    rot = a0 @ r
    scale = float((rot * b0).sum() / max((rot * rot).sum(), 1e-12))
    return (rot * scale + mb).astype(np.float32)


def _continuation(x: np.ndarray, prev: np.ndarray, m: int = 4) -> np.ndarray:
    """Where the cells would sit if the previous layout only followed the embedding's change: the least-squares
    map from the new embedding's top ``m`` principal components onto the previous layout."""
    xc = x.astype(np.float64) - x.mean(0)
    _, vecs = np.linalg.eigh(xc.T @ xc)
    p = xc @ vecs[:, ::-1][:, :min(m, x.shape[1])]
    mean = prev.mean(0)
    w, *_ = np.linalg.lstsq(p, prev - mean, rcond=None)
    return (p @ w + mean).astype(np.float32)


def live_layout(emb: np.ndarray, prev: np.ndarray | None = None, method: str = "pca", seed: int = 0) -> np.ndarray:
    """A 2-D layout of one refresh's embedding, started from the previous refresh's layout ``prev``.

    ``pca``: halfway between the continuation of ``prev`` and the new embedding's own principal plane turned
    onto ``prev`` (Procrustes): one relaxation step from the old picture toward the new one, so cells move
    smoothly and the map converges to the PCA view as the embedding settles. On a 3-epoch fine-tune of 300
    PBMCs, plain aligned PCA let one axis jump (r = 0.30 between epochs 0 and 1; 0.85 this way) and the pure
    continuation hid what the model learned (label silhouette of the map 0.25 instead of 0.30).
    ``umap``: the engine's step (umap-learn initialised from ``prev``), aligned the same way."""
    from app.engine.layout import pca_preview

    x = np.asarray(emb, np.float32)
    aligned = prev is not None and len(prev) == len(x) and len(x) >= 5
    if method == "umap":
        from app.engine.celllm.live_png import next_layout  # the CLI's PNGs take the same step

        xy = next_layout(x, prev if aligned else None, seed)
        if aligned:
            xy = procrustes_to(xy, prev)
    else:
        xy = pca_preview(x, seed=seed)
        if aligned:
            xy = (procrustes_to(xy, prev) + _continuation(x, np.asarray(prev, np.float32))) / 2
    return np.ascontiguousarray(xy, dtype=np.float32)


class LiveMapEvents(SignalGroup):
    """Compound events of ``LiveMap`` (one signal per field is added beside them)."""

    layout_ready = Signal(int)  # refresh k has a layout (layouts is changed in place)
    reset = Signal()  # another run (or none): everything was cleared


@dataclass
class LiveMap:
    """What the window knows of one run's live map."""

    run_dir: str | None = None
    cells: dict[str, Any] | None = None  # cells.json: cell_ids, labels, batches, classes, kind
    refreshes: list[dict[str, Any]] = field(default_factory=list)  # index.json entries, in order
    reference: dict[str, Any] | None = None  # the PCA-of-HVGs baseline: {"method", "quality": {...}}
    layouts: dict[int, np.ndarray] = field(default_factory=dict)
    shown: int = -1  # the refresh the map shows (-1: none yet)
    follow: bool = True  # show each new refresh as it comes (off once the user replays)
    colour_by: str = "label"
    method: str = "pca"
    events: ClassVar[SignalGroupDescriptor] = SignalGroupDescriptor(
        signal_group_class=LiveMapEvents,
        equality_operators={k: operator.is_ for k in ("cells", "refreshes", "reference", "layouts")})

    # -- the run ----------------------------------------------------------------------------------
    def start(self, run_dir: str | None) -> None:
        """Follow another run (None: forget the map)."""
        with self.events.blocked():
            self.run_dir = str(run_dir) if run_dir else None
            self.cells, self.reference, self.refreshes, self.layouts = None, None, [], {}
            self.shown, self.follow = -1, True
        self.events.reset.emit()

    def read(self) -> bool:
        """Re-read the run's ``cells.json`` and ``index.json``; True when there are new refreshes."""
        if not self.run_dir:
            return False
        from app.engine.celllm import live

        if self.cells is None:
            self.cells = live.read_cells(self.run_dir)
        idx = live.read_index(self.run_dir) or {}
        rows = list(idx.get("refreshes") or [])
        if idx.get("reference") != self.reference:
            self.reference = idx.get("reference")
        if len(rows) > len(self.refreshes):
            self.refreshes = rows
            return True
        return False

    @property
    def kind(self) -> str:
        """"finetune" (refresh k = after epoch k) or "pretrain" (refresh k at some step)."""
        return str((self.cells or {}).get("kind") or "finetune")

    def x_of(self, entry: dict[str, Any]) -> float:
        """Where a refresh sits on the quality curves' x axis: the epoch of a fine-tune, the step of pretraining."""
        return float(entry["epoch"] if self.kind == "finetune" else entry["step"])

    def pending(self) -> int | None:
        """The first refresh without a layout whose predecessor has one (layouts are made in order)."""
        for k in range(len(self.refreshes)):
            if k not in self.layouts:
                return k
        return None

    def embedding(self, k: int) -> np.ndarray:
        """Refresh k's embedding (memory-mapped)."""
        from app.engine.celllm import live

        emb = live.load_refresh(self.run_dir, self.refreshes[k], "emb")
        if emb is None:
            raise FileNotFoundError(f"refresh {k} of {self.run_dir} has no embedding file")
        return emb

    def set_layout(self, k: int, xy: np.ndarray) -> None:
        """Refresh k was laid out; the map follows it unless the user is replaying."""
        self.layouts[k] = xy
        self.events.layout_ready.emit(k)
        if self.follow:
            self.shown = k

    # -- what the map shows -----------------------------------------------------------------------
    def colour_options(self) -> list[str]:
        """The colourings this run offers."""
        c = self.cells or {}
        out = []
        if c.get("labels"):
            out.append("label")
        if c.get("classes") and any(r.get("probs") for r in self.refreshes):
            out += ["predicted", "confidence"]
        if c.get("batches"):
            out.append("batch")
        return out

    def colour_values(self, k: int, by: str | None = None) -> np.ndarray | None:
        """One value per cell for colouring refresh k: label, predicted label, confidence or batch."""
        by = by or self.colour_by
        c = self.cells or {}
        if by == "label" and c.get("labels"):
            return np.asarray(c["labels"], dtype=object)
        if by == "batch" and c.get("batches"):
            return np.asarray(c["batches"], dtype=object)
        if by in ("predicted", "confidence") and c.get("classes") and 0 <= k < len(self.refreshes):
            from app.engine.celllm import live

            probs = live.load_refresh(self.run_dir, self.refreshes[k], "probs")
            if probs is None:
                return None
            p = np.asarray(probs)
            if by == "confidence":
                return p.max(1).astype(np.float32)
            return np.asarray(c["classes"], dtype=object)[p.argmax(1)]
        return None

    def quality_series(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Each quality figure's (x, y) over the refreshes so far (figures that could not be computed left out)."""
        keys: list[str] = []
        for r in self.refreshes:
            keys += [k for k, v in (r.get("quality") or {}).items() if v is not None and k not in keys]
        out = {}
        for key in keys:
            pts = [(self.x_of(r), r["quality"][key]) for r in self.refreshes
                   if (r.get("quality") or {}).get(key) is not None]
            out[key] = (np.array([p[0] for p in pts], float), np.array([p[1] for p in pts], float))
        return out

    def reference_values(self) -> dict[str, float]:
        """The PCA-of-HVGs baseline's figure per quality key (the dashed lines beside the curves)."""
        q = (self.reference or {}).get("quality") or {}
        return {k: float(v) for k, v in q.items() if v is not None}

    def describe(self, k: int) -> str:
        """A caption for refresh k: when it was taken and its label figures."""
        if not 0 <= k < len(self.refreshes):
            return ""
        r = self.refreshes[k]
        when = (f"epoch {r['epoch']}" + (" (starting model)" if r["epoch"] == 0 else "")
                if self.kind == "finetune" else f"step {r['step']}")
        q = r.get("quality") or {}
        figs = ", ".join(f"{name} {q[key]:.3f}" for key, name in (("silhouette", "silhouette"),
                         ("knn_accuracy", "kNN accuracy"), ("ilisi", "iLISI")) if q.get(key) is not None)
        n = len((self.cells or {}).get("cell_ids") or [])
        return f"refresh {k + 1}/{len(self.refreshes)}: {when}, {n:,} cells" + (f" · {figs}" if figs else "")


def run_has_live_map(run_dir: str | Path) -> bool:
    """True when the run folder holds a live map."""
    return (Path(run_dir) / "live" / "index.json").is_file()


__all__ = ["COLOUR_BY", "METHODS", "LiveMap", "live_layout", "procrustes_to", "run_has_live_map"]
