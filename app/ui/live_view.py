"""Qt face of the live map: the layout pipeline (worker thread), the map panel with its replay slider, and the
embedding-quality curves with the PCA-of-HVGs reference lines.

``LiveLayouts`` follows the job runner: when a fine-tune or pretraining run starts it follows that run's
folder; at each ``Artifact("live_map")`` it re-reads the index and lays out every new refresh in order, each
from the previous layout, in a worker thread (``app.ui.live_map.live_layout``); the GUI thread only reads two
small JSON files and hands 2-D points to the views. A reopened run is laid out the same way, so the slider
replays it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QObject, Qt, QTimer
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QPushButton, QSlider, QVBoxLayout, QWidget

from app.engine.events import Artifact
from app.ui.live_map import LiveMap, live_layout, run_has_live_map
from app.ui.plots import PALETTE, EmbeddingView
from app.ui.session import JobRequest, Session
from app.ui.state import SC_TASKS
from app.ui.workers import Worker

LIVE_TARGETS = (SC_TASKS["finetune"][1], SC_TASKS["pretrain"][1])
COLOUR_NAMES = {"label": "label", "predicted": "predicted label", "confidence": "confidence", "batch": "batch"}
QUALITY_NAMES = {"silhouette": "label silhouette", "knn_accuracy": "kNN label accuracy", "ilisi": "iLISI (batch)",
                 "graph_connectivity": "graph connectivity", "alignment": "alignment", "uniformity": "uniformity"}


class LiveLayouts(QObject):
    """Lays out each refresh of the followed run off the GUI thread, in order, each from the one before."""

    def __init__(self, session: Session, runner: Any, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.session, self.live = session, session.live
        self._worker: Worker | None = None
        self._gen = 0
        self.arrived: dict[int, float] = {}  # refresh -> when its artifact came (perf_counter)
        self.laid_out: dict[int, float] = {}  # refresh -> when its layout was handed to the views
        runner.started.connect(self._run_started)
        runner.artifact.connect(self._artifact)
        session.events.run_opened.connect(self._run_opened)

    def _run_started(self, req: JobRequest) -> None:
        if req.purpose != "train" or req.target not in LIVE_TARGETS:
            return
        if not (req.resume and self.live.run_dir == req.run_dir):
            self._follow(req.run_dir)
        if req.resume:  # the refreshes made before the stop are kept by the engine: show them again
            self.update()

    def _run_opened(self, path: str) -> None:
        if self.live.run_dir == path or not run_has_live_map(path):
            return
        self._follow(path)
        self.update()

    def _follow(self, run_dir: str) -> None:
        self._gen += 1
        self.arrived.clear()
        self.laid_out.clear()
        self.live.start(run_dir)

    def _artifact(self, ev: Artifact) -> None:
        if ev.kind == "live_map":
            stem = Path(ev.path).stem  # emb-KKKK
            k = int(stem.rpartition("-")[2]) if stem.rpartition("-")[2].isdigit() else len(self.live.refreshes)
            self.arrived.setdefault(k, time.perf_counter())
            self.update()
        elif ev.kind == "live_cells":
            self.live.read()

    def update(self) -> None:
        """Re-read the index and lay out what is new."""
        try:
            self.live.read()
        except Exception as exc:  # a damaged index must not break the window; the run goes on
            self.session.log(f"live map: could not read the run's index ({exc})", "warning")
            return
        self._next()

    @property
    def busy(self) -> bool:
        """A layout is being computed."""
        return self._worker is not None

    def _next(self) -> None:
        if self._worker is not None:
            return
        k = self.live.pending()
        if k is None:
            return
        live, gen = self.live, self._gen
        prev = live.layouts.get(k - 1)
        try:
            emb = live.embedding(k)
        except Exception as exc:
            self.session.log(f"live map: refresh {k} cannot be read ({exc})", "warning")
            return

        def done(xy: np.ndarray) -> None:
            self._worker = None
            if gen != self._gen:  # another run is followed now
                self._next()
                return
            live.set_layout(k, xy)
            self.laid_out[k] = time.perf_counter()
            self._next()

        def failed(exc: BaseException, _tb: str) -> None:
            self._worker = None
            self.session.log(f"live map: no layout for refresh {k} ({exc})", "warning")

        self._worker = Worker(live_layout, np.array(emb), prev, live.method).start(done, failed)

    def latencies(self) -> list[float]:
        """Seconds from each refresh's artifact to its layout reaching the views (the bench reads these)."""
        return [self.laid_out[k] - t for k, t in sorted(self.arrived.items()) if k in self.laid_out]


class LiveMapPanel(QWidget):
    """The live map: the followed run's cells at the shown refresh, a colouring, a slider that replays."""

    def __init__(self, live: LiveMap, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.live = live
        self.title = QLabel("<b>Live cell map</b>")
        self.colour = QComboBox()
        self.colour.setToolTip("Colour the cells by their label, the label the model predicts now, its "
                               "confidence, or their batch.")
        self.colour.currentIndexChanged.connect(self._colour_changed)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, 0)
        self.slider.setEnabled(False)
        self.slider.setToolTip("Replay: every refresh of the run, from the starting model on")
        self.slider.valueChanged.connect(self._slid)
        self.play_btn = QPushButton("Replay")
        self.play_btn.setEnabled(False)
        self.play_btn.clicked.connect(self.replay)
        self.caption = QLabel("Fine-tune or pretrain CellLM: the map of a fixed subsample of cells updates at "
                              "every refresh.")
        self.caption.setWordWrap(True)
        self.caption.setStyleSheet("color: #555;")
        self.view = EmbeddingView()
        top = QHBoxLayout()
        top.addWidget(self.title)
        top.addStretch(1)
        top.addWidget(QLabel("Colour by:"))
        top.addWidget(self.colour)
        bottom = QHBoxLayout()
        bottom.addWidget(self.play_btn)
        bottom.addWidget(self.slider, 1)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(top)
        lay.addWidget(self.view, 1)
        lay.addLayout(bottom)
        lay.addWidget(self.caption)
        self.states = 0  # map states drawn for the followed run (tests count them)
        self.drawn_refreshes: list[int] = []
        self._play = QTimer(self)
        self._play.setInterval(600)
        self._play.timeout.connect(self._play_step)
        ev = live.events
        ev.reset.connect(self._reset)
        ev.shown.connect(self._show)
        ev.layout_ready.connect(self._layout_ready)
        ev.refreshes.connect(self._fill_colours)

    def _reset(self) -> None:
        self._play.stop()
        self.states = 0
        self.drawn_refreshes = []
        self.slider.blockSignals(True)
        self.slider.setRange(0, 0)
        self.slider.blockSignals(False)
        self.slider.setEnabled(False)
        self.play_btn.setEnabled(False)
        self.colour.clear()
        self.view.set_data_async(np.zeros((0, 2), np.float32))
        self.caption.setText("Waiting for the first refresh (the starting model's map)…")

    def _fill_colours(self) -> None:
        opts = self.live.colour_options()
        have = [self.colour.itemData(i) for i in range(self.colour.count())]
        if opts == have:
            return
        self.colour.blockSignals(True)
        self.colour.clear()
        for o in opts:
            self.colour.addItem(COLOUR_NAMES[o], o)
        pick = self.live.colour_by if self.live.colour_by in opts else (opts[0] if opts else "")
        if pick:
            self.colour.setCurrentIndex(opts.index(pick))
            self.live.colour_by = pick
        self.colour.blockSignals(False)

    def _layout_ready(self, k: int) -> None:
        n = len(self.live.layouts)
        self.slider.blockSignals(True)
        self.slider.setRange(0, max(n - 1, 0))
        if self.live.follow:
            self.slider.setValue(n - 1)
        self.slider.blockSignals(False)
        self.slider.setEnabled(n > 1)
        self.play_btn.setEnabled(n > 1)

    def _show(self, k: int) -> None:
        self.draw(k)

    def draw(self, k: int) -> None:
        """Put refresh k on the map (the same cells: positions and colours change in place). The points are
        prepared in a worker thread and handed to the plot one category per event-loop turn; a hidden panel
        draws when it is shown."""
        xy = self.live.layouts.get(k)
        if xy is None:
            return
        if not self.isVisible():
            self._stale = True
            return
        self._stale = False
        values = self.live.colour_values(k)
        ids = (self.live.cells or {}).get("cell_ids")
        hover: dict[str, np.ndarray] = {}
        for by in self.live.colour_options():
            v = self.live.colour_values(k, by)
            if v is not None:
                hover[COLOUR_NAMES[by]] = v
        keep = self.view.vb.viewRange() if self.states and not self.live.follow else None

        def shown() -> None:
            if keep is not None:  # replaying: keep the user's zoom
                self.view.vb.setRange(xRange=keep[0], yRange=keep[1], padding=0)
            if not self.drawn_refreshes or self.drawn_refreshes[-1] != k:  # a redraw of the same map is no new state
                self.states += 1
                self.drawn_refreshes.append(k)

        self.view.set_data_async(xy, values, ids=np.asarray(ids) if ids else None, hover_cols=hover,
                                 title=COLOUR_NAMES.get(self.live.colour_by, ""), on_shown=shown)
        if self.slider.value() != k:
            self.slider.blockSignals(True)
            self.slider.setValue(k)
            self.slider.blockSignals(False)
        self.caption.setText(self.live.describe(k))

    def showEvent(self, ev: Any) -> None:
        super().showEvent(ev)
        if getattr(self, "_stale", False) and self.live.shown >= 0:
            self.draw(self.live.shown)

    def _colour_changed(self, i: int) -> None:
        by = self.colour.itemData(i)
        if by:
            self.live.colour_by = by
            if self.live.shown >= 0:
                self.draw(self.live.shown)

    def _slid(self, k: int) -> None:
        self.live.follow = k >= len(self.live.layouts) - 1  # back at the newest: follow again
        self.live.shown = k

    def replay(self) -> None:
        """Play every refresh from the first."""
        if len(self.live.layouts) < 2:
            return
        self.live.follow = False
        self.live.shown = 0
        self._play.start()

    def _play_step(self) -> None:
        k = self.live.shown + 1
        if k >= len(self.live.layouts):
            self._play.stop()
            self.live.follow = True
            return
        self.live.shown = k

    def plots(self) -> dict[str, Any]:
        """The live map when it shows cells (``PlotSource``)."""
        return {"live_map": self.view.plot} if len(self.view.xy) else {}


SPACE_KEYS = ("alignment", "uniformity")  # Wang & Isola: their own scale (uniformity is a log, about -4 to 0)


class QualityCurves(QWidget):
    """Embedding-quality figures per refresh, with the PCA-of-HVGs reference as dashed lines: the label and
    batch figures (0-1 scales) on the left, alignment/uniformity (their own scale) on the right."""

    def __init__(self, live: LiveMap, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.live = live
        self.plot = pg.PlotWidget(title="Embedding quality (live map) — dashed: PCA of HVGs")
        self.space = pg.PlotWidget(title="Alignment / uniformity (lower is better)")
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        for w in (self.plot, self.space):
            w.addLegend(offset=(-5, -5), brush=pg.mkBrush(255, 255, 255), pen=pg.mkPen("#cccccc"))
            lay.addWidget(w, 3 if w is self.plot else 2)
        self.curves: dict[str, pg.PlotDataItem] = {}
        self.refs: dict[str, pg.InfiniteLine] = {}
        self.data: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        live.events.refreshes.connect(self.redraw)
        live.events.reference.connect(self.redraw)
        live.events.reset.connect(self.clear)
        self.space.hide()

    def clear(self) -> None:
        """Forget the curves (another run)."""
        for w in (self.plot, self.space):
            w.clear()
        self.space.hide()
        self.curves, self.refs, self.data = {}, {}, {}

    def _colour(self, key: str) -> str:
        keys = list(QUALITY_NAMES)
        return PALETTE[(keys.index(key) if key in keys else len(keys) + len(self.curves)) % len(PALETTE)]

    def redraw(self) -> None:
        """Draw every figure's curve from the live map's refreshes."""
        self.data = self.live.quality_series()
        for w in (self.plot, self.space):
            w.setLabel("bottom", "epoch" if self.live.kind == "finetune" else "step")
        for key, (xs, ys) in self.data.items():
            if key not in self.curves:
                c = self._colour(key)
                target = self.space if key in SPACE_KEYS else self.plot
                target.setVisible(True)
                self.curves[key] = target.plot([], [], name=QUALITY_NAMES.get(key, key), pen=pg.mkPen(c, width=2),
                                               symbol="o", symbolSize=5, symbolBrush=c)
            self.curves[key].setData(xs, ys)
        for key, v in self.live.reference_values().items():
            if key in self.curves and key not in self.refs:
                line = pg.InfiniteLine(pos=v, angle=0, pen=pg.mkPen(self._colour(key), width=1,
                                                                    style=Qt.PenStyle.DashLine))
                line.setToolTip(f"{QUALITY_NAMES.get(key, key)} of PCA on log-normalised HVGs: {v:.3f}")
                (self.space if key in SPACE_KEYS else self.plot).addItem(line)
                self.refs[key] = line

    def n_points(self, key: str) -> int:
        """Points on one figure's curve."""
        return len(self.data.get(key, ((), ()))[0])

    def plots(self) -> dict[str, Any]:
        """The quality curves when there are any (``PlotSource``)."""
        out = {}
        if any(k not in SPACE_KEYS for k in self.curves):
            out["embedding_quality"] = self.plot
        if any(k in SPACE_KEYS for k in self.curves):
            out["embedding_uniformity"] = self.space
        return out


__all__ = ["LiveLayouts", "LiveMapPanel", "QualityCurves"]
