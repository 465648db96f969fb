"""The Results tab's "Repeated evaluation" panel: per-method mean ± SD, the verdict, the label-efficiency plot.

Shows ``state.evaluation`` (a ``celllm.evaluate`` summary: a run of "Evaluate (K repeats)" or a finished
evaluation folder loaded with "Load evaluation run…"); what it shows is computed by ``app.ui.evaluation``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.ui import plots
from app.ui.evaluation import efficiency_curves, headline, method_rows, verdicts

if TYPE_CHECKING:
    from app.ui.session import Session

EMPTY = ("Press <b>Evaluate (3 repeats)</b> on the Train tab (fine-tuning) to score CellLM and the baseline over "
         "several seeded splits, or load a finished evaluation run folder.")


class EvaluationPanel(QWidget):
    """Mean ± SD per method over repeats, the paired-difference verdict and the label-efficiency curve."""

    def __init__(self, session: Session) -> None:
        super().__init__()
        self.session, self.state = session, session.state
        self.head = QLabel(EMPTY)
        self.head.setWordWrap(True)
        self.load_btn = QPushButton("Load evaluation run…")
        self.load_btn.setToolTip("Show a finished repeated evaluation (a run folder of 'Evaluate' or of "
                                 "`celllm finetune --repeats K --out RUN`).")
        self.load_btn.clicked.connect(self._choose)
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(self.load_btn)
        self.table = QTableWidget(0, 4)
        self.table.setHorizontalHeaderLabels(["method", "macro-F1", "accuracy", "CellLM minus it"])
        self.table.horizontalHeaderItem(3).setToolTip("CellLM's macro-F1 minus this method's, repeat by repeat: "
                                                      "mean ± half-width of the 95 % interval")
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setMaximumHeight(130)
        self.verdict = QLabel("")
        self.verdict.setWordWrap(True)
        self.verdict.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.plot = pg.PlotWidget()
        self.plot.setMinimumHeight(220)
        self.no_curve = QLabel("No label-efficiency curve in this run: give label fractions (e.g. 0.01, 0.05, "
                               "0.1, 0.25, 0.5) in 'Repeated evaluation' on the Model tab.")
        self.no_curve.setWordWrap(True)
        self.no_curve.setStyleSheet("color: #555;")
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.head)
        lay.addWidget(self.table)
        lay.addWidget(self.verdict)
        lay.addWidget(self.plot, 1)
        lay.addWidget(self.no_curve)
        lay.addLayout(row)
        self.state.events.evaluation.connect(self.refresh)
        self.refresh()

    def _choose(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Choose a finished evaluation run folder")
        if d:
            self.session.load_evaluation(d)

    def refresh(self) -> None:
        """Redraw from ``state.evaluation`` (cleared when there is none)."""
        ev = self.state.evaluation
        has = bool(ev)
        for w in (self.table, self.verdict, self.plot):
            w.setVisible(has)
        self.no_curve.setVisible(False)
        if not ev:
            self.head.setText(EMPTY)
            self.plot.clear()
            return
        self.head.setText(f"<b>Repeated evaluation</b>: {headline(ev)}")
        rows = method_rows(ev)
        self.table.setRowCount(len(rows))
        for i, row in enumerate(rows):
            for j, text in enumerate(row):
                it = QTableWidgetItem(text)
                if j:
                    it.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(i, j, it)
        self.table.resizeColumnsToContents()
        self.verdict.setText("<br>".join(f"<b>{v}</b>" for v in verdicts(ev)))
        curves = efficiency_curves(ev)
        self.plot.setVisible(bool(curves))
        self.no_curve.setVisible(not curves)
        if curves:
            plots.label_efficiency(self.plot, curves)
        else:
            self.plot.clear()

    def plots(self) -> dict[str, Any]:
        """The label-efficiency plot when drawn (``PlotSource``)."""
        return {"label_efficiency": self.plot} if self.plot.plotItem.items else {}


__all__ = ["EvaluationPanel"]
