"""Step 5, Export: annotated AnnData, CSV tables, GEBV tables, plots and the trained model. All writes are
atomic (temp file + rename); large writes run in a worker thread."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from PySide6.QtWidgets import QFileDialog, QGridLayout, QGroupBox, QLabel, QPushButton, QVBoxLayout, QWidget

if TYPE_CHECKING:
    from app.ui.session import Session
    from app.ui.shell import Shell


def copy_tree_atomic(src: str | Path, dst: str | Path) -> Path:
    """Copy a folder so that ``dst`` appears complete or not at all (copy beside, then rename)."""
    src, dst = Path(src), Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=dst.parent))
    try:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
        if dst.exists():
            shutil.rmtree(dst)
        os.replace(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dst


class ExportTab(QWidget):
    """Buttons that save what the session produced."""

    def __init__(self, session: Session, shell: Shell) -> None:
        super().__init__()
        self.session, self.state, self.shell = session, session.state, shell
        self.status = QLabel("Nothing exported yet.")
        self.status.setWordWrap(True)
        sc = QGroupBox("Single-cell")
        g = QGridLayout(sc)
        self.h5ad_btn = QPushButton("Annotated AnnData (.h5ad)…")
        self.h5ad_btn.setToolTip("obsm X_celllm and X_umap, predictions, manual labels, uns['omicslab'] (Ctrl+E)")
        self.labels_btn = QPushButton("Labels CSV…")
        self.emb_btn = QPushButton("Embeddings CSV…")
        for i, (b, t) in enumerate([
                (self.h5ad_btn, "The dataset with embeddings, map, predictions, manual labels and run parameters."),
                (self.labels_btn, "One row per cell: true label, CellLM label and confidence, manual label."),
                (self.emb_btn, "One row per cell: the CellLM embedding and the 2-D map.")]):
            g.addWidget(b, i, 0)
            lab = QLabel(t)
            lab.setWordWrap(True)
            g.addWidget(lab, i, 1)
        gp = QGroupBox("Genomic prediction")
        g2 = QGridLayout(gp)
        self.gebv_btn = QPushButton("Predictions / GEBV CSV…")
        self.cv_btn = QPushButton("CV table CSV…")
        g2.addWidget(self.gebv_btn, 0, 0)
        g2.addWidget(QLabel("Out-of-fold predictions (genomic estimated breeding values) per sample and model."),
                     0, 1)
        g2.addWidget(self.cv_btn, 1, 0)
        g2.addWidget(QLabel("Pearson r per model and fold, with mean and standard deviation."), 1, 1)
        self.gebv_all_btn = QPushButton("GEBVs of all lines CSV…")
        g2.addWidget(self.gebv_all_btn, 2, 0)
        g2.addWidget(QLabel("The final model's predictions for every genotyped line, phenotyped or not (Results: "
                            "'Train this model on all lines')."), 2, 1)
        common = QGroupBox("Plots and model")
        g3 = QGridLayout(common)
        self.plots_btn = QPushButton("All plots (PNG + SVG)…")
        self.model_btn = QPushButton("Trained model…")
        g3.addWidget(self.plots_btn, 0, 0)
        g3.addWidget(QLabel("Every plot of the Data, Train and Results tabs into a folder."), 0, 1)
        g3.addWidget(self.model_btn, 1, 0)
        g3.addWidget(QLabel("The current run's model folder (CellLM: safetensors + vocabulary + config; genomic "
                            "prediction: the final model's run folder)."), 1, 1)
        for b in (self.h5ad_btn, self.labels_btn, self.emb_btn, self.gebv_btn, self.cv_btn, self.gebv_all_btn,
                  self.plots_btn, self.model_btn):
            b.setMinimumWidth(240)
            b.setMaximumWidth(320)
        for g_ in (g, g2, g3):
            g_.setColumnStretch(1, 1)
        self.sc_box, self.gp_box = sc, gp
        lay = QVBoxLayout(self)
        lay.addWidget(sc)
        lay.addWidget(gp)
        lay.addWidget(common)
        lay.addWidget(self.status)
        lay.addStretch(1)
        self.h5ad_btn.clicked.connect(lambda: self.export_h5ad())
        self.labels_btn.clicked.connect(lambda: self.export_labels())
        self.emb_btn.clicked.connect(lambda: self.export_embedding())
        self.gebv_btn.clicked.connect(lambda: self.export_gebv())
        self.cv_btn.clicked.connect(lambda: self.export_cv())
        self.gebv_all_btn.clicked.connect(lambda: self.export_gebv_all())
        self.plots_btn.clicked.connect(lambda: self.export_plots())
        self.model_btn.clicked.connect(lambda: self.export_model())
        ev = self.state.events
        for sig in (ev.dataset, ev.embedding, ev.layout, ev.gp_result, ev.gp_final, ev.runs, ev.metrics):
            sig.connect(self.update_buttons)
        self.update_buttons()
        self.last_written: Path | None = None

    def update_buttons(self) -> None:
        """Enable what makes sense for the data and results at hand."""
        s = self.state
        sc = s.kind == "singlecell"
        self.h5ad_btn.setEnabled(sc)
        self.labels_btn.setEnabled(sc)
        self.emb_btn.setEnabled(sc and (s.embedding is not None or s.layout is not None))
        has_gp = bool(s.gp_result)
        self.sc_box.setVisible(s.kind != "genotype")  # show what fits the open data
        self.gp_box.setVisible(s.kind != "singlecell")
        self.gebv_btn.setEnabled(has_gp)
        self.cv_btn.setEnabled(has_gp)
        self.gebv_all_btn.setEnabled(bool(s.gp_final))
        self.model_btn.setEnabled(self._model_dir() is not None)
        self.plots_btn.setEnabled(s.kind is not None)

    def _ask(self, title: str, default: str, filt: str) -> str | None:
        path, _ = QFileDialog.getSaveFileName(self, title, default, filt)
        return path or None

    def _done(self, path: Any) -> None:
        self.last_written = Path(path)
        self.status.setText(f"Saved {path}")
        self.session.log(f"exported {path}")

    def _run(self, what: str, fn: Any, *args: Any) -> None:
        self.status.setText(f"Saving {what}…")
        self.shell.run_worker(fn, *args, on_done=self._done, what=f"saving {what}")

    # -- single-cell -------------------------------------------------------------------------------
    def export_h5ad(self, path: str | None = None) -> None:
        """Annotated AnnData (atomic write in a worker)."""
        from app.data.export import write_h5ad_atomic

        if self.state.kind != "singlecell":
            self.shell.show_error("Nothing to export", "Open a single-cell dataset first.")
            return
        path = path or self._ask("Save annotated AnnData", "annotated.h5ad", "AnnData (*.h5ad)")
        if not path:
            return
        if not path.endswith(".h5ad"):
            path += ".h5ad"
        ad = self.state.annotated_adata()
        self._run("the annotated AnnData", write_h5ad_atomic, ad, path)

    def export_labels(self, path: str | None = None) -> None:
        """Per-cell labels CSV."""
        from app.data.export import write_csv_atomic

        path = path or self._ask("Save labels", "labels.csv", "CSV (*.csv)")
        if path:
            self._run("labels", write_csv_atomic, self.state.labels_table(), path)

    def export_embedding(self, path: str | None = None) -> None:
        """Per-cell embedding (+ map) CSV."""
        from app.data.export import write_csv_atomic

        s = self.state
        path = path or self._ask("Save embeddings", "embeddings.csv", "CSV (*.csv)")
        if not path:
            return
        parts = []
        idx = pd.Index(s.adata.obs_names, name="cell")
        if s.embedding is not None:
            parts.append(pd.DataFrame(s.embedding, index=idx,
                                      columns=[f"celllm_{i}" for i in range(s.embedding.shape[1])]))
        if s.layout is not None:
            parts.append(pd.DataFrame(s.layout, index=idx, columns=["map_1", "map_2"]))
        self._run("embeddings", write_csv_atomic, pd.concat(parts, axis=1), path)

    # -- genotype ----------------------------------------------------------------------------------
    def export_gebv(self, path: str | None = None) -> None:
        """Out-of-fold predictions (GEBV) CSV."""
        from app.data.export import write_csv_atomic

        tables = self.state.gp_tables()
        df = tables.get("gebv")
        if df is None:
            self.shell.show_error("No predictions to export",
                                "This run did not write per-sample predictions. Run the cross-validation again.")
            return
        path = path or self._ask("Save predictions (GEBV)", "gebv.csv", "CSV (*.csv)")
        if path:
            self._run("predictions", write_csv_atomic, df, path, False)

    def export_gebv_all(self, path: str | None = None) -> None:
        """GEBVs of every genotyped line from the final model."""
        from app.data.export import write_csv_atomic

        src = (self.state.gp_final or {}).get("gebv_csv")
        if not src or not Path(src).is_file():
            self.shell.show_error("No final model yet", "On the Results tab, train the chosen model on all lines.")
            return
        path = path or self._ask("Save GEBVs of all lines", "gebv_all_lines.csv", "CSV (*.csv)")
        if path:
            self._run("GEBVs", write_csv_atomic, pd.read_csv(src), path, False)

    def export_cv(self, path: str | None = None) -> None:
        """Pearson r per model and fold CSV."""
        from app.data.export import write_csv_atomic

        df = self.state.gp_tables().get("cv_pearson_r")
        if df is None:
            self.shell.show_error("No CV results to export", "Cross-validate on the Train tab first.")
            return
        path = path or self._ask("Save CV table", "cv_pearson_r.csv", "CSV (*.csv)")
        if path:
            self._run("CV table", write_csv_atomic, df, path, False)

    # -- common ------------------------------------------------------------------------------------
    def export_plots(self, folder: str | None = None) -> list[Path]:
        """Every plot of every view as PNG and SVG into ``folder`` (on the GUI thread: pyqtgraph renders
        there). Each view says which of its plots have something to show (``PlotSource.plots``)."""
        from app.ui.plots import export_plot

        folder = folder or QFileDialog.getExistingDirectory(self, "Folder for the plots")
        if not folder:
            return []
        out: list[Path] = []
        Path(folder).mkdir(parents=True, exist_ok=True)
        for source in self.shell.plot_sources():
            for name, w in source.plots().items():
                for ext in (".png", ".svg"):
                    try:
                        out.append(export_plot(w, Path(folder) / f"{name}{ext}"))
                    except Exception as exc:  # one plot failing must not stop the others
                        self.session.log(f"could not save {name}{ext}: {exc}", "warning")
        self.status.setText(f"Saved {len(out)} plot files into {folder}")
        return out

    def _model_dir(self) -> Path | None:
        fin = self.state.gp_final
        if self.state.kind == "genotype":  # the whole train run: models/, markers, GEBVs, gp_model.json
            return Path(fin["run_dir"]) if fin and Path(fin.get("run_dir", "")).is_dir() else None
        rec = self.state.current
        if rec is None:
            return None
        for cand in (Path(rec.path) / "model", Path(rec.path)):
            if (cand / "model.safetensors").is_file() or (cand / "vocab.txt").is_file():
                return cand
        return None

    def export_model(self, folder: str | None = None) -> None:
        """Copy the current run's model folder (atomically)."""
        src = self._model_dir()
        if src is None:
            self.shell.show_error("No trained model", "Finish a training run first (or reopen one).")
            return
        folder = folder or QFileDialog.getExistingDirectory(self, "Folder to save the model into")
        if folder:
            prefix = "gp" if self.state.kind == "genotype" else "celllm"
            dst = Path(folder) / f"{prefix}-{src.name if prefix == 'gp' else Path(self.state.current.path).name}"
            self._run("the model", copy_tree_atomic, src, dst)
