"""Step 1, Data: open a dataset (dialog, drag-and-drop, recent files, demos) and see its summary.

Reading and summarising happen in a worker thread (the window's ``Shell`` services); this tab only shows
what ``AppState`` holds and writes the user's choices (label column, trait) back to it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QMenu,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QTableWidget,
    QTableWidgetItem,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.ui import plots

if TYPE_CHECKING:
    from app.ui.session import Session
    from app.ui.shell import Shell

OPEN_FILTER = ("Datasets (*.h5ad *.h5 *.loom *.csv *.tsv *.txt *.gz *.mtx *.bed *.vcf *.hmp.txt);;"
               "Single-cell (*.h5ad *.h5 *.loom *.csv *.tsv *.gz);;Genotypes (*.bed *.vcf *.vcf.gz *.hmp.txt *.csv);;"
               "All files (*)")


ORIENT_CHOICES = (("automatic", "auto"), ("lines are rows", "samples_x_markers"),
                  ("markers are rows", "markers_x_samples"))


class DataTab(QWidget):
    """Open a dataset and read its summary."""

    labelColumnChanged = Signal(str)

    def __init__(self, session: Session, shell: Shell) -> None:
        super().__init__()
        self.session, self.state, self.shell = session, session.state, shell
        # -- open row
        self.open_btn = QPushButton("Open file…")
        self.open_btn.setToolTip("Open a single-cell or genotype file (Ctrl+O). You can also drop files here.")
        from app.ui.launch import icon

        self.open_btn.setIcon(icon("open"))
        self.open_dir_btn = QPushButton("Open 10x folder…")
        self.recent_btn = QToolButton()
        self.recent_btn.setText("Recent")
        self.recent_btn.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.recent_menu = QMenu(self)
        self.recent_btn.setMenu(self.recent_menu)
        self.demo_sc_btn = QPushButton("Demo: PBMC single-cell")
        self.demo_geno_btn = QPushButton("Demo: simulated genotypes")
        self.busy = QProgressBar()
        self.busy.setRange(0, 0)
        self.busy.setMaximumWidth(160)
        self.busy.hide()
        top = QHBoxLayout()
        for w in (self.open_btn, self.open_dir_btn, self.recent_btn, self.demo_sc_btn, self.demo_geno_btn):
            top.addWidget(w)
        top.addStretch(1)
        top.addWidget(self.busy)
        self.hint = QLabel("Drop a file or folder anywhere in this window, or use Open. Formats: .h5ad, 10x "
                           "folder or .h5, .loom, CSV/TSV matrices; PLINK .bed, VCF, HapMap, 0/1/2 CSV; "
                           "phenotype tables.")
        self.hint.setWordWrap(True)
        self.hint.setStyleSheet("color: #555;")

        # -- summary (left) and kind-specific panel (right)
        self.summary = QPlainTextEdit()
        self.summary.setReadOnly(True)
        self.summary.setPlaceholderText("No dataset open yet.")
        self.problems = QLabel("")
        self.problems.setWordWrap(True)
        self.problems.setStyleSheet("color: #a40000;")
        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 0, 0)
        ll.addWidget(QLabel("<b>Summary</b>"))
        ll.addWidget(self.summary, 1)
        ll.addWidget(self.problems)

        self.stack = QStackedWidget()
        self.stack.addWidget(QLabel(""))
        self.stack.addWidget(self._build_sc_panel())
        self.stack.addWidget(self._build_geno_panel())
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(left)
        split.addWidget(self.stack)
        split.setSizes([420, 680])
        lay = QVBoxLayout(self)
        lay.addLayout(top)
        lay.addWidget(self.hint)
        lay.addWidget(split, 1)

        self.open_btn.clicked.connect(lambda: self.shell.open_dialog())
        self.open_dir_btn.clicked.connect(self._open_dir)
        self.demo_sc_btn.clicked.connect(lambda: self.shell.open_demo("singlecell"))
        self.demo_geno_btn.clicked.connect(lambda: self.shell.open_demo("genotype"))
        ev = self.state.events
        ev.dataset.connect(self.refresh)
        ev.phenotypes.connect(self.refresh_pheno)
        ev.gene_match.connect(self.refresh_gene_match)
        ev.label_key.connect(self._show_label_key)

    # -- panels ------------------------------------------------------------------------------------
    def _build_sc_panel(self) -> QWidget:
        w = QWidget()
        form = QFormLayout()
        self.label_combo = QComboBox()
        self.label_combo.setToolTip("The .obs column holding the cell types the model should learn.")
        self.label_combo.currentTextChanged.connect(self._label_changed)
        self.match_label = QLabel("—")
        self.match_label.setWordWrap(True)
        form.addRow("Label column:", self.label_combo)
        form.addRow("Gene match with model:", self.match_label)
        self.class_table = QTableWidget(0, 2)
        self.class_table.setHorizontalHeaderLabels(["class", "cells"])
        self.class_table.horizontalHeader().setStretchLastSection(True)
        self.class_table.verticalHeader().hide()
        self.class_table.setMaximumHeight(200)
        self.qc_counts = pg.PlotWidget()
        self.qc_genes = pg.PlotWidget()
        for p in (self.qc_counts, self.qc_genes):
            p.setMinimumHeight(150)
        qc = QHBoxLayout()
        qc.addWidget(self.qc_counts)
        qc.addWidget(self.qc_genes)
        from app.ui.labels_panel import LabelsPanel

        self.labels_panel = LabelsPanel(self.session, self.shell)
        lay = QVBoxLayout(w)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.labels_panel)
        lay.addLayout(form)
        lay.addWidget(QLabel("<b>Classes</b>"))
        lay.addWidget(self.class_table)
        box = QGroupBox("Quality control")
        box.setLayout(qc)
        lay.addWidget(box, 1)
        return w

    def _build_geno_panel(self) -> QWidget:
        w = QWidget()
        self.pheno_btn = QPushButton("Add phenotype table…")
        self.trait_combo = QComboBox()
        self.trait_combo.setToolTip("The trait the models predict.")
        self.trait_combo.currentTextChanged.connect(self._trait_changed)
        self.orient_combo = QComboBox()
        for text, value in ORIENT_CHOICES:
            self.orient_combo.addItem(text, value)
        self.orient_combo.setToolTip("Numeric matrices: which way round the file is. Automatic: the axis whose IDs "
                                     "join the phenotype table, then the corner cell's word, then the shape.")
        self.orient_combo.activated.connect(self._orientation_chosen)
        row = QHBoxLayout()
        row.addWidget(self.pheno_btn)
        row.addWidget(QLabel("Trait:"))
        row.addWidget(self.trait_combo, 1)
        row.addWidget(QLabel("Layout:"))
        row.addWidget(self.orient_combo)
        self.join_text = QPlainTextEdit()
        self.join_text.setReadOnly(True)
        self.join_text.setMaximumHeight(130)
        self.join_text.setPlaceholderText("Add a phenotype table to see which samples join.")
        self.qc_miss = pg.PlotWidget()
        self.qc_maf = pg.PlotWidget()
        self.qc_trait = pg.PlotWidget()
        for p in (self.qc_miss, self.qc_maf, self.qc_trait):
            p.setMinimumHeight(150)
        qc = QHBoxLayout()
        qc.addWidget(self.qc_miss)
        qc.addWidget(self.qc_maf)
        qc.addWidget(self.qc_trait)
        lay = QVBoxLayout(w)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(row)
        lay.addWidget(QLabel("<b>Sample ID join</b>"))
        lay.addWidget(self.join_text)
        box = QGroupBox("Quality control (before filtering)")
        box.setLayout(qc)
        lay.addWidget(box, 1)
        self.pheno_btn.clicked.connect(self._add_pheno)
        return w

    # -- actions -----------------------------------------------------------------------------------
    def _open_dir(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Open a 10x folder (matrix.mtx, barcodes, genes/features)")
        if d:
            self.shell.open_path(d)

    def _add_pheno(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Add a phenotype table", "", "Tables (*.csv *.tsv *.txt *.fam);;"
                                              "All files (*)")
        if path:
            self.shell.add_phenotypes(path)

    def _orientation_chosen(self, _index: int) -> None:
        self.shell.reopen_genotype(str(self.orient_combo.currentData()))

    def _label_changed(self, text: str) -> None:
        if text and self.state.kind == "singlecell" and text != self.state.label_key:
            self.state.label_key = text  # emits label_key: this tab's classes, the map's hover, the Train button

    def _show_label_key(self, key: str | None) -> None:
        if key and self.label_combo.currentText() != key:
            self.label_combo.blockSignals(True)
            self.label_combo.setCurrentText(key)
            self.label_combo.blockSignals(False)
        self._fill_classes()
        self.labelColumnChanged.emit(key or "")

    def _trait_changed(self, text: str) -> None:
        if text and self.state.pheno is not None and text != self.state.trait:
            self.shell.add_phenotypes(self.state.pheno_path, trait=text)

    def set_busy(self, busy: bool, what: str = "") -> None:
        """Show the spinner while a file is read."""
        self.busy.setVisible(busy)
        self.busy.setFormat(what)
        for b in (self.open_btn, self.open_dir_btn, self.demo_sc_btn, self.demo_geno_btn, self.pheno_btn):
            b.setEnabled(not busy)

    def set_recent(self, paths: list[str]) -> None:
        """Fill the Recent menu."""
        self.recent_menu.clear()
        for p in paths:
            act = self.recent_menu.addAction(p)
            act.triggered.connect(lambda _=False, p=p: self.shell.open_path(p))
        self.recent_btn.setEnabled(bool(paths))

    # -- views -------------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Redraw from the state after a dataset was read."""
        s = self.state
        if s.kind == "singlecell":
            self.stack.setCurrentIndex(1)
            self.summary.setPlainText(s.summary.to_text())
            self.problems.setText("\n".join(f"⚠ {p}" for p in s.summary.problems))
            self.label_combo.blockSignals(True)
            self.label_combo.clear()
            self.label_combo.addItems(list(s.summary.label_columns))
            if s.label_key:
                self.label_combo.setCurrentText(s.label_key)
            self.label_combo.blockSignals(False)
            self._fill_classes()
            self.refresh_gene_match()
            qc = s.cell_qc or {}
            if "counts_per_cell" in qc:
                plots.histogram(self.qc_counts, np.log10(np.maximum(qc["counts_per_cell"], 1)),
                                title="Counts per cell", xlabel="log10 counts")
                plots.histogram(self.qc_genes, qc["genes_per_cell"], title="Genes detected per cell",
                                colour="#2ca02c", xlabel="genes")
        elif s.kind == "genotype":
            self.stack.setCurrentIndex(2)
            self.orient_combo.setCurrentIndex(max(0, self.orient_combo.findData(s.orientation)))
            sm = s.summary
            text = (f"Genotypes: {s.path}\n  {sm['n_samples']:,} samples x {sm['n_markers']:,} markers on "
                    f"{sm['chromosomes']} chromosome(s)\n  Missing calls: {100 * sm['missing_rate']:.2f}%\n"
                    + (f"  Coding: {sm['coding']}\n" if sm.get("coding") else "")
                    + "".join(f"  Note: {n}\n" for n in sm.get("notes", []))
                    + "\n" + sm.get("qc_text", ""))
            self.summary.setPlainText(text)
            self.problems.setText("" if s.pheno is not None else
                                  "Add a phenotype table (the trait to predict) before training.")
            plots.histogram(self.qc_miss, 1.0 - np.asarray(s.qc.marker_call_rate), title="Missingness per marker",
                            colour="#d62728", xlabel="fraction missing")
            plots.histogram(self.qc_maf, s.qc.maf, title="Minor-allele frequency", colour="#9467bd",
                            xlabel="MAF")
            self.refresh_pheno()

    def _fill_classes(self) -> None:
        counts = (getattr(self.state.summary, "label_columns", None) or {}).get(self.state.label_key or "", {})
        self.class_table.setRowCount(len(counts))
        for i, (k, v) in enumerate(counts.items()):
            self.class_table.setItem(i, 0, QTableWidgetItem(str(k)))
            it = QTableWidgetItem(f"{v:,}")
            it.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            self.class_table.setItem(i, 1, it)
        self.class_table.resizeColumnsToContents()

    def refresh_gene_match(self) -> None:
        """Show how many of the data's genes the chosen model knows."""
        gm = self.state.gene_match
        if gm is None:
            self.match_label.setText("— (no model vocabulary to compare with)")
            return
        rate = 100 * gm.match_rate
        colour = "#2ca02c" if rate >= 50 else ("#e6a100" if rate >= 10 else "#a40000")
        words = (f"<span style='color:{colour}'><b>{rate:.1f}%</b></span> of the data's genes "
                 f"({gm.n_matched:,}) are in the model's vocabulary; the model's vocabulary is "
                 f"{100 * gm.vocab_coverage:.1f}% covered.")
        if gm.unmatched:
            words += " Unmatched e.g.: " + ", ".join(gm.unmatched[:5])
        self.match_label.setText(words)

    def refresh_pheno(self) -> None:
        """Trait choice, join report and trait histogram."""
        s = self.state
        if s.pheno is None:
            return
        numeric = s.traits or [c for c in s.pheno.columns if np.issubdtype(s.pheno[c].dtype, np.number)]
        self.trait_combo.blockSignals(True)
        self.trait_combo.clear()
        self.trait_combo.addItems(numeric)
        if s.trait:
            self.trait_combo.setCurrentText(s.trait)
        self.trait_combo.blockSignals(False)
        if s.join is not None:
            self.join_text.setPlainText(s.join.to_text())
            if s.join.y is not None:
                plots.histogram(self.qc_trait, s.join.y, title=f"Trait: {s.trait}", colour="#ff7f0e")
        self.problems.setText("")

    def info(self) -> dict[str, Any]:
        """What the tab shows (tests read this)."""
        return {"summary": self.summary.toPlainText(), "label": self.label_combo.currentText(),
                "match": self.match_label.text(), "classes": self.class_table.rowCount(),
                "trait": self.trait_combo.currentText(), "join": self.join_text.toPlainText()}

    def plots(self) -> dict[str, Any]:
        """The QC histograms that have something drawn (``PlotSource``)."""
        named = {"qc_counts": self.qc_counts, "qc_genes": self.qc_genes, "qc_missingness": self.qc_miss,
                 "qc_maf": self.qc_maf, "qc_trait": self.qc_trait}
        return {k: w for k, w in named.items() if w.plotItem.items}
