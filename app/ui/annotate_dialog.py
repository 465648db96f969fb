""""Annotate another dataset…": apply a fine-tuned model to a new experiment (a view of ``Annotation``).

Choose the dataset (and, to check the transfer, its own labels table), press Annotate: the annotate job
runs through the window's job runner (a spawned process, like every job). Then the confidence slider moves
the "Unassigned" threshold with live per-class counts and scores, the joint map shows reference and query
cells coloured by dataset, label or confidence, and Export writes the annotated query at that threshold.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSlider,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.engine.events import Failed, Result
from app.ui.annotation import ANNOTATE_TARGET, Annotation
from app.ui.plots import EmbeddingView
from app.ui.session import JobRequest, Session

SC_FILTER = "Single-cell (*.h5ad *.h5 *.loom *.csv *.tsv *.txt *.gz *.mtx);;All files (*)"
COLOUR_BY = {"Dataset": "dataset", "Label (query: predicted)": "label", "Confidence": "confidence"}


class AnnotateDialog(QDialog):
    """The annotate step. Signals: ``annotated()`` (a result is shown), ``exported(dict)``."""

    annotated = Signal()
    exported = Signal(dict)

    def __init__(self, session: Session, shell: Any, runner: Any, model: str | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Annotate another dataset")
        self.session, self.shell, self.runner = session, shell, runner
        self.ann = Annotation(model)
        self.req: JobRequest | None = None
        # -- inputs
        self.model_label = QLabel(model or "—")
        self.model_label.setWordWrap(True)
        self.model_btn = QPushButton("Model folder…")
        self.model_btn.setToolTip("A fine-tune run folder (it holds model/ with the classifier head).")
        self.query_label = QLabel("—")
        self.query_label.setWordWrap(True)
        self.query_btn = QPushButton("Dataset…")
        self.labels_label = QLabel("none (optional: to score the transfer)")
        self.labels_label.setWordWrap(True)
        self.labels_btn = QPushButton("Its labels table…")
        self.key_combo = QComboBox()
        self.key_combo.setToolTip("The column of the query's labels table that holds its cell types.")
        self.run_btn = QPushButton("Annotate")
        self.run_btn.setDefault(True)
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(220)
        self.progress.hide()
        form = QFormLayout()
        for title, lab, btn in (("Model:", self.model_label, self.model_btn),
                                ("Dataset to annotate:", self.query_label, self.query_btn),
                                ("Its own labels:", self.labels_label, self.labels_btn)):
            row = QHBoxLayout()
            row.addWidget(lab, 1)
            row.addWidget(btn)
            form.addRow(title, row)
        form.addRow("Label column:", self.key_combo)
        run_row = QHBoxLayout()
        run_row.addWidget(self.run_btn)
        run_row.addWidget(self.progress)
        run_row.addStretch(1)
        # -- results
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, 100)
        self.slider.setValue(round(100 * self.ann.threshold))
        self.slider.setToolTip("Cells whose confidence (top class probability) is under this become Unassigned.")
        self.threshold_label = QLabel("")
        self.counts = QTableWidget(0, 2)
        self.counts.setHorizontalHeaderLabels(["label", "cells"])
        self.counts.horizontalHeader().setStretchLastSection(True)
        self.counts.verticalHeader().hide()
        self.scores_label = QLabel("")
        self.scores_label.setWordWrap(True)
        self.colour_combo = QComboBox()
        self.colour_combo.addItems(list(COLOUR_BY))
        self.view = EmbeddingView()
        self.export_btn = QPushButton("Export…")
        self.export_btn.setToolTip("Annotated .h5ad (obs celllm_label, celllm_confidence; threshold in "
                                   "uns['omicslab']), labels CSV, the joint map (CSV and PNG)")
        self.result_box = QWidget()
        left = QVBoxLayout()
        trow = QHBoxLayout()
        trow.addWidget(QLabel("Confidence threshold:"))
        trow.addWidget(self.slider, 1)
        trow.addWidget(self.threshold_label)
        left.addLayout(trow)
        left.addWidget(self.counts, 1)
        left.addWidget(self.scores_label)
        left.addWidget(self.export_btn)
        lw = QWidget()
        lw.setLayout(left)
        right = QVBoxLayout()
        crow = QHBoxLayout()
        crow.addWidget(QLabel("Colour the joint map by:"))
        crow.addWidget(self.colour_combo)
        crow.addStretch(1)
        right.addLayout(crow)
        right.addWidget(self.view, 1)
        rw = QWidget()
        rw.setLayout(right)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(lw)
        split.addWidget(rw)
        split.setSizes([330, 620])
        QVBoxLayout(self.result_box).addWidget(split)
        self.result_box.setEnabled(False)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addLayout(run_row)
        lay.addWidget(self.result_box, 1)
        self.resize(1040, 720)
        # -- wiring
        self.model_btn.clicked.connect(self._choose_model)
        self.query_btn.clicked.connect(self._choose_query)
        self.labels_btn.clicked.connect(self._choose_labels)
        self.run_btn.clicked.connect(self.run)
        self.slider.valueChanged.connect(lambda v: self.ann.set_threshold(v / 100))
        self.colour_combo.currentTextChanged.connect(lambda _: self._recolour())
        self.export_btn.clicked.connect(self._export_dialog)
        self.ann.loaded.connect(self._show_result)
        self.ann.threshold_changed.connect(lambda _: self._refresh_threshold())
        runner.progress.connect(self._progress)
        runner.finished.connect(self._finished)
        self._refresh_threshold()

    # -- inputs ------------------------------------------------------------------------------------
    def set_model(self, path: str) -> None:
        self.ann.model = str(path)
        self.model_label.setText(str(path))

    def set_query(self, path: str, labels: str | None = None, label_key: str | None = None) -> None:
        """The dataset to annotate and, optionally, its own labels table and label column."""
        self.ann.query = str(path)
        self.query_label.setText(str(path))
        self.ann.labels_table = str(labels) if labels else None
        self.labels_label.setText(str(labels) if labels else "none (optional: to score the transfer)")
        self.key_combo.clear()
        if labels:
            self.key_combo.addItems(_table_columns(str(labels)))
        if label_key:
            self.key_combo.setCurrentText(label_key)
        self.ann.label_key = self.key_combo.currentText() or None

    def _choose_model(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "A fine-tuned model (a fine-tune run folder)")
        if d:
            self.set_model(d)

    def _choose_query(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Dataset to annotate", "", SC_FILTER)
        if path:
            self.set_query(path)

    def _choose_labels(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "The dataset's own labels table", "",
                                              "Tables (*.csv *.tsv *.txt *.gz);;All files (*)")
        if path and self.ann.query:
            self.set_query(self.ann.query, path)

    # -- the job -----------------------------------------------------------------------------------
    def run(self) -> JobRequest | None:
        """Start the annotate job (through the window's runner)."""
        self.ann.label_key = self.key_combo.currentText() or None
        problem = self.ann.check_ready()
        if problem:
            self.shell.show_error("Not ready to annotate", problem)
            return None
        if self.runner.running:
            self.shell.show_error("A job is running", "Wait for it to finish (or stop it), then annotate.")
            return None
        run_dir = self.session.new_run_dir("annotate")
        cfg = self.ann.job_config(run_dir, self.session.state.device)
        cfg["map"] = "umap" if self.session.refine_layout else "pca"  # the window's map setting (tests: pca)
        req = JobRequest(ANNOTATE_TARGET, cfg, run_dir, purpose="annotate", kind="annotate")
        self.req = req
        self.run_btn.setEnabled(False)
        self.progress.setRange(0, 0)
        self.progress.show()
        self.session.request(req)
        return req

    def _progress(self, ev: Any) -> None:
        if self.req is not None and self.runner.req is self.req and ev.total:
            self.progress.setRange(0, int(ev.total))
            self.progress.setValue(int(ev.step))

    def _finished(self, req: Any, final: Result | Failed) -> None:
        if req is not self.req:
            return
        self.run_btn.setEnabled(True)
        self.progress.hide()
        if isinstance(final, Result) and not final.cancelled and not final.value.get("cancelled"):
            try:
                self.ann.load(final.value)
            except Exception as exc:  # a half-written result folder: say so, keep the dialog usable
                self.shell.show_error("Could not read the annotation", str(exc))

    # -- results -----------------------------------------------------------------------------------
    def _show_result(self) -> None:
        self.result_box.setEnabled(True)
        self.slider.blockSignals(True)
        self.slider.setValue(round(100 * self.ann.threshold))
        self.slider.blockSignals(False)
        jm = self.ann.joint
        if jm is not None:
            self.view.set_data(jm[["x", "y"]].to_numpy(np.float32), None, ids=jm["cell"].astype(str).to_numpy(),
                               hover_cols={"dataset": jm["dataset"].astype(str).to_numpy()})
        self._refresh_threshold()
        self.annotated.emit()

    def _refresh_threshold(self) -> None:
        self.threshold_label.setText(f"{self.ann.threshold:.2f}")
        if self.ann.adata is None:
            return
        counts = self.ann.counts()
        self.counts.setRowCount(len(counts))
        for i, (k, v) in enumerate(counts.items()):
            self.counts.setItem(i, 0, QTableWidgetItem(k))
            it = QTableWidgetItem(f"{v:,}")
            it.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            self.counts.setItem(i, 1, it)
        sc = self.ann.scores()
        if sc and sc.get("n_scored"):
            text = (f"Against the dataset's own labels ({sc['n_scored']:,} cells): accuracy {sc['accuracy']:.3f}, "
                    f"macro-F1 {sc['macro_f1']:.3f}; {sc['assigned_fraction']:.1%} assigned, accuracy of the "
                    f"assigned cells {sc['accuracy_assigned']:.3f} (Unassigned counts as wrong).")
            base = (self.ann.report or {}).get("baseline") or {}
            if "accuracy" in base:
                text += (f" Baseline ({base.get('method', 'logistic regression')}, fitted on the reference): "
                         f"accuracy {base['accuracy']:.3f}, macro-F1 {base['macro_f1']:.3f}.")
            if sc.get("unknown_classes"):
                text += " Classes the model never saw: " + ", ".join(sc["unknown_classes"]) + "."
            self.scores_label.setText(text)
        else:
            self.scores_label.setText("The dataset has no labels of its own: nothing to score against.")
        self._recolour()

    def _recolour(self) -> None:
        if self.ann.joint is None:
            return
        by = COLOUR_BY[self.colour_combo.currentText()]
        self.view.recolour(self.ann.map_values(by), title=self.colour_combo.currentText())

    # -- export ------------------------------------------------------------------------------------
    def _export_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export the annotated dataset", "annotated.h5ad",
                                              "AnnData (*.h5ad)")
        if path:
            self.export_to(path if path.endswith(".h5ad") else path + ".h5ad")

    def export_to(self, path: str) -> Any:
        """Write every file at the current threshold in a worker; ``exported`` carries the paths."""

        def done(files: dict[str, str]) -> None:
            self.session.log("exported " + ", ".join(files.values()))
            self.exported.emit(files)

        return self.shell.run_worker(self.ann.export, path, on_done=done, what="exporting the annotation")


def _table_columns(path: str) -> list[str]:
    """The header of a labels table (its label-column choices); [] when it cannot be read."""
    import pandas as pd

    try:
        head = pd.read_csv(path, sep=None, engine="python", nrows=5, dtype=str)
    except Exception:  # the job's join reports a bad table properly; here it only fills a list
        return []
    return [str(c) for c in head.columns if not str(c).startswith("Unnamed")]


__all__ = ["AnnotateDialog"]
