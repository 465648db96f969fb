"""The Data tab's "Cell labels" box: add a labels table (button or drag and drop) for any single-cell format.

The table is joined by cell ID in a worker (``app.ui.cell_labels.join_table``, the join ``--labels`` uses);
the box shows the join report, offers the table's columns as the label column, names classes too small to
split (fewer than 3 cells) with one click to drop them or merge them into "other", and writes the chosen
column as the labels table the fine-tune job reads (``state.labels_path``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PySide6.QtCore import Signal
from PySide6.QtWidgets import QGroupBox, QHBoxLayout, QLabel, QPlainTextEdit, QPushButton, QVBoxLayout

from app.ui import cell_labels


class LabelsPanel(QGroupBox):
    """Add cell labels. Signals: ``joined(str)`` (the label column), ``fixed(str)`` ("drop" / "merge")."""

    joined = Signal(str)
    fixed = Signal(str)

    def __init__(self, session: Any, shell: Any) -> None:
        super().__init__("Cell labels")
        self.session, self.state, self.shell = session, session.state, shell
        self.setAcceptDrops(True)
        self.add_btn = QPushButton("Add cell labels table…")
        self.add_btn.setToolTip("A CSV/TSV/TXT table with a cell ID column (any position, header or not) and "
                                "label columns; joined by cell ID. You can also drop the file on this box.")
        self.report = QPlainTextEdit()
        self.report.setReadOnly(True)
        self.report.setMaximumHeight(96)
        self.report.setPlaceholderText("Cell types in a separate table? Add it here (or drop it on this box).")
        self.small_label = QLabel("")
        self.small_label.setWordWrap(True)
        self.small_label.setStyleSheet("color: #a05a00;")
        self.drop_btn = QPushButton("Drop them")
        self.drop_btn.setToolTip("These cells lose their label (they are not used for training).")
        self.merge_btn = QPushButton("Merge into 'other'")
        row = QHBoxLayout()
        row.addWidget(self.add_btn)
        row.addStretch(1)
        fix = QHBoxLayout()
        fix.addWidget(self.small_label, 1)
        fix.addWidget(self.drop_btn)
        fix.addWidget(self.merge_btn)
        lay = QVBoxLayout(self)
        lay.addLayout(row)
        lay.addWidget(self.report)
        lay.addLayout(fix)
        self.join: cell_labels.LabelsJoin | None = None
        self.add_btn.clicked.connect(self._choose)
        self.drop_btn.clicked.connect(lambda: self.fix_small("drop"))
        self.merge_btn.clicked.connect(lambda: self.fix_small("merge"))
        self.state.events.dataset.connect(self._dataset_changed)
        self.state.events.label_key.connect(self._label_key_changed)
        self.refresh_small()

    # -- adding ------------------------------------------------------------------------------------
    def _choose(self) -> None:
        from PySide6.QtWidgets import QFileDialog

        path, _ = QFileDialog.getOpenFileName(self, "Add a cell labels table", "",
                                              "Tables (*.csv *.tsv *.txt *.gz);;All files (*)")
        if path:
            self.add_table(path)

    def dragEnterEvent(self, ev: Any) -> None:
        if ev.mimeData().hasUrls() and self.state.kind == "singlecell":
            ev.acceptProposedAction()

    def dropEvent(self, ev: Any) -> None:
        urls = [u.toLocalFile() for u in ev.mimeData().urls() if u.isLocalFile()]
        if urls:
            ev.acceptProposedAction()
            ev.setDropAction(ev.proposedAction())
            self.add_table(urls[0])

    def add_table(self, path: str) -> Any:
        """Join the table at ``path`` to the open cells (in a worker)."""
        s = self.state
        if s.kind != "singlecell" or s.adata is None:
            self.shell.show_error("Open single-cell data first", "Open the count matrix, then add its labels table.")
            return None
        obs = s.adata.obs
        return self.shell.run_worker(cell_labels.join_table, obs, path, on_done=self._joined,
                                     what=f"joining {Path(path).name}")

    def _joined(self, join: cell_labels.LabelsJoin) -> None:
        s = self.state
        self.join = join
        s.adata.obs = join.obs
        from app.data.singlecell import label_columns

        s.summary.label_columns = label_columns(s.adata.obs)
        self.report.setPlainText(join.report())
        with s.events.blocked():
            s.label_key = join.label_key
        s.events.dataset.emit()  # the Data tab refills its label column list and classes from the summary
        self._write_labels()
        self.session.log(f"labels table {join.path} joined: " + join.report().splitlines()[0])
        self.joined.emit(join.label_key or "")

    def _dataset_changed(self) -> None:
        s = self.state
        cols = set(s.adata.obs.columns) if s.adata is not None else set()
        if self.join is not None and not set(self.join.columns) <= cols:
            self.join = None  # another dataset was opened: its labels table is gone
            self.report.clear()
            s.labels_path = None
        self.refresh_small()

    def _label_key_changed(self, *_: Any) -> None:
        self.refresh_small()
        if self.join is not None:
            self._write_labels()

    # -- small classes -----------------------------------------------------------------------------
    def _values(self) -> pd.Series | None:
        s = self.state
        if s.adata is None or not s.label_key or s.label_key not in s.adata.obs.columns:
            return None
        return s.adata.obs[s.label_key]

    def refresh_small(self) -> None:
        """Name the classes with fewer than 3 cells, or hide the fix buttons."""
        vals = self._values()
        small = cell_labels.small_classes(vals) if vals is not None else {}
        if small:
            names = ", ".join(f"{k} ({v})" for k, v in small.items())
            self.small_label.setText(f"{len(small)} class(es) have fewer than {cell_labels.MIN_CLASS_CELLS} cells "
                                     f"and cannot be split into train/validation/test: {names}.")
        else:
            self.small_label.setText("")
        for w in (self.small_label, self.drop_btn, self.merge_btn):
            w.setVisible(bool(small))

    def fix_small(self, how: str) -> None:
        """Drop the small classes' labels or merge them into "other" (the job then learns the same)."""
        s = self.state
        vals = self._values()
        if vals is None:
            return
        new = cell_labels.fix_small_classes(vals, how)
        s.adata.obs[s.label_key] = pd.Categorical(new)
        from app.data.singlecell import label_columns

        s.summary.label_columns = label_columns(s.adata.obs)
        s.events.dataset.emit()
        self._write_labels()
        self.session.log(f"small classes of {s.label_key}: " + ("dropped" if how == "drop" else "merged into 'other'"))
        self.fixed.emit(how)

    def _write_labels(self) -> None:
        """The chosen column as the table the fine-tune job joins (so it learns what the window shows)."""
        s = self.state
        vals = self._values()
        if vals is None:
            return
        from app.ui.loaders import cache_dir

        stem = Path(s.data_path or "data").name.split(".")[0]
        path = cache_dir() / f"labels-{stem}-{s.label_key}-{abs(hash(s.data_path)) % 10**8}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        values = vals.astype(object).where(vals.notna(), np.nan).to_numpy()
        s.labels_path = str(cell_labels.write_labels(s.adata.obs_names, values, s.label_key, path))


__all__ = ["LabelsPanel"]
