"""Step 4, Results: the cell map with annotation, one split's scores and a repeated evaluation (single-cell) or CV
tables and plots (genotype)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.ui import plots
from app.ui.evaluation import gp_over_repeats
from app.ui.evaluation_view import EvaluationPanel
from app.ui.live_view import LiveMapPanel
from app.ui.state import gp_fold_table, gp_wide_table

if TYPE_CHECKING:
    from app.ui.session import Session
    from app.ui.shell import Shell


class ResultsTab(QWidget):
    """Results of the current dataset and run."""

    def __init__(self, session: Session, shell: Shell) -> None:
        super().__init__()
        self.session, self.state, self.shell = session, session.state, shell
        self.stack = QStackedWidget()
        self.empty = QLabel("Results appear here after a run (or, for single-cell data, once a dataset with a "
                            "layout is open).")
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.stack.addWidget(self.empty)
        self.stack.addWidget(self._build_sc())
        self.stack.addWidget(self._build_gp())
        QVBoxLayout(self).addWidget(self.stack)
        ev = self.state.events
        for sig in (ev.dataset, ev.layout, ev.embedding):
            sig.connect(self.refresh_map)
        ev.manual.connect(self._manual_changed)
        ev.label_key.connect(self._label_key_changed)
        ev.metrics.connect(self.refresh_scores)
        ev.gp_result.connect(self.refresh_gp)

    # -- single-cell -------------------------------------------------------------------------------
    def _build_sc(self) -> QWidget:
        w = QWidget()
        self.colour_combo = QComboBox()
        self.colour_combo.setMinimumWidth(160)
        self.colour_combo.currentTextChanged.connect(self._recolour)
        self.mode_group = QButtonGroup(self)
        mode_row = QHBoxLayout()
        for i, (key, label, tip) in enumerate([("pan", "Pan/zoom", "Drag to pan, wheel to zoom"),
                                               ("box", "Box select", "Drag a rectangle to select cells"),
                                               ("lasso", "Lasso select", "Draw around cells to select them")]):
            b = QPushButton(label)
            b.setCheckable(True)
            b.setToolTip(tip)
            b.setProperty("mode", key)
            self.mode_group.addButton(b, i)
            mode_row.addWidget(b)
            if key == "pan":
                b.setChecked(True)
        self.mode_group.idClicked.connect(lambda i: self.view.set_mode(str(self.mode_group.button(i).property("mode"))))
        self.label_edit = QLineEdit()
        self.label_edit.setPlaceholderText("label for the selected cells")
        self.assign_btn = QPushButton("Assign label")
        self.assign_btn.setEnabled(False)
        self.sel_label = QLabel("0 selected")
        self.layout_label = QLabel("")
        self.layout_label.setStyleSheet("color: #555;")
        self.umap_btn = QPushButton("Compute UMAP")
        self.umap_btn.setToolTip("A fast PCA preview appears first, then umap-learn refines it.")
        top = QHBoxLayout()
        top.addWidget(QLabel("Colour by:"))
        top.addWidget(self.colour_combo)
        top.addLayout(mode_row)
        top.addStretch(1)
        top.addWidget(self.umap_btn)
        ann = QHBoxLayout()
        ann.addWidget(self.sel_label)
        ann.addWidget(self.label_edit, 1)
        ann.addWidget(self.assign_btn)
        ann.addWidget(self.layout_label)
        self.view = plots.EmbeddingView()
        self.view.selectionChanged.connect(self._selection_changed)
        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 0, 0)
        ll.addLayout(top)
        ll.addWidget(self.view, 1)
        ll.addLayout(ann)
        # scores
        self.score_label = QLabel("Fine-tune a model to see test scores beside the baseline.")
        self.score_label.setWordWrap(True)
        self.cm_celllm = pg.PlotWidget()
        self.cm_base = pg.PlotWidget()
        for p in (self.cm_celllm, self.cm_base):
            p.setMinimumHeight(180)
            p.setAspectLocked(True)
        self.f1_table = QTableWidget(0, 3)
        self.f1_table.setHorizontalHeaderLabels(["class", "CellLM F1", "baseline F1"])
        self.f1_table.verticalHeader().hide()
        self.f1_table.horizontalHeader().setStretchLastSection(True)
        self.annotate_btn = QPushButton("Annotate another dataset…")
        self.annotate_btn.setToolTip("Apply this fine-tuned model to a new experiment: labels, confidence, "
                                     "'Unassigned' threshold, one map of both datasets.")
        self.annotate_btn.setEnabled(False)
        self.annotate_btn.clicked.connect(lambda: self.shell.open_annotate(self.finetuned_run()))
        scores = QWidget()
        rl = QVBoxLayout(scores)
        rl.setContentsMargins(0, 0, 0, 0)
        rl.addWidget(self.annotate_btn)
        rl.addWidget(self.score_label)
        rl.addWidget(self.cm_celllm, 1)
        rl.addWidget(self.cm_base, 1)
        rl.addWidget(self.f1_table, 1)
        # one split's scores, and the summary over repeated splits ("Evaluate (K repeats)", issue #16)
        self.evaluation = EvaluationPanel(self.session)
        self.score_tabs = QTabWidget()
        self.score_tabs.setDocumentMode(True)
        self.score_tabs.addTab(scores, "Test scores (one split)")
        self.score_tabs.addTab(self.evaluation, "Repeated evaluation")
        self.state.events.evaluation.connect(self._evaluation_changed)
        right = self.score_tabs
        split = QSplitter(Qt.Orientation.Horizontal)
        # the map of all cells, and the live map of the run being trained (the same cells' subsample, per refresh)
        self.map_tabs = QTabWidget()
        self.map_tabs.setDocumentMode(True)
        self.map_tabs.addTab(left, "All cells")
        self.live_map = LiveMapPanel(self.session.live)
        self.map_tabs.addTab(self.live_map, "Live training map")
        self.session.live.events.layout_ready.connect(self._live_ready)
        self.state.events.embedding.connect(lambda: self.map_tabs.setCurrentIndex(0))  # every cell mapped now
        split.addWidget(self.map_tabs)
        split.addWidget(right)
        split.setSizes([800, 540])  # the scores side holds the repeats table and the label-efficiency curve
        QVBoxLayout(w).addWidget(split)
        self.assign_btn.clicked.connect(self._assign)
        self.label_edit.returnPressed.connect(self._assign)
        self.umap_btn.clicked.connect(lambda: self.session.request_layout(refine=True))
        return w

    def _evaluation_changed(self, ev: dict[str, Any] | None) -> None:
        """A repeated evaluation arrived: show it (a loaded folder needs no open dataset)."""
        if ev:
            if self.state.kind != "genotype":
                self.stack.setCurrentIndex(1)
            self.score_tabs.setCurrentWidget(self.evaluation)

    def _live_ready(self, k: int) -> None:
        """While no model has mapped all cells yet, the live map is what there is to see."""
        if k == 0 and self.state.embedding is None:
            self.map_tabs.setCurrentWidget(self.live_map)

    def refresh_map(self) -> None:
        """Redraw the map from ``state.layout`` (colour column kept when possible)."""
        s = self.state
        if s.kind == "genotype":
            self.stack.setCurrentIndex(2)
            return
        if s.kind != "singlecell":
            self.stack.setCurrentIndex(0)
            return
        self.stack.setCurrentIndex(1)
        cols = s.obs_columns()
        cur = self.colour_combo.currentText()
        self.colour_combo.blockSignals(True)
        self.colour_combo.clear()
        self.colour_combo.addItems(cols)
        pick = cur if cur in cols else ("celllm_label" if "celllm_label" in cols else (s.label_key or ""))
        if pick:
            self.colour_combo.setCurrentText(pick)
        self.colour_combo.blockSignals(False)
        self.umap_btn.setEnabled(s.embedding is not None or s.adata is not None)
        if s.layout is None:
            self.layout_label.setText("no layout yet: press Compute UMAP")
            return
        self.layout_label.setText(f"layout: {s.layout_kind}")
        args = (s.layout, self._values(pick))
        kw = {"ids": np.asarray(s.adata.obs_names), "hover_cols": self._hover_cols(), "title": pick}
        if len(s.layout) > plots.DENSE_ABOVE:  # a big map is prepared in a worker: the window never stalls
            self.view.set_data_async(*args, **kw)
        else:
            self.view.set_data(*args, **kw)

    def _values(self, col: str) -> np.ndarray | None:
        if not col:
            return None
        obs = getattr(self.state.adata, "obs", None)
        if obs is not None and col in obs and isinstance(obs[col].dtype, pd.CategoricalDtype):
            return obs[col].array  # the Categorical itself: its codes colour the map without hashing labels
        try:
            return self.state.column_values(col)
        except KeyError:
            return None

    def _hover_cols(self) -> dict[str, np.ndarray]:
        s = self.state
        out: dict[str, np.ndarray] = {}
        if s.label_key:
            out[s.label_key] = s.column_values(s.label_key)
        if s.predictions is not None:
            for c in s.predictions.columns:
                out[c] = s.predictions[c].to_numpy()
        if s.manual is not None:
            out["manual"] = s.manual
        return out

    def _recolour(self, col: str) -> None:
        if self.state.layout is not None and len(self.view.xy) == len(self.state.layout):
            self.view.recolour(self._values(col), title=col)

    def _selection_changed(self, n: int) -> None:
        self.sel_label.setText(f"{n:,} selected")
        self.assign_btn.setEnabled(n > 0)

    def _assign(self) -> None:
        label = self.label_edit.text().strip()
        if not label or self.view.selection.size == 0:
            return
        n = self.state.assign_manual(self.view.selection, label)
        self.session.log(f"manual label '{label}' given to {n:,} cells")

    def _label_key_changed(self) -> None:
        if self.state.layout is not None and len(self.view.xy) == len(self.state.layout):
            self.view.hover_cols = self._hover_cols()

    def _manual_changed(self) -> None:
        cols = self.state.obs_columns()
        if "manual_label" in cols and self.colour_combo.findText("manual_label") < 0:
            self.colour_combo.addItem("manual_label")
        self.view.hover_cols = self._hover_cols()
        if self.colour_combo.currentText() == "manual_label":
            self._recolour("manual_label")

    def finetuned_run(self) -> str | None:
        """The current run's folder when it is a finished fine-tune (the model to annotate with)."""
        rec = self.state.current
        return rec.path if rec is not None and rec.kind == "finetune" and rec.status == "done" else None

    def refresh_scores(self) -> None:
        """Confusion matrices and per-class F1 of CellLM beside the baseline."""
        m = self.state.metrics
        self.annotate_btn.setEnabled(bool(m) and self.finetuned_run() is not None)
        if not m:
            return
        self.score_tabs.setCurrentIndex(0)  # a new one-split run
        t, b = m.get("test", {}), m.get("baseline", {})
        self.score_label.setText(
            f"<b>Test cells ({m.get('n_test', '?')}):</b> CellLM accuracy {t.get('accuracy', float('nan')):.3f}, "
            f"macro-F1 {t.get('macro_f1', float('nan')):.3f} &nbsp;|&nbsp; baseline accuracy "
            f"{b.get('accuracy', float('nan')):.3f}, macro-F1 {b.get('macro_f1', float('nan')):.3f}"
            f" &nbsp;(best epoch {m.get('best_epoch', '?')})")
        if t.get("confusion"):
            plots.confusion_image(self.cm_celllm, np.array(t["confusion"]["matrix"]), t["confusion"]["labels"],
                                  "CellLM (test)")
        if b.get("confusion"):
            plots.confusion_image(self.cm_base, np.array(b["confusion"]["matrix"]), b["confusion"]["labels"],
                                  "Baseline (test)")
        f1c, f1b = t.get("per_class_f1", {}), b.get("per_class_f1", {})
        classes = sorted(set(f1c) | set(f1b))
        self.f1_table.setRowCount(len(classes))
        for i, c in enumerate(classes):
            self.f1_table.setItem(i, 0, QTableWidgetItem(c))
            for j, d in ((1, f1c), (2, f1b)):
                it = QTableWidgetItem("" if c not in d else f"{d[c]:.3f}")
                it.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.f1_table.setItem(i, j, it)
        self.f1_table.resizeColumnsToContents()

    # -- genotype ----------------------------------------------------------------------------------
    def _build_gp(self) -> QWidget:
        w = QWidget()
        self.gp_table = QTableWidget(0, 0)
        self.gp_table.verticalHeader().hide()
        self.gp_label = QLabel("Cross-validate models on the Train tab to fill this page.")
        self.gp_label.setWordWrap(True)
        self.fold_combo = QComboBox()
        self.fold_combo.currentTextChanged.connect(self._draw_scatter)
        self.scatter = pg.PlotWidget()
        self.manh = pg.PlotWidget()
        self.manh.setMinimumHeight(180)
        top = QSplitter(Qt.Orientation.Horizontal)
        tl = QWidget()
        tll = QVBoxLayout(tl)
        tll.setContentsMargins(0, 0, 0, 0)
        tll.addWidget(self.gp_label)
        tll.addWidget(self.gp_table, 1)
        sc = QWidget()
        scl = QVBoxLayout(sc)
        scl.setContentsMargins(0, 0, 0, 0)
        self.final_btn = QPushButton("Train this model on all lines")
        self.final_btn.setToolTip("Fit the chosen model on every phenotyped line (same settings) and predict GEBVs "
                                  "of every genotyped line; then export the model and the GEBVs.")
        self.final_btn.setEnabled(False)
        self.final_btn.clicked.connect(lambda: self.session.train_final(self.fold_combo.currentText()))
        row = QHBoxLayout()
        row.addWidget(QLabel("Model:"))
        row.addWidget(self.fold_combo, 1)
        row.addWidget(self.final_btn)
        scl.addLayout(row)
        scl.addWidget(self.scatter, 1)
        top.addWidget(tl)
        top.addWidget(sc)
        top.setSizes([620, 700])  # the table's repeats columns (r over repeats, minus GBLUP) need the width
        v = QSplitter(Qt.Orientation.Vertical)
        v.addWidget(top)
        v.addWidget(self.manh)
        v.setSizes([420, 220])
        QVBoxLayout(w).addWidget(v)
        return w

    def refresh_gp(self) -> None:
        """Table of Pearson r per model and fold (mean, sd), scatter and Manhattan plot."""
        self.stack.setCurrentIndex(2)
        r = self.state.gp_result or {}
        folds = gp_fold_table(r)
        if folds.empty:
            self.gp_label.setText("The run reported no per-fold results.")
            return
        wide = gp_wide_table(folds)
        cols = list(wide.columns)
        # repeats > 1: r's mean ± SD over repeats and the paired difference to GBLUP first (issue #16)
        rep = gp_over_repeats(r)
        extra = ["r over repeats (mean ± SD)", "minus GBLUP (95 %)"] if rep else []
        self.gp_table.setColumnCount(len(cols) + 1 + len(extra))
        self.gp_table.setRowCount(len(wide))
        self.gp_table.setHorizontalHeaderLabels(["model", *extra, *cols])
        for i, (model, row) in enumerate(wide.iterrows()):
            self.gp_table.setItem(i, 0, QTableWidgetItem(str(model)))
            for j, text in enumerate(rep.get(str(model), ("", ""))[:len(extra)]):
                it = QTableWidgetItem(text)
                it.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.gp_table.setItem(i, j + 1, it)
            for j, v in enumerate(row.to_numpy()):
                it = QTableWidgetItem("" if pd.isna(v) else f"{v:.3f}")
                it.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                if cols[j] in ("mean", "sd"):
                    f = it.font()
                    f.setBold(True)
                    it.setFont(f)
                self.gp_table.setItem(i, j + 1 + len(extra), it)
        self.gp_table.resizeColumnsToContents()
        best = wide.index[0]
        n, trait = r.get("n_lines", "?"), r.get("trait", self.state.trait)
        self.gp_label.setText(
            f"<b>Pearson r between predicted and observed</b> on held-out folds (trait '{trait}',"
            f" {n} lines, {r.get('n_markers', '?')} markers). Best: <b>{best}</b> (mean {wide.loc[best, 'mean']:.3f}"
            f" ± {0 if pd.isna(wide.loc[best, 'sd']) else wide.loc[best, 'sd']:.3f} SD)."
            # the paired difference to GBLUP over repeats, in words (app.engine.stats)
            + "".join(f"<br>{m['vs_gblup']['verdict']}" for m in (r.get("models") or {}).values()
                      if isinstance(m, dict) and (m.get("vs_gblup") or {}).get("verdict")))
        self.fold_combo.blockSignals(True)
        self.fold_combo.clear()
        self.fold_combo.addItems([str(m) for m in wide.index])
        self.fold_combo.blockSignals(False)
        self.final_btn.setEnabled(True)
        self._draw_scatter(str(best))

    def _draw_scatter(self, model: str) -> None:
        preds = self.state.gp_tables().get("gebv")
        if preds is None or not model:
            self.scatter.clear()
            return
        # the CV job's predictions.csv: ID, fold, repeat, model, observed, predicted (app.engine.gp.jobs)
        sub = preds[preds["model"].astype(str) == model]
        groups = {f"fold {f}": (g["observed"].to_numpy(float), g["predicted"].to_numpy(float))
                  for f, g in sub.groupby("fold")}
        plots.scatter_obs_pred(self.scatter, groups, f"{model}: predicted vs observed")
        self._draw_importance(model)

    def _draw_importance(self, model: str = "") -> None:
        r = self.state.gp_result or {}
        path = r.get("importance_csv")
        if not (isinstance(path, str) and Path(path).is_file()):
            self.manh.clear()
            self.manh.setTitle("Marker importance: run DLGWAS (or compare all) to see it")
            return
        # the CV job's importance.csv: marker, chrom, pos, model, importance; one block per model: the chosen
        # one, else DLGWAS's (its saliency), else the first
        imp = pd.read_csv(path, dtype={"marker": str, "chrom": str, "model": str})
        models = list(dict.fromkeys(imp["model"]))
        pick = model if model in models else ("DLGWAS" if "DLGWAS" in models else models[0])
        imp = imp[imp["model"] == pick]
        causal = None
        if self.state.causal is not None:
            causal = imp["marker"].isin(set(self.state.causal.iloc[:, 0].astype(str))).to_numpy()
        plots.manhattan(self.manh, imp["chrom"].to_numpy(), imp["pos"].to_numpy(), imp["importance"].to_numpy(),
                        causal, title=f"Marker importance along the genome ({pick})")

    # -- plots for export --------------------------------------------------------------------------
    def plots(self) -> dict[str, Any]:
        """The map, confusion matrices, GP scatter and marker importance that have something drawn
        (``PlotSource``)."""
        out: dict[str, Any] = {}
        if len(self.view.xy):  # the map draws straight into its own ViewBox
            out["cell_map"] = self.view.plot
        for name, w in (("confusion_celllm", self.cm_celllm), ("confusion_baseline", self.cm_base),
                        ("gp_scatter", self.scatter), ("marker_importance", self.manh)):
            if w.plotItem.items:
                out[name] = w
        out.update(self.evaluation.plots())
        return out
