"""The OmicsLab main window: one tab per step (Data, Model, Train, Results, Export), DeepLabCut style.

The window is the composition root: it makes the ``Session`` (the evented ``AppState`` plus the Qt-free
workflow), the ``JobRunner`` (long work in spawned processes) and the tabs (views that know only the session
and the ``Shell`` services this window provides), and carries out what the session asks for (start a job,
read an embedding, compute a map, show a step) with worker threads for short work. Errors become a message
box saying what to do, with details in the log pane; nothing a worker does can close the window.
"""

from __future__ import annotations

import json
import os
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PySide6.QtCore import QSettings, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QKeySequence, QShortcut
from PySide6.QtWidgets import QFileDialog, QLabel, QMainWindow, QMessageBox, QSplitter, QTabWidget, QWidget

from app.data.errors import OmicsLabError
from app.ui import loaders
from app.ui.data_tab import OPEN_FILTER, DataTab
from app.ui.export_tab import ExportTab
from app.ui.gc_guard import MainThreadGC
from app.ui.job_runner import JobRunner
from app.ui.live_view import LiveLayouts
from app.ui.model_tab import ModelTab
from app.ui.results_tab import ResultsTab
from app.ui.session import Session
from app.ui.shell import PlotSource
from app.ui.train_tab import TrainTab
from app.ui.workers import Worker, wait_all

MAX_RECENT = 10


def settings() -> QSettings:
    """QSettings, redirected to an .ini file when OMICSLAB_SETTINGS is set (tests isolate it so)."""
    path = os.environ.get("OMICSLAB_SETTINGS")
    if path:
        return QSettings(path, QSettings.Format.IniFormat)
    return QSettings("OmicsLab", "OmicsLab")


class MainWindow(QMainWindow):
    """The five-step window."""

    datasetLoaded = Signal(str)
    layoutReady = Signal(str)
    embeddingLoaded = Signal()
    errorShown = Signal(str)

    def __init__(self, umap_refine: bool = True) -> None:
        super().__init__()
        self.gc_guard = MainThreadGC(parent=self)  # GC only on this thread (see gc_guard.py)
        self.setWindowTitle("OmicsLab")
        self.setAcceptDrops(True)
        self.session = Session(refine_layout=umap_refine)
        self.state = self.session.state
        self.runner = JobRunner(self.session, self)
        self.live_layouts = LiveLayouts(self.session, self.runner, self)  # before the views: it follows runs first
        self.umap_refine = umap_refine
        self.last_error: tuple[str, str] | None = None
        self.workers: list[Worker] = []
        self._layout_worker: Worker | None = None
        self._layout_gen = 0
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.train_tab = TrainTab(self.session, self, self.runner)  # first: it shows the log of the others
        self.data_tab = DataTab(self.session, self)
        self.model_tab = ModelTab(self.session, self)
        self.results_tab = ResultsTab(self.session, self)
        self.export_tab = ExportTab(self.session, self)
        self.steps: dict[str, QWidget] = {"data": self.data_tab, "model": self.model_tab, "train": self.train_tab,
                                          "results": self.results_tab, "export": self.export_tab}
        for w, name in ((self.data_tab, "1 · Data"), (self.model_tab, "2 · Model"), (self.train_tab, "3 · Train"),
                        (self.results_tab, "4 · Results"), (self.export_tab, "5 · Export")):
            self.tabs.addTab(w, name)
        self.setCentralWidget(self.tabs)
        self.status_label = QLabel("Ready")
        self.statusBar().addWidget(self.status_label, 1)
        self._menus()
        self._shortcuts()
        self.settings = settings()
        self.restoreGeometry(self.settings.value("geometry", b""))  # type: ignore[arg-type]
        if not self.settings.value("geometry"):
            self.resize(1280, 820)
        self._restore_layout()
        self.data_tab.set_recent(self.recent_files())
        ev = self.session.events
        ev.step_requested.connect(lambda step: self.tabs.setCurrentWidget(self.steps[step]))
        ev.problem.connect(self.show_error)
        ev.embedding_requested.connect(self.load_embedding)
        ev.layout_requested.connect(lambda refine: self.compute_layout(refine=refine))
        ev.gene_match_requested.connect(self.recompute_gene_match)

    # -- chrome ------------------------------------------------------------------------------------
    def _menus(self) -> None:
        from app.ui.launch import icon

        m = self.menuBar().addMenu("&File")
        for text, key, fn in (("&Open…", QKeySequence.StandardKey.Open, self.open_dialog),
                              ("&Annotate a dataset with a fine-tuned model…", "", lambda: self.open_annotate()),
                              ("&Export annotated data…", "Ctrl+E", self.export_shortcut),
                              ("&Quit", QKeySequence.StandardKey.Quit, self.close)):
            a = QAction(text, self)
            if text == "&Open…":
                a.setIcon(icon("open"))
            if key:
                a.setShortcut(QKeySequence(key))
            a.triggered.connect(fn)
            m.addAction(a)
        r = self.menuBar().addMenu("&Run")
        for text, key, fn in (("&Train", "Ctrl+T", self.session.train),
                              ("&Evaluate over repeated splits", "", self.session.evaluate),
                              ("&Stop", "Ctrl+.", self.train_tab.stop),
                              ("&Resume", "", lambda: self.session.resume())):
            a = QAction(text, self)
            if text in ("&Train", "&Stop"):
                a.setIcon(icon(text.strip("&").lower()))
            if key:
                a.setShortcut(QKeySequence(key))
            a.triggered.connect(fn)
            r.addAction(a)
        h = self.menuBar().addMenu("&Help")
        a = QAction("&About OmicsLab", self)
        a.triggered.connect(lambda: QMessageBox.about(
            self, "OmicsLab", "OmicsLab: train CellLM on single-cell data and genomic-prediction models on "
            "genotypes. Every button has a command-line twin: python -m app --help."))
        h.addAction(a)

    def _shortcuts(self) -> None:
        esc = QShortcut(QKeySequence(Qt.Key.Key_Escape), self)
        esc.activated.connect(self.train_tab.stop)

    def export_shortcut(self) -> None:
        """Ctrl+E: go to Export and save the annotated data (single-cell) or the GEBV table."""
        self.tabs.setCurrentWidget(self.export_tab)
        if self.state.kind == "singlecell":
            self.export_tab.export_h5ad()
        elif self.state.gp_result:
            self.export_tab.export_gebv()

    def open_annotate(self, model: str | None = None) -> Any:
        """Open (or bring back) the "Annotate another dataset" dialog with ``model`` (a fine-tune run)."""
        from app.ui.annotate_dialog import AnnotateDialog

        dlg = getattr(self, "annotate_dialog", None)
        if dlg is None:
            dlg = self.annotate_dialog = AnnotateDialog(self.session, self, self.runner, model, parent=self)
        elif model:
            dlg.set_model(model)
        dlg.show()
        dlg.raise_()
        return dlg

    def plot_sources(self) -> list[PlotSource]:
        """The views that have plots (the Export tab saves them all)."""
        return [t for t in self.steps.values() if isinstance(t, PlotSource)]

    # -- errors and workers ------------------------------------------------------------------------
    def show_error(self, title: str, message: str, details: str = "") -> None:
        """A clear message box (non-blocking) and the details in the log pane."""
        self.last_error = (title, message)
        self.session.log(f"{title}: {message}", "error")
        if details:
            self.session.log(details.strip(), "error")
        self.status_label.setText(title)
        box = QMessageBox(QMessageBox.Icon.Warning, title, message, QMessageBox.StandardButton.Ok, self)
        if details:
            box.setDetailedText(details)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.open()  # not exec(): the event loop (and running jobs) keep going
        self._last_box = box
        self.errorShown.emit(message)

    def run_worker(self, fn: Any, *args: Any, on_done: Any = None, what: str = "working",
                   on_error: Any = None) -> Worker:
        """Run short work in a thread; errors become a message box."""
        self.status_label.setText(what + "…")

        def done(out: Any) -> None:
            self.status_label.setText("Ready")
            if on_done is not None:
                on_done(out)

        def failed(exc: BaseException, tb: str) -> None:
            self.status_label.setText("Ready")
            if on_error is not None:
                on_error(exc, tb)
            msg = str(exc) if isinstance(exc, OmicsLabError) else f"{type(exc).__name__}: {exc}"
            self.show_error(f"Problem while {what}", msg, "" if isinstance(exc, OmicsLabError) else tb)

        w = Worker(fn, *args)
        self.workers.append(w)
        w.finished.connect(lambda: self.workers.remove(w) if w in self.workers else None)
        w.start(done, failed)
        return w

    # -- opening -----------------------------------------------------------------------------------
    def open_dialog(self) -> None:
        """Ctrl+O."""
        path, _ = QFileDialog.getOpenFileName(self, "Open a dataset", "", OPEN_FILTER)
        if path:
            self.open_path(path)

    def open_path(self, path: str) -> Worker:
        """Read ``path`` in a worker (kind detected) and show its summary."""
        self.tabs.setCurrentWidget(self.data_tab)
        self.data_tab.set_busy(True, "reading…")
        geno = self.state.geno
        return self.run_worker(loaders.load_any, path, self.state.model_dir, geno, self.state.trait,
                               on_done=lambda out: self._loaded(out, path),
                               on_error=lambda *_: self.data_tab.set_busy(False), what=f"reading {Path(path).name}")

    def open_demo(self, kind: str, max_cells: int | None = None) -> Worker:
        """The bundled demos: scanpy's pbmc68k_reduced, or the simulated breeding population."""
        self.tabs.setCurrentWidget(self.data_tab)
        self.data_tab.set_busy(True, "reading the demo…")
        if kind == "singlecell":
            return self.run_worker(loaders.load_demo_singlecell, self.state.model_dir, max_cells,
                                   on_done=lambda out: self._loaded(out, None),
                                   on_error=lambda *_: self.data_tab.set_busy(False), what="reading the demo")
        return self.run_worker(loaders.load_demo_genotype, on_done=lambda out: self._loaded(out, None),
                               on_error=lambda *_: self.data_tab.set_busy(False), what="reading the demo")

    def add_phenotypes(self, path: str, trait: str | None = None) -> Worker | None:
        """Join a phenotype table to the open genotypes."""
        if self.state.geno is None:
            self.show_error("Open genotypes first", "Open the genotype file, then add its phenotype table.")
            return None
        orientation = self.state.orientation
        return self.run_worker(loaders.load_phenotypes, path, self.state.geno, trait, orientation,
                               on_done=self._pheno_loaded, what="joining phenotypes")

    def reopen_genotype(self, orientation: str) -> Worker | None:
        """Read the open genotype matrix again the way round the user chose (then re-join its phenotypes)."""
        path, pheno = self.state.path, self.state.pheno_path
        if self.state.kind != "genotype" or not path:
            return None
        self.state.orientation = orientation  # the job reads the matrix the same way

        def done(out: dict[str, Any]) -> None:
            self._loaded(out, None)
            if pheno:
                self.add_phenotypes(pheno)

        return self.run_worker(loaders.load_genotype, path, 0.9, 0.01, orientation, on_done=done,
                               what=f"reading {Path(path).name} again")

    def _pheno_loaded(self, out: dict[str, Any]) -> None:
        again = out.get("genotype")
        if again is not None:  # the phenotype join turned the numeric matrix round: show the new reading
            self.state.set_genotype(again["path"], again["geno"], again["qc"], again["summary"],
                                    causal=again.get("causal"))
        with self.state.events.blocked():  # announced with the table, by the phenotypes event
            self.state.join = out["join"]
        self.state.set_phenotypes(out["path"], out["pheno"], out["trait"], out.get("traits"))

    def _loaded(self, out: dict[str, Any], path: str | None) -> None:
        self.data_tab.set_busy(False)
        kind = out["kind"]
        if kind == "phenotype":
            self._pheno_loaded(out)
            return
        if kind == "singlecell":
            self.state.set_singlecell(out["path"], out["data_path"], out["adata"], out["summary"],
                                      out.get("gene_match"), cell_qc=out.get("qc"))
        else:
            if path:  # a newly opened file starts from the automatic layout
                self.state.orientation = "auto"
            self.state.set_genotype(out["path"], out["geno"], out["qc"], out["summary"], causal=out.get("causal"))
            if out.get("pheno"):
                self._pheno_loaded(out["pheno"])
        if path:
            self.add_recent(path)
        self.setWindowTitle(f"OmicsLab — {Path(out['path']).name}")
        self.status_label.setText(f"Opened {out['path']}")
        self.datasetLoaded.emit(kind)

    def recompute_gene_match(self) -> None:
        """After the model changed: how many of the data's genes does it know?"""
        if self.state.adata is None:
            return

        def done(gm: Any) -> None:
            self.state.gene_match = gm  # emits gene_match

        self.run_worker(loaders.gene_match, self.state.adata, self.state.model_dir, on_done=done,
                        what="matching genes")

    # -- layout and recent files (QSettings) --------------------------------------------------------
    def _splitters(self) -> list[QSplitter]:
        """Every splitter, named "<tab>/<n>" so sizes are restored onto the same one."""
        out: list[QSplitter] = []
        for t in range(self.tabs.count()):
            for i, sp in enumerate(self.tabs.widget(t).findChildren(QSplitter)):
                sp.setObjectName(f"tab{t}/{i}")
                out.append(sp)
        return out

    def _restore_layout(self) -> None:
        """Splitter sizes from the last session (only sizes: never an orientation; the geometry is restored
        in __init__)."""
        raw = self.settings.value("splitter_sizes", "")
        try:
            saved = json.loads(raw) if isinstance(raw, str) and raw else {}
        except ValueError:  # a damaged settings file must not stop the window
            saved = {}
        for sp in self._splitters():
            sizes = saved.get(sp.objectName())
            if isinstance(sizes, list) and len(sizes) == sp.count() and sum(sizes) > 0:
                sp.setSizes([int(v) for v in sizes])

    def save_layout(self) -> None:
        """Window geometry and splitter sizes into QSettings."""
        self.settings.setValue("geometry", self.saveGeometry())
        self.settings.setValue("splitter_sizes", json.dumps({sp.objectName(): sp.sizes()
                                                             for sp in self._splitters()}))
        self.settings.sync()

    def recent_files(self) -> list[str]:
        v = self.settings.value("recent", [])
        if isinstance(v, str):
            v = [v]
        return [str(p) for p in (v or []) if p]

    def add_recent(self, path: str) -> None:
        rec = [p for p in self.recent_files() if p != path]
        rec.insert(0, str(path))
        self.settings.setValue("recent", rec[:MAX_RECENT])
        self.data_tab.set_recent(rec[:MAX_RECENT])

    # -- embeddings and layouts --------------------------------------------------------------------
    def load_embedding(self, h5ad_path: str | None) -> None:
        """Read an embed job's output (X_celllm + predictions) and map the cells."""
        if not h5ad_path or self.state.adata is None:
            return

        def read(path: str) -> dict[str, Any]:
            import anndata as ad

            a = ad.read_h5ad(path)
            preds = None
            cols = [c for c in ("celllm_label", "celllm_confidence") if c in a.obs]
            if cols:
                preds = a.obs[cols].copy()
                preds["celllm_label"] = preds["celllm_label"].astype(str) if "celllm_label" in preds else None
            return {"obs_names": np.asarray(a.obs_names), "emb": np.asarray(a.obsm["X_celllm"]), "preds": preds}

        def done(out: dict[str, Any]) -> None:
            names = pd.Index(self.state.adata.obs_names)
            pos = pd.Index(out["obs_names"]).get_indexer(names)
            if (pos < 0).any():
                self.show_error("The embedding does not match the dataset",
                                "Some cells of the open dataset are missing from the embedded file; reopen the "
                                "dataset the model was run on.")
                return
            preds = out["preds"].iloc[pos].set_axis(names) if out["preds"] is not None else None
            self.state.set_embedding(out["emb"][pos], preds)
            self.embeddingLoaded.emit()
            self.session.embedding_loaded()  # the workflow: map the cells, show Results

        self.run_worker(read, h5ad_path, on_done=done, what="reading embeddings")

    def compute_layout(self, refine: bool = True) -> None:
        """PCA preview at once, then (optionally) a refined UMAP, both in workers; a newer request wins."""
        from app.engine import layout as lc

        s = self.state
        if s.kind != "singlecell":
            return
        if s.embedding is not None:
            src = s.embedding
        elif s.adata is not None and "X_pca" in s.adata.obsm:
            src = np.asarray(s.adata.obsm["X_pca"])
        elif s.adata is not None and not getattr(s.adata, "isbacked", False):
            src = None  # computed in the worker: PCA of log-normalised counts
        else:
            return
        self._layout_gen += 1
        gen = self._layout_gen
        adata = s.adata

        def features() -> np.ndarray:
            if src is not None:
                return np.asarray(src, dtype=np.float32)
            from sklearn.decomposition import TruncatedSVD

            from app.ui.loaders import counts_or_x

            X = counts_or_x(adata)
            k = max(2, min(30, X.shape[1] - 1, X.shape[0] - 1))
            return TruncatedSVD(k, random_state=0).fit_transform(X).astype(np.float32)

        def preview() -> tuple[np.ndarray, np.ndarray]:
            f = features()
            return f, lc.pca_preview(f)

        def got_preview(out: tuple[np.ndarray, np.ndarray]) -> None:
            if gen != self._layout_gen:
                return
            feats, xy = out
            s.set_layout(xy, "PCA preview")
            self.layoutReady.emit("PCA preview")
            if refine:
                self.run_worker(lc.umap_refine, feats, xy, on_done=got_umap, what="computing UMAP")

        def got_umap(xy: np.ndarray) -> None:
            if gen != self._layout_gen:
                return
            s.set_layout(xy, "UMAP")
            self.layoutReady.emit("UMAP")

        self.run_worker(preview, on_done=got_preview, what="computing a preview map")

    # -- drag and drop -----------------------------------------------------------------------------
    def dragEnterEvent(self, ev: Any) -> None:
        if ev.mimeData().hasUrls():
            ev.acceptProposedAction()

    def dropEvent(self, ev: Any) -> None:
        urls = [u.toLocalFile() for u in ev.mimeData().urls() if u.isLocalFile()]
        if urls:
            ev.acceptProposedAction()
            if self._is_labels_table(urls[0]):
                self.tabs.setCurrentWidget(self.data_tab)
                self.data_tab.labels_panel.add_table(urls[0])
            else:
                self.open_path(urls[0])

    def _is_labels_table(self, path: str) -> bool:
        """A table dropped while single-cell data are open is their cell labels when it is no matrix of its own
        (it would read as a phenotype table, which only genotypes take)."""
        if self.state.kind != "singlecell":
            return False
        try:
            return loaders.detect_kind(path) == "phenotype"
        except OmicsLabError:
            return False

    # -- closing -----------------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Stop jobs, wait for worker threads, remember the layout. Safe to call twice."""
        try:
            self.save_layout()
        except Exception:
            traceback.print_exc()
        try:
            self.runner.shutdown(grace_s=2.0, wait_s=8.0)
        except Exception:
            traceback.print_exc()
        wait_all()
        self.gc_guard.stop()

    def closeEvent(self, ev: Any) -> None:
        self.shutdown()
        super().closeEvent(ev)


def widget_tree_ok(w: QWidget) -> bool:
    """True when the window built its five tabs (the --smoke check)."""
    return isinstance(w, MainWindow) and w.tabs.count() == 5


__all__ = ["MainWindow", "QTimer", "settings"]
