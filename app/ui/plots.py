"""pyqtgraph views: the embedding map (1M points stay interactive), training curves, histograms,
confusion matrices, observed-vs-predicted scatter and Manhattan plot.

Plot rules measured in DESIGN.md: up to ``DENSE_ABOVE`` points, one ``ScatterPlotItem`` per category with
shared brushes (pen=None, pxMode); beyond, a category-coloured density image (each bin takes the count-weighted
mean colour of its cells, opacity by log density; one bincount pass) plus a random coloured subsample. DESIGN.md
put the switch at ~200k; on this 2-vCPU box under load a repaint of 100k points took ~90 ms, so a pan or hover
stalled the window: the switch is at 50k. Hover and lasso/box picking use a ``scipy.spatial.cKDTree`` /
vectorised point-in-polygon on the FULL data, so what is picked never depends on what is drawn.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, Qt, Signal
from PySide6.QtGui import QColor, QPainterPath, QPen
from PySide6.QtWidgets import QGraphicsPathItem, QHBoxLayout, QLabel, QSizePolicy, QVBoxLayout, QWidget

DENSE_ABOVE = 50_000  # measured here (2 busy vCPUs, offscreen): 100k drawn points repaint in ~90 ms per pan step
SUBSAMPLE = 8_000  # points drawn over the colour image when dense (~1.5 us each a repaint here)
_DONE = object()  # end of a chunked hand-over's steps (a step itself yields None)
DRAW_CHUNK = 2_000  # points per item of the dense subsample: one item per event-loop turn when handed over
IMAGE_BINS = 512
SHOW_SELECTED = 10_000
MAX_LEGEND = 25
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7",
           "#dbdb8d", "#9edae5"]

pg.setConfigOptions(antialias=False, background="w", foreground="k")


def category_codes(values: np.ndarray, max_bins: int = 10) -> tuple[np.ndarray, list[str]]:
    """(int codes, names) for categorical values; numeric values with many levels are binned by quantile.

    A pandas ``Categorical`` (an AnnData ``.obs`` column) gives its codes as they are: hashing 1M label strings
    holds the GIL for ~0.15 s, which a worker thread preparing a map must not do while the window runs."""
    import pandas as pd

    if isinstance(values, pd.Categorical):
        codes = np.asarray(values.codes, dtype=np.int32).copy()
        names = [str(c) for c in values.categories]
        if (codes < 0).any():
            codes[codes < 0] = len(names)
            names.append("NA")
        return codes, names
    vals = np.asarray(values)
    if vals.dtype.kind in "fiu" and len(np.unique(vals[: min(len(vals), 5000)])) > 20:
        v = vals.astype(np.float64)
        finite = np.isfinite(v)
        qs = np.unique(np.nanquantile(v[finite], np.linspace(0, 1, max_bins + 1))) if finite.any() else [0, 1]
        codes = np.clip(np.searchsorted(qs, v, side="right") - 1, 0, max(len(qs) - 2, 0))
        names = [f"{qs[i]:.3g}–{qs[i + 1]:.3g}" for i in range(max(len(qs) - 1, 1))]
        codes[~finite] = len(names)
        if (~finite).any():
            names.append("NA")
        return codes.astype(np.int32), names
    try:  # hash-based, no string copies: ~0.15 s for 1M labels
        codes, uniques = pd.factorize(vals, sort=True, use_na_sentinel=True)
        names = [str(u) for u in uniques]
    except TypeError:  # mixed types cannot be sorted: compare them as text
        codes, uniques = pd.factorize(pd.Series(vals).astype(str).to_numpy(), sort=True)
        names = [str(u) for u in uniques]
    codes = np.asarray(codes, dtype=np.int32)
    if (codes < 0).any():  # missing values get their own category
        codes[codes < 0] = len(names)
        names.append("NA")
    return codes, names


def numeric_colours(n: int) -> list[str]:
    """A light-to-dark ramp for binned numeric values."""
    cmap = pg.colormap.get("viridis")
    return [cmap.map(x, mode="qcolor").name() for x in np.linspace(0, 1, max(n, 1))]


def colour_density(xy: np.ndarray, codes: np.ndarray, colours: list[str], bins: int = IMAGE_BINS) -> np.ndarray:
    """An RGBA image (bins x bins, x first as pyqtgraph expects) of ``xy``: each bin the count-weighted mean
    colour of the categories in it, opacity rising with log(count); empty bins transparent."""
    x, y = np.ascontiguousarray(xy[:, 0]), np.ascontiguousarray(xy[:, 1])
    lo = np.array([x.min(), y.min()], np.float64)
    hi = np.array([x.max(), y.max()], np.float64)
    scale = bins / np.where(hi > lo, hi - lo, 1.0)
    k = max(len(colours), 1)
    ix = np.minimum(((x - lo[0]) * scale[0]).astype(np.int32), bins - 1)
    iy = np.minimum(((y - lo[1]) * scale[1]).astype(np.int32), bins - 1)
    flat = (ix * bins + iy) * k + np.clip(codes, 0, k - 1).astype(np.int32)
    counts = np.bincount(flat, minlength=bins * bins * k).reshape(bins * bins, k)
    tot = counts.sum(1)
    nz = np.flatnonzero(tot)
    rgb = np.array([[QColor(c).red(), QColor(c).green(), QColor(c).blue()] for c in colours] or [[0, 0, 0]],
                   dtype=np.float32)
    img = np.zeros((bins * bins, 4), np.uint8)
    t = tot[nz].astype(np.float32)
    img[nz, :3] = np.clip(counts[nz].astype(np.float32) @ rgb / t[:, None], 0, 255).astype(np.uint8)
    dens = np.log1p(t)
    img[nz, 3] = (255 * (0.45 + 0.55 * dens / max(float(dens.max()), 1e-9))).astype(np.uint8)
    return img.reshape(bins, bins, 4)


@dataclass
class MapData:
    """A cell map ready to hand to an ``EmbeddingView``: plain arrays, made on any thread (no Qt objects)."""

    xy: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    codes: np.ndarray
    names: list[str]
    colours: list[str]
    drawn: np.ndarray | None  # the subsample drawn as points (dense maps), None = every cell
    image: np.ndarray | None  # the RGBA density image (dense maps)
    tree: Any = None

    @property
    def n(self) -> int:
        return len(self.xy)


def prepare_colours(xy: np.ndarray, lo: np.ndarray, hi: np.ndarray, values: np.ndarray | None) -> MapData:
    """Category codes and colours of ``values`` (and, above ``DENSE_ABOVE`` cells, the density image and the
    drawn subsample) for cells at ``xy``."""
    import pandas as pd

    n = len(xy)
    if values is None:
        values = np.zeros(n, dtype=np.int32)
    if not isinstance(values, pd.Categorical):
        values = np.asarray(values)
    numeric = values.dtype.kind in "fiu" and len(np.unique(values[:5000])) > 20
    codes, names = category_codes(values)
    colours = numeric_colours(len(names)) if numeric else [PALETTE[i % len(PALETTE)] for i in range(len(names))]
    image = drawn = None
    if n > DENSE_ABOVE:
        image = colour_density(xy, codes, colours, IMAGE_BINS)
        drawn = np.sort(np.random.default_rng(0).choice(n, SUBSAMPLE, replace=False))
    return MapData(xy, lo, hi, codes, names, colours, drawn, image)


def prepare_map(xy: np.ndarray, values: np.ndarray | None = None, tree: str = "now") -> MapData:
    """Everything a map needs from the cells' positions and one colouring; ``tree="now"`` also builds the
    KD-tree for hovering (unbalanced, non-compact: 1M points ~0.7 s instead of ~1.4 s)."""
    pts = np.ascontiguousarray(np.asarray(xy, dtype=np.float32)[:, :2])
    n = len(pts)
    lo = np.array([pts[:, 0].min(), pts[:, 1].min()]) if n else np.zeros(2)
    hi = np.array([pts[:, 0].max(), pts[:, 1].max()]) if n else np.ones(2)
    prep = prepare_colours(pts, lo, hi, values)
    if tree == "now" and n:
        from scipy.spatial import cKDTree

        prep.tree = cKDTree(pts, balanced_tree=False, compact_nodes=False)
    return prep


class LassoViewBox(pg.ViewBox):
    """A ViewBox whose drag pans (mode "pan"), draws a rectangle ("box") or a free lasso ("lasso")."""

    def __init__(self, on_polygon: Any, **kw: Any) -> None:
        super().__init__(**kw)
        self.mode = "pan"
        self.on_polygon = on_polygon
        self._pts: list[QPointF] = []
        self._item = QGraphicsPathItem()
        pen = QPen(QColor("#d62728"))
        pen.setCosmetic(True)
        pen.setWidth(2)
        self._item.setPen(pen)
        self._item.setZValue(1e6)
        self.addItem(self._item, ignoreBounds=True)

    def mouseDragEvent(self, ev: Any, axis: Any = None) -> None:
        if self.mode == "pan" or ev.button() != Qt.MouseButton.LeftButton:
            super().mouseDragEvent(ev, axis)
            return
        ev.accept()
        p = self.mapSceneToView(ev.scenePos())
        if ev.isStart():
            self._start = self.mapSceneToView(ev.buttonDownScenePos())
            self._pts = [self._start]
        if self.mode == "box":
            a = self._start
            self._pts = [a, QPointF(p.x(), a.y()), p, QPointF(a.x(), p.y())]
        else:
            self._pts.append(p)
        path = QPainterPath()
        path.moveTo(self._pts[0])
        for q in self._pts[1:]:
            path.lineTo(q)
        path.closeSubpath()
        self._item.setPath(path)
        if ev.isFinish():
            poly = np.array([[q.x(), q.y()] for q in self._pts], dtype=np.float64)
            self._item.setPath(QPainterPath())
            self._pts = []
            if len(poly) >= 3:
                self.on_polygon(poly)


def points_in_polygon(xy: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Indices of ``xy`` inside ``poly`` (bounding-box prefilter, then matplotlib's vectorised test)."""
    from matplotlib.path import Path as MplPath

    lo, hi = poly.min(0), poly.max(0)
    cand = np.flatnonzero((xy[:, 0] >= lo[0]) & (xy[:, 0] <= hi[0]) & (xy[:, 1] >= lo[1]) & (xy[:, 1] <= hi[1]))
    if cand.size == 0:
        return cand
    inside = MplPath(poly).contains_points(xy[cand])
    return cand[inside]


class EmbeddingView(QWidget):
    """The cell map: colour by a column, hover for a cell's ID and labels, box/lasso to select."""

    selectionChanged = Signal(int)
    hovered = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.vb = LassoViewBox(self._polygon)
        self.plot = pg.PlotWidget(viewBox=self.vb)
        self.plot.setAspectLocked(False)
        self.plot.hideAxis("left")
        self.plot.hideAxis("bottom")
        self.info = QLabel("Hover over a cell to see its ID and labels.")
        self.info.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        # a fixed-size line: hover text changing 30x a second must not relayout (and repaint) the whole tab
        self.info.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.info.setFixedHeight(self.info.fontMetrics().height() + 6)
        # opaque: it sits in a strip kept free of cells, and blending a translucent box cost ~2 ms a repaint
        self.legend = pg.LegendItem(offset=(-5, 5), labelTextSize="8pt", brush=pg.mkBrush(255, 255, 255),
                                    pen=pg.mkPen("#cccccc"))
        self.legend.setParentItem(self.vb)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.plot, 1)
        lay.addWidget(self.info)
        self.xy = np.zeros((0, 2), np.float32)
        self.lo, self.hi = np.zeros(2), np.ones(2)
        self.ids: np.ndarray | None = None  # None: a cell's row number is its ID
        self.hover_cols: dict[str, np.ndarray] = {}
        self.codes = np.zeros(0, np.int32)
        self.names: list[str] = []
        self.selection = np.zeros(0, np.int64)
        self.tree: Any = None
        self.items: list[Any] = []
        self.density: pg.ImageItem | None = None
        self.drawn: np.ndarray | None = None  # indices drawn as points (subsample when dense)
        # outlined symbols paint much slower than filled ones; large selections are shown as a subsample
        self.sel_item = pg.ScatterPlotItem(pen=pg.mkPen("#000000", width=1), brush=None, size=7, pxMode=True)
        self.sel_item.setZValue(10)
        self.hover_item = pg.ScatterPlotItem(pen=pg.mkPen("#d62728", width=2), brush=None, size=12, pxMode=True)
        self.hover_item.setZValue(11)
        self.vb.addItem(self.sel_item)
        self.vb.addItem(self.hover_item)
        self._proxy = pg.SignalProxy(self.plot.scene().sigMouseMoved, rateLimit=30, slot=self._mouse_moved)
        from PySide6.QtCore import QTimer

        self._steps: Any = None  # the remaining steps of a chunked hand-over
        self._on_shown: Any = None
        self._step_timer = QTimer(self)
        self._step_timer.setSingleShot(True)
        self._step_timer.setInterval(0)
        self._step_timer.timeout.connect(self._next_step)

    # -- data ------------------------------------------------------------------------------------
    def set_data(self, xy: np.ndarray, values: np.ndarray | None = None, ids: np.ndarray | None = None,
                 hover_cols: dict[str, np.ndarray] | None = None, title: str = "") -> None:
        """Show ``xy`` (n x 2) coloured by ``values``; ``ids``/``hover_cols`` are what hovering shows.

        Everything is prepared here, on the calling thread; ``set_data_async`` prepares in a worker thread."""
        prep = prepare_map(xy, values, tree="now" if len(xy) <= DENSE_ABOVE else "none")
        self._apply(prep, ids, hover_cols, title)
        if prep.tree is None and prep.n:  # dense: the KD-tree is built in a worker (hover waits for it)
            from scipy.spatial import cKDTree

            from app.ui.workers import Worker

            gen, pts = self._tree_gen, self.xy

            def got(tree: Any) -> None:
                if gen == self._tree_gen:
                    self.tree = tree

            self._tree_worker = Worker(cKDTree, pts, balanced_tree=False, compact_nodes=False).start(got)

    def set_data_async(self, xy: np.ndarray, values: np.ndarray | None = None, ids: np.ndarray | None = None,
                       hover_cols: dict[str, np.ndarray] | None = None, title: str = "",
                       on_shown: Any = None) -> Any:
        """``set_data`` with the heavy part (colour codes, density image, subsample, KD-tree) in a worker
        thread: the GUI thread only hands the prepared items to the plot (a 1M-cell map: milliseconds, where
        ``set_data`` stalled the window ~1 s). A newer call wins. Returns the worker."""
        from app.ui.workers import Worker

        self._async_gen = getattr(self, "_async_gen", 0) + 1
        gen = self._async_gen

        self._steps = None  # a newer map: the old one's remaining steps are dropped

        def done(prep: MapData) -> None:
            if gen == self._async_gen:
                self._apply(prep, ids, hover_cols, title, on_shown, chunked=True)

        self._prep_worker = Worker(prepare_map, xy, values, "now").start(done)
        return self._prep_worker

    def _apply(self, prep: MapData, ids: np.ndarray | None, hover_cols: dict[str, np.ndarray] | None,
               title: str, on_shown: Any = None, chunked: bool = False) -> None:
        """Hand prepared data to the plot (GUI thread). ``chunked``: one step per event-loop turn (density
        image, points, a few legend entries at a time), so no single turn stalls the window."""
        self.xy, self.lo, self.hi = prep.xy, prep.lo, prep.hi
        self.ids = np.asarray(ids) if ids is not None else None  # 1M str(row) would cost ~0.5 s
        self.hover_cols = hover_cols or {}
        self._tree_gen = getattr(self, "_tree_gen", 0) + 1
        self.tree = prep.tree
        self.selection = np.zeros(0, np.int64)
        self.sel_item.setData([], [])
        self.hover_item.setData([], [])
        steps = self._draw_steps(prep, title)
        if not chunked:
            for _ in steps:
                pass
            self.fit_view()
            return
        self._steps, self._on_shown = steps, on_shown
        self._next_step()

    @property
    def busy(self) -> bool:
        """A map is being handed over (prepared in a worker or drawn step by step)."""
        w = getattr(self, "_prep_worker", None)
        return self._steps is not None or (w is not None and w.is_running())

    def _next_step(self) -> None:
        """One step of a chunked hand-over per event-loop turn (a persistent timer: PySide6 6.12's
        ``QTimer.singleShot(ms, callable)`` drops a reference to None at every call, which crashed the
        interpreter at exit after a few thousand calls)."""
        if self._steps is None:
            return
        if next(self._steps, _DONE) is _DONE:
            self._steps = None
            self.fit_view()
            if self._on_shown is not None:
                self._on_shown()
        else:
            self._step_timer.start()

    def fit_view(self) -> None:
        """Show every cell, leaving the right-hand strip free for the legend (so it covers no cells)."""
        if not len(self.xy):
            return
        lo, hi = self.lo.astype(float), self.hi.astype(float)
        span = np.where(hi > lo, hi - lo, 1.0)
        right = 0.0
        if self.legend.isVisible():
            frac = min(0.6, (self.legend.boundingRect().width() + 20) / max(self.vb.width(), 200.0))
            right = span[0] * frac / (1 - frac)
        self.vb.setRange(xRange=(lo[0] - 0.02 * span[0], hi[0] + 0.02 * span[0] + right),
                         yRange=(lo[1] - 0.02 * span[1], hi[1] + 0.02 * span[1]), padding=0)

    def recolour(self, values: np.ndarray | None, title: str = "") -> None:
        """Colour by new values without rebuilding the KD-tree."""
        for _ in self._draw_steps(prepare_colours(self.xy, self.lo, self.hi, values), title):
            pass

    def _draw_steps(self, prep: MapData, title: str) -> Any:
        """Replace the coloured items (and the density image) by those of ``prep``; a generator that yields
        between steps (the caller runs them at once or one per event-loop turn)."""
        n = prep.n
        for it in self.items:
            self.vb.removeItem(it)
        self.items = []
        self.legend.clear()
        if self.density is not None:
            self.vb.removeItem(self.density)
            self.density = None
        self.codes, self.names, self.drawn = prep.codes, prep.names, prep.drawn
        self.plot.setTitle(title)
        if prep.image is not None:
            self._show_density(prep.image)
            yield
        idx_all = self.drawn if self.drawn is not None else np.arange(n)
        codes = self.codes[idx_all]
        size = 3 if n > DENSE_ABOVE else (4 if n > 20000 else 6)
        totals = np.bincount(self.codes, minlength=len(self.names)) if n else np.zeros(len(self.names), int)
        brushes = [pg.mkBrush(c) for c in prep.colours]  # shared: one QBrush per category, never per point
        self._legend_items = []
        if self.drawn is not None:
            # dense: the subsample in a few items, not one per category (pyqtgraph's per-item overhead dominated a
            # repaint with 10+), nor one (its per-point brushes took ~130 ms of one event-loop turn under load)
            for start in range(0, len(idx_all), DRAW_CHUNK):
                part = idx_all[start:start + DRAW_CHUNK]
                it = pg.ScatterPlotItem(x=self.xy[part, 0], y=self.xy[part, 1], pen=None, size=size, pxMode=True,
                                        brush=[brushes[c] for c in codes[start:start + DRAW_CHUNK]])
                self.vb.addItem(it)
                self.items.append(it)
                yield
            self.legend.setVisible(bool(title) or len(self.names) > 1)
            for k, name in enumerate(self.names[:MAX_LEGEND]):
                if k % 4 == 0:
                    yield
                sample = pg.ScatterPlotItem(pen=None, brush=brushes[k], size=8)  # legend swatch only
                self._legend_items.append(sample)
                self.legend.addItem(sample, f"{name} ({totals[k]:,})")
        else:
            order = np.argsort(codes, kind="stable")
            bounds = np.searchsorted(codes[order], np.arange(len(self.names) + 1))
            for k, name in enumerate(self.names):
                sel = idx_all[order[bounds[k]:bounds[k + 1]]]
                if sel.size == 0:
                    continue
                it = pg.ScatterPlotItem(x=self.xy[sel, 0], y=self.xy[sel, 1], pen=None, brush=brushes[k],
                                        size=size, pxMode=True, name=name)
                self.vb.addItem(it)
                self.items.append(it)
                if len(self.items) <= MAX_LEGEND:
                    self.legend.addItem(it, f"{name} ({sel.size:,})")
                yield  # handed over step by step: one category's points per event-loop turn
        self.legend.setVisible(bool(title) or len(self.names) > 1)

    def _show_density(self, image: np.ndarray) -> None:
        """The category-coloured density image of all cells, placed over the cells' extent."""
        self.density = pg.ImageItem(image)
        lo, hi = self.lo, self.hi
        self.density.setRect(float(lo[0]), float(lo[1]), float(hi[0] - lo[0]) or 1.0, float(hi[1] - lo[1]) or 1.0)
        self.density.setZValue(-10)
        self.vb.addItem(self.density)

    # -- interaction -------------------------------------------------------------------------------
    def set_mode(self, mode: str) -> None:
        """"pan", "box" or "lasso"."""
        self.vb.mode = mode
        self.vb.setMouseEnabled(x=True, y=True)

    def nearest(self, x: float, y: float, max_px: float = 8.0) -> int:
        """Index of the cell nearest to a data point within ``max_px`` screen pixels, else -1."""
        if self.tree is None:
            return -1
        px = self.vb.viewPixelSize()
        radius = max_px * max(px[0], px[1]) if px[0] > 0 else np.inf
        d, i = self.tree.query([x, y], k=1, distance_upper_bound=radius)
        return int(i) if np.isfinite(d) else -1

    def describe(self, i: int) -> str:
        """What hovering over cell ``i`` shows."""
        parts = [f"<b>{self.ids[i] if self.ids is not None else f'cell {i}'}</b>"]
        for k, v in self.hover_cols.items():
            val = v[i]
            if isinstance(val, float | np.floating):
                parts.append(f"{k}: {val:.3g}")
            else:
                parts.append(f"{k}: {val if str(val) else '(none)'}")
        return " · ".join(parts)

    def hover_at(self, x: float, y: float) -> int:
        """Hover logic for a data-space point (also used by the benchmark)."""
        i = self.nearest(x, y)
        if i >= 0:
            self.hover_item.setData([self.xy[i, 0]], [self.xy[i, 1]])
            self.info.setText(self.describe(i))
            self.hovered.emit(i)
        else:
            self.hover_item.setData([], [])
        return i

    def _mouse_moved(self, evt: Any) -> None:
        pos = evt[0]
        if not self.plot.sceneBoundingRect().contains(pos) or not len(self.xy):
            return
        p = self.vb.mapSceneToView(pos)
        self.hover_at(p.x(), p.y())

    def _polygon(self, poly: np.ndarray) -> None:
        self.select_polygon(poly)

    def select_polygon(self, poly: np.ndarray) -> np.ndarray:
        """Select every cell inside ``poly`` (data coordinates); returns the indices."""
        idx = points_in_polygon(self.xy, np.asarray(poly, dtype=np.float64))
        self.set_selection(idx)
        return idx

    def set_selection(self, idx: np.ndarray) -> None:
        """Outline the selected cells (a subsample of them when there are many)."""
        self.selection = np.asarray(idx, dtype=np.int64)
        show = self.selection
        if show.size > SHOW_SELECTED:
            show = np.random.default_rng(1).choice(show, SHOW_SELECTED, replace=False)
        self.sel_item.setData(self.xy[show, 0], self.xy[show, 1])
        self.selectionChanged.emit(int(self.selection.size))


class CurvesWidget(QWidget):
    """Live training curves: losses on the left, other metrics (F1, accuracy, r) on the right.

    Histories are kept per series and redrawn from numpy arrays (cheap with clipToView/autoDownsample).
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.loss = pg.PlotWidget(title="Loss")
        self.metric = pg.PlotWidget(title="Validation metric")
        for w in (self.loss, self.metric):
            # no grid and an opaque legend: measured here, the translucent grid lines made each repaint of the
            # two curve plots cost ~120 ms, which the window felt at every epoch end
            w.addLegend(offset=(-5, 5), brush=pg.mkBrush(255, 255, 255), pen=pg.mkPen("#cccccc"))
            w.setLabel("bottom", "epoch / step")
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.loss)
        lay.addWidget(self.metric)
        self.data: dict[str, tuple[list[float], list[float]]] = {}
        self.curves: dict[str, pg.PlotDataItem] = {}
        self.on_left: Any = lambda name: "loss" in name
        self._dirty: set[str] = set()
        from PySide6.QtCore import QTimer

        self._flush_timer = QTimer(self)
        self._flush_timer.setSingleShot(True)
        self._flush_timer.setInterval(50)
        self._flush_timer.timeout.connect(self.flush)

    def set_labels(self, metric_title: str = "Validation metric", xlabel: str = "epoch / step",
                   loss_title: str = "Loss", loss_xlabel: str | None = None,
                   on_left: Any = None) -> None:
        """Titles for the kind of run shown (a GP cross-validation plots r per fold on the right and the
        current fit's curves on the left); ``on_left(series_name)`` says which plot a series goes to."""
        self.metric.setTitle(metric_title)
        self.loss.setTitle(loss_title)
        self.metric.setLabel("bottom", xlabel)
        self.loss.setLabel("bottom", loss_xlabel or xlabel)
        self.on_left = on_left or (lambda name: "loss" in name)

    def _show_used(self) -> None:
        """A run that reports no loss (GP cross-validation) gets the whole width for its metric."""
        has_loss = any(self.on_left(n) for n in self.curves)
        has_metric = any(not self.on_left(n) for n in self.curves)
        self.loss.setVisible(has_loss or not has_metric)
        self.metric.setVisible(has_metric or not has_loss)

    def clear(self) -> None:
        """Forget every series (``PlotItem.clear`` removes the curves it added: removing them first as well made
        Qt warn "removeItem: item's scene is different" at every clear)."""
        self.loss.clear()
        self.metric.clear()
        self.data, self.curves = {}, {}
        self._dirty.clear()
        self._show_used()

    @staticmethod
    def series_name(key: str, split: str) -> str:
        """``loss`` from the train split -> ``train loss``; ``val_macro_f1`` stays as it is."""
        low = key.lower()
        if low.startswith(("train", "val", "test")):
            return key.replace("_", " ")
        return f"{split} {key}".replace("_", " ")

    def add(self, x: float, values: dict[str, float], split: str = "train") -> None:
        """Append one point per metric (non-numeric values are ignored)."""
        for key, v in values.items():
            if not isinstance(v, int | float) or key in ("lr", "epoch", "step") or not np.isfinite(v):
                continue
            name = self.series_name(key, split)
            xs, ys = self.data.setdefault(name, ([], []))
            if xs and float(x) < xs[-1]:  # a new fit began (next fold / model): show it from its start
                xs.clear()
                ys.clear()
            xs.append(float(x))
            ys.append(float(v))
            if name not in self.curves:
                target = self.loss if self.on_left(name) else self.metric
                colour = PALETTE[len(self.curves) % len(PALETTE)]
                style = Qt.PenStyle.DashLine if name.startswith("val") else Qt.PenStyle.SolidLine
                self.curves[name] = target.plot([], [], name=name, pen=pg.mkPen(colour, width=2, style=style),
                                                symbol="o" if len(xs) < 200 else None, symbolSize=5,
                                                symbolBrush=colour, skipFiniteCheck=True)
                self.curves[name].setDownsampling(auto=True)
                self.curves[name].setClipToView(True)
                self._show_used()
            self._dirty.add(name)
        if self._dirty and not self._flush_timer.isActive():
            self._flush_timer.start()

    def flush(self) -> None:
        """Hand the new points to the plots: once per ~50 ms however many series changed (each setData made
        both plots repaint; batching turned an epoch end's ~120 ms of repaints into one)."""
        for name in self._dirty:
            if name in self.curves:
                xs, ys = self.data[name]
                self.curves[name].setData(np.asarray(xs), np.asarray(ys))
        self._dirty.clear()

    def n_points(self) -> int:
        """Points across all series (tests watch this grow)."""
        return sum(len(xs) for xs, _ in self.data.values())


def histogram(plot: pg.PlotWidget, values: np.ndarray, bins: int = 40, title: str = "", colour: str = "#1f77b4",
              xlabel: str = "") -> None:
    """A bar histogram of ``values`` (NaN ignored)."""
    plot.clear()
    plot.getAxis("bottom").enableAutoSIPrefix(False)  # fractions stay fractions, not "x0.001"
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    plot.setTitle(title)
    if xlabel:
        plot.setLabel("bottom", xlabel)
    if v.size == 0:
        return
    y, x = np.histogram(v, bins=bins)
    plot.addItem(pg.BarGraphItem(x0=x[:-1], x1=x[1:], height=y, brush=colour, pen=None))


def confusion_image(plot: pg.PlotWidget, matrix: np.ndarray, labels: list[str], title: str = "") -> None:
    """Row-normalised confusion matrix as an image (rows = true, columns = predicted)."""
    plot.clear()
    m = np.asarray(matrix, dtype=np.float64)
    norm = m / np.maximum(m.sum(1, keepdims=True), 1)
    img = pg.ImageItem(norm.T[:, ::-1])  # x = predicted, y = true (top row first)
    img.setLookupTable(pg.colormap.get("viridis").getLookupTable(0, 1, 256))
    img.setLevels([0, 1])
    plot.addItem(img)
    n = len(labels)
    short = [f"{i + 1} {s if len(s) <= 14 else s[:13] + '…'}" for i, s in enumerate(labels)]
    # columns are numbered (names would overlap); rows carry number + name
    plot.getAxis("bottom").setTicks([[(i + 0.5, str(i + 1)) for i in range(n)]])
    plot.getAxis("left").setTicks([[(n - i - 0.5, short[i]) for i in range(n)]])
    plot.setTitle(title)
    plot.setLabel("bottom", "predicted")
    plot.setLabel("left", "true")
    for i in range(n):
        for j in range(n):
            if m[i, j]:
                t = pg.TextItem(str(int(m[i, j])), color="w" if norm[i, j] < 0.6 else "k", anchor=(0.5, 0.5))
                t.setPos(j + 0.5, n - i - 0.5)
                plot.addItem(t)
    plot.setRange(xRange=(0, n), yRange=(0, n), padding=0.02)


def manhattan(plot: pg.PlotWidget, chrom: np.ndarray, pos: np.ndarray, score: np.ndarray,
              causal: np.ndarray | None = None, title: str = "Marker importance") -> None:
    """Importance along the genome, chromosomes side by side in alternating colours; known causal markers
    (simulated demo) circled in red."""
    plot.clear()
    plot.setTitle(title)
    import pandas as pd

    chrom = np.asarray(chrom).astype(str)
    pos = np.asarray(pos, dtype=np.float64)
    score = np.asarray(score, dtype=np.float64)
    order = pd.Categorical(chrom, categories=sorted(set(chrom), key=lambda c: (len(c), c)))
    offsets, ticks, x = 0.0, [], np.zeros_like(pos)
    for k, c in enumerate(order.categories):
        m = order.codes == k
        if not m.any():
            continue
        p = pos[m] - pos[m].min()
        x[m] = p + offsets
        ticks.append((offsets + p.max() / 2, c))
        plot.addItem(pg.ScatterPlotItem(x=x[m], y=score[m], pen=None, size=4,
                                        brush=pg.mkBrush("#1f77b4" if k % 2 == 0 else "#7f7f7f")))
        offsets += p.max() * 1.02 + 1
    if causal is not None and np.any(causal):
        if plot.plotItem.legend is None:
            plot.addLegend(offset=(-5, 5), brush=pg.mkBrush(255, 255, 255, 215), pen=pg.mkPen("#cccccc"))
        cm = np.asarray(causal, dtype=bool)
        plot.addItem(pg.ScatterPlotItem(x=x[cm], y=score[cm], pen=pg.mkPen("#d62728", width=1.5), brush=None,
                                        size=9, name="causal (simulated truth)"))
    plot.getAxis("bottom").setTicks([ticks])
    plot.getAxis("left").enableAutoSIPrefix(False)
    plot.setLabel("bottom", "chromosome")
    plot.setLabel("left", "importance")


def scatter_obs_pred(plot: pg.PlotWidget, groups: dict[str, tuple[np.ndarray, np.ndarray]],
                     title: str = "Predicted vs observed") -> None:
    """Observed (x) vs predicted (y), one colour per fold/model, with the identity line."""
    plot.clear()
    plot.setTitle(title)
    if not plot.plotItem.legend:
        plot.addLegend(offset=(5, 5), brush=pg.mkBrush(255, 255, 255, 215), pen=pg.mkPen("#cccccc"))
    lo, hi = np.inf, -np.inf
    for k, (name, (obs, pred)) in enumerate(groups.items()):
        plot.addItem(pg.ScatterPlotItem(x=obs, y=pred, pen=None, size=5, brush=pg.mkBrush(PALETTE[k % 20]),
                                        name=name))
        if len(obs):
            lo, hi = min(lo, np.nanmin(obs), np.nanmin(pred)), max(hi, np.nanmax(obs), np.nanmax(pred))
    if np.isfinite(lo):
        plot.plot([lo, hi], [lo, hi], pen=pg.mkPen("#999999", style=Qt.PenStyle.DashLine))
    plot.setLabel("bottom", "observed")
    plot.setLabel("left", "predicted")


EFFICIENCY_COLOURS = {"celllm": PALETTE[0], "baseline": PALETTE[1], "scratch": PALETTE[2]}


def label_efficiency(plot: pg.PlotWidget, curves: list[Any], metric: str = "macro-F1") -> None:
    """Label-efficiency curves (``app.ui.evaluation.Curve``): x = fraction of the training labels on a log
    scale, y = the metric's mean over repeats, error bars = its SD over repeats.

    The x coordinates are log10(fraction) with the ticks labelled in percent: pyqtgraph's log mode maps the
    curves but not an ``ErrorBarItem``, so the log is taken here once for both."""
    from app.ui.evaluation import METHOD_NAMES

    plot.clear()
    plot.setTitle("Label efficiency")  # short: a long title widens the plot's layout past a narrow pane
    # the legend in a row of its own under the axis: no corner of the plot is sure to be free of points
    pi = plot.plotItem
    legend = getattr(plot, "_efficiency_legend", None)
    if legend is None:
        legend = plot._efficiency_legend = pg.LegendItem(colCount=3)
        pi.layout.addItem(legend, pi.layout.rowCount(), 1)
    legend.clear()
    fracs: set[float] = set()
    for k, c in enumerate(curves):
        colour = EFFICIENCY_COLOURS.get(c.method, PALETTE[(k + 3) % len(PALETTE)])
        x = np.log10(c.fraction)
        plot.addItem(pg.ErrorBarItem(x=x, y=c.mean, height=2 * c.sd, beam=0.04, pen=pg.mkPen(colour, width=1.5)))
        line = plot.plot(x, c.mean, pen=pg.mkPen(colour, width=2), symbol="o", symbolSize=7, symbolBrush=colour,
                         symbolPen=None)
        legend.addItem(line, METHOD_NAMES.get(c.method, c.method))
        fracs.update(float(f) for f in c.fraction)
    ticks = [(float(np.log10(f)), f"{f * 100:g} %") for f in sorted(fracs)]
    plot.getAxis("bottom").setTicks([ticks, []])
    plot.setLabel("bottom", "training labels used (log scale)")
    plot.setLabel("left", f"test {metric} (mean ± SD)")
    plot.getAxis("left").enableAutoSIPrefix(False)  # F1 is 0..1, not "(x0.001)"
    plot.showGrid(x=True, y=True, alpha=0.2)


def _render_svg(widget: Any, path: Path) -> None:
    """Vector SVG by painting the widget into a QSvgGenerator (pyqtgraph's SVGExporter fails on some
    items with Qt 6: "not enough values to unpack" in correctCoordinates)."""
    from PySide6.QtCore import QRect, QSize
    from PySide6.QtGui import QPainter
    from PySide6.QtSvg import QSvgGenerator

    w, h = max(widget.width(), 400), max(widget.height(), 300)
    gen = QSvgGenerator()
    gen.setFileName(str(path))
    gen.setSize(QSize(w, h))
    gen.setViewBox(QRect(0, 0, w, h))
    gen.setTitle(str(path.stem))
    painter = QPainter(gen)
    try:
        widget.render(painter)
    finally:
        painter.end()


def export_plot(widget: pg.PlotWidget | pg.GraphicsLayoutWidget, path: str | Path) -> Path:
    """Save a plot as PNG or SVG (atomically: written beside, then renamed)."""
    import os

    import pyqtgraph.exporters as pgx

    path = Path(path)
    item = widget.plotItem if hasattr(widget, "plotItem") else widget.scene()
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    if path.suffix.lower() == ".svg":
        _render_svg(widget, tmp)
    else:
        ex = pgx.ImageExporter(item)
        ex.parameters()["width"] = max(800, int(widget.width()))
        ex.export(str(tmp))
    os.replace(tmp, path)
    return path
