"""Step 3, Train: one button, progress with ETA, live curves, log, Stop (checkpoint kept), run history.

A view: it shows what the window's ``JobRunner`` relays (progress, metrics, log) and forwards the buttons to
the ``Session``, which decides what runs and what follows (after a fine-tune the new model embeds every cell
and Results shows them, cellpose's flow). It knows no other tab.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from app.engine.events import Failed, Log, Metrics, Progress, Result
from app.ui.job_runner import JobRunner
from app.ui.live_view import LiveMapPanel, QualityCurves
from app.ui.plots import CurvesWidget
from app.ui.qt_jobs import QtJob
from app.ui.session import JobRequest, Session
from app.ui.state import GP_TARGET, SC_TASKS

if TYPE_CHECKING:
    from app.ui.shell import Shell

EVAL_STEP = re.compile(r"^\[(\d+)/(\d+)\] repeat ")  # the evaluate job's line as each fine-tune of it starts


def fmt_s(s: float) -> str:
    """Seconds in words: 75 -> '1 min 15 s'."""
    s = max(0, round(s))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


class TrainTab(QWidget):
    """Start, watch, stop and resume runs."""

    def __init__(self, session: Session, shell: Shell, runner: JobRunner) -> None:
        super().__init__()
        self.session, self.state, self.shell, self.runner = session, session.state, shell, runner
        self._t0: float | None = None
        self._s0 = 0
        self._eval_step = ""  # "fine-tune 3 of 18: " while a repeated evaluation runs
        self.train_btn = QPushButton("Train")
        self.train_btn.setMinimumHeight(40)
        f = self.train_btn.font()
        f.setPointSizeF(f.pointSizeF() * 1.25)
        f.setBold(True)
        self.train_btn.setFont(f)
        self.train_btn.setToolTip("Start (Ctrl+T)")
        self.stop_btn = QPushButton("Stop")
        from app.ui.launch import icon

        self.train_btn.setIcon(icon("train"))
        self.stop_btn.setIcon(icon("stop"))
        self.train_btn.setToolTip("Start the chosen task (Ctrl+T)")
        self.stop_btn.setToolTip("Stop; a checkpoint is kept and Resume continues from it (Ctrl+. or Esc)")
        self.stop_btn.setToolTip("Stop after the current batch; a checkpoint is kept (Esc or Ctrl+.)")
        self.stop_btn.setEnabled(False)
        self.stop_btn.setMinimumHeight(40)
        # beside the one-split fine-tune: the same settings over K seeded splits (issue #16)
        self.eval_btn = QPushButton("Evaluate (3 repeats)")
        self.eval_btn.setMinimumHeight(40)
        self.eval_btn.setToolTip("Fine-tune on several seeded splits with the baseline on the same cells (and, "
                                 "when asked on the Model tab, CellLM from scratch and a label-efficiency "
                                 "curve): mean ± SD and the paired difference with its 95 % interval.")
        self.bar = QProgressBar()
        self.bar.setRange(0, 100)
        self.bar.setValue(0)
        self.status = QLabel("Open a dataset, choose a model, then press Train.")
        self.device_label = QLabel("")
        self.device_label.setStyleSheet("color: #555;")
        top = QHBoxLayout()
        top.addWidget(self.train_btn, 2)
        top.addWidget(self.eval_btn, 1)
        top.addWidget(self.stop_btn, 1)
        top.addWidget(self.bar, 4)
        self.curves = CurvesWidget()
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(5000)
        self.log.setPlaceholderText("The log of the current run appears here.")
        self.history = QListWidget()
        self.history.setToolTip("Runs in the runs folder: reopen to see their curves and results, or resume "
                                "a stopped one.")
        self.reopen_btn = QPushButton("Reopen")
        self.resume_btn = QPushButton("Resume")
        self.refresh_btn = QPushButton("Refresh")
        hb = QHBoxLayout()
        hb.addWidget(self.reopen_btn)
        hb.addWidget(self.resume_btn)
        hb.addWidget(self.refresh_btn)
        hist = QWidget()
        hl = QVBoxLayout(hist)
        hl.setContentsMargins(0, 0, 0, 0)
        hl.addWidget(QLabel("<b>Run history</b>"))
        hl.addWidget(self.history, 1)
        hl.addLayout(hb)
        bottom = QSplitter(Qt.Orientation.Horizontal)
        bottom.addWidget(self.log)
        bottom.addWidget(hist)
        bottom.setSizes([700, 300])
        # the live map and its quality curves beside the loss curves (single-cell runs; issue #13)
        self.quality = QualityCurves(session.live)
        self.live_map = LiveMapPanel(session.live)
        left = QSplitter(Qt.Orientation.Vertical)
        left.addWidget(self.curves)
        left.addWidget(self.quality)
        left.setSizes([240, 200])
        self.top_split = QSplitter(Qt.Orientation.Horizontal)
        self.top_split.addWidget(left)
        self.top_split.addWidget(self.live_map)
        self.top_split.setSizes([760, 480])
        vsplit = QSplitter(Qt.Orientation.Vertical)
        vsplit.addWidget(self.top_split)
        vsplit.addWidget(bottom)
        vsplit.setSizes([460, 180])
        lay = QVBoxLayout(self)
        lay.addLayout(top)
        srow = QHBoxLayout()
        srow.addWidget(self.status, 1)
        srow.addWidget(self.device_label)
        lay.addLayout(srow)
        lay.addWidget(vsplit, 1)
        self.train_btn.clicked.connect(self.train)
        self.eval_btn.clicked.connect(self.evaluate)
        self.stop_btn.clicked.connect(self.stop)
        self.reopen_btn.clicked.connect(self._reopen_selected)
        self.resume_btn.clicked.connect(self._resume_selected)
        self.refresh_btn.clicked.connect(self.refresh_history)
        st = self.state.events
        for sig in (st.task, st.dataset, st.label_key, st.trait, st.eval_params):
            sig.connect(self.update_button)
        st.dataset.connect(lambda: self._show_live_parts())
        st.runs.connect(self.refresh_history)
        session.events.message.connect(self.append_log)
        session.events.run_opened.connect(self._show_run)
        runner.started.connect(self._on_started)
        runner.progress.connect(self._on_progress)
        runner.metrics.connect(self._on_metrics)
        runner.log.connect(self._on_log)
        runner.device.connect(lambda d: self.device_label.setText(f"device: {d.device} {d.name}"))
        runner.finished.connect(self._on_finished)
        self.update_button()
        self._show_live_parts()
        self.refresh_history()

    # -- helpers -----------------------------------------------------------------------------------
    def update_button(self) -> None:
        """The Train button names what it will do."""
        s = self.state
        if s.kind == "singlecell":
            text = SC_TASKS.get(s.task, ("Train",))[0]
        elif s.kind == "genotype":
            text = "Cross-validate " + ("all models" if s.task == "compare" else s.task.upper()
                                        if s.task == "gblup" else s.task)
        else:
            text = "Train"
        self.train_btn.setText(text)
        self.train_btn.setEnabled(s.kind is not None and not self.running)
        evaluable = s.kind == "singlecell" and s.task == "finetune"
        k = s.eval_params.get("repeats", 3)
        self.eval_btn.setText(f"Evaluate ({k} repeat{'s' if k != 1 else ''})")
        self.eval_btn.setVisible(evaluable)
        self.eval_btn.setEnabled(evaluable and not self.running)

    def _show_live_parts(self, req: JobRequest | None = None) -> None:
        """The live map and quality curves are for single-cell runs; genotype runs and repeated evaluations
        (their fine-tunes draw no live map) get the whole width."""
        sc = self.state.kind != "genotype" and not (req is not None and req.kind == "evaluate")
        self.quality.setVisible(sc)
        self.live_map.setVisible(sc)

    @property
    def running(self) -> bool:
        """A job is running."""
        return self.runner.running

    @property
    def job(self) -> QtJob | None:
        """The current (or last) job."""
        return self.runner.job

    @property
    def jobs_started(self) -> int:
        return self.runner.jobs_started

    @property
    def after(self) -> str | None:
        """What the current (or last) job is for: "train" | "embed-all" | "gp-final"."""
        return self.runner.req.purpose if self.runner.req is not None else None

    def append_log(self, line: str, level: str = "info") -> None:
        """One line in the log pane (warnings and errors marked)."""
        stamp = time.strftime("%H:%M:%S")
        mark = {"warning": "⚠ ", "error": "✖ "}.get(level, "")
        self.log.appendPlainText(f"{stamp} {mark}{line}")

    # -- start / stop ------------------------------------------------------------------------------
    def train(self) -> None:
        """The one button: the session starts the chosen task."""
        self.session.train()

    def evaluate(self) -> None:
        """"Evaluate (K repeats)": the session starts the repeated evaluation of the fine-tune settings."""
        self.session.evaluate()

    def _start(self, target: str, cfg: dict[str, Any], run_dir: str, *, resume: bool, purpose: str) -> None:
        """Start a job directly (tests and tools; the buttons go through the session)."""
        self.runner.start(JobRequest(target, cfg, run_dir, resume=resume, purpose=purpose))

    def stop(self) -> None:
        """Ask the job to stop; it saves a checkpoint (Resume continues from it)."""
        if self.running:
            self.status.setText("Stopping… (saving a checkpoint)")
            self.stop_btn.setEnabled(False)
            self.runner.stop()

    def resume(self, run_dir: str | None = None) -> None:
        """Continue a stopped run from its last checkpoint."""
        self.session.resume(run_dir)

    def reopen(self, path: str) -> None:
        """Show a past run: its curves, log and (when finished) its results."""
        self.session.reopen(path)

    def _on_started(self, req: JobRequest) -> None:
        if req.purpose == "train" and not req.resume:
            self.curves.clear()
        if req.purpose == "train":
            self._show_live_parts(req)
        if req.purpose == "train":
            if req.target == GP_TARGET:
                self.curves.set_labels("Pearson r on each held-out fold", "fold (one model after another)",
                                       "Current fit (deep models): loss and validation score", "epoch",
                                       on_left=lambda name: not name.endswith("pearson"))
            else:
                self.curves.set_labels()
        self._t0 = None
        self._eval_step = ""
        self.bar.setValue(0)
        self.bar.setFormat("starting…")
        self.train_btn.setEnabled(False)
        self.eval_btn.setEnabled(False)
        self.stop_btn.setEnabled(True)
        self.resume_btn.setEnabled(False)
        self.status.setText(("Resuming" if req.resume else "Running") + f": {Path(req.run_dir).name}")

    # -- events ------------------------------------------------------------------------------------
    def _on_progress(self, ev: Progress) -> None:
        if ev.total <= 0:
            self.bar.setRange(0, 0)
            return
        self.bar.setRange(0, 1000)
        self.bar.setValue(int(1000 * ev.step / ev.total))
        now = time.time()
        if self._t0 is None or ev.step < self._s0:
            self._t0, self._s0 = now, ev.step
        eta = ""
        if ev.step > self._s0 and now > self._t0:
            rate = (ev.step - self._s0) / (now - self._t0)
            eta = f" — ETA {fmt_s((ev.total - ev.step) / rate)}"
        ep = f"epoch {ev.epoch + 1}: " if ev.epoch is not None else ""
        what = "embedding all cells: " if self.after == "embed-all" else self._eval_step
        self.bar.setFormat(f"{what}{ep}{ev.step}/{ev.total}{eta}")

    def _on_metrics(self, ev: Metrics) -> None:
        if self.after != "train" or ev.split in ("live", "live_reference"):  # drawn from the live map's index
            return
        gp = self.state.current is not None and self.state.current.target == GP_TARGET
        if gp and ev.split in ("train", "val") and ev.epoch is not None:
            x = ev.epoch  # a deep model's fit inside one fold: by epoch (1-based), restarting each fold
        else:
            x = ev.epoch if ev.epoch is not None and ev.split != "train" else ev.step
        self.curves.add(x, ev.values, ev.split)

    def _on_log(self, ev: Log) -> None:
        self.append_log(ev.line, ev.level)
        req = self.runner.req
        step = EVAL_STEP.match(ev.line) if req is not None and req.kind == "evaluate" else None
        if step:
            # "[3/8] repeat 2 (seed 1), celllm, 100% of the training labels": a new sub-run; its curves alone
            self.status.setText(f"Evaluating {Path(req.run_dir).name}: {ev.line}")
            self._eval_step = f"fine-tune {step[1]} of {step[2]}: "
            self.curves.clear()

    def _on_finished(self, req: JobRequest, final: Result | Failed) -> None:
        try:
            if isinstance(final, Failed):
                self.status.setText("Failed — see the message and the log.")
            elif final.cancelled or final.value.get("cancelled"):
                self.status.setText("Stopped. A checkpoint was kept: press Resume to continue.")
                self.append_log("stopped; checkpoint kept")
            else:
                self.status.setText({"train": "Finished.", "gp-final": "Final model trained on all lines."}
                                    .get(req.purpose, "Cells embedded."))
        finally:  # the DeepLabCut lesson: buttons come back whatever happened
            self.bar.setRange(0, 1000)
            self.stop_btn.setEnabled(False)
            self.update_button()  # Train and Evaluate come back (runner.running is already False)
            self.train_btn.setEnabled(self.state.kind is not None)
            self.resume_btn.setEnabled(True)
            if isinstance(final, Result) and not final.cancelled:
                self.bar.setValue(1000)
                self.bar.setFormat("done")
            else:
                self.bar.setFormat("stopped" if isinstance(final, Result) else "failed")

    # -- history -----------------------------------------------------------------------------------
    def refresh_history(self) -> None:
        """List the run folders (newest first)."""
        from app.engine.run_dir import list_runs

        self.history.clear()
        try:
            runs = list_runs()[:200]
        except Exception:  # an unreadable runs folder must not break the tab
            runs = []
        for rd in runs:
            info = rd.read_run_info()
            kind = info.get("kind", "")
            it = QListWidgetItem(f"{rd.path.name}  [{info.get('status', '?')}]")
            it.setData(Qt.ItemDataRole.UserRole, str(rd.path))
            it.setToolTip(f"{kind} — {rd.path}")
            self.history.addItem(it)

    def _selected(self) -> str | None:
        it = self.history.currentItem()
        return str(it.data(Qt.ItemDataRole.UserRole)) if it is not None else None

    def _resume_selected(self) -> None:
        path = self._selected()
        self.resume(path)

    def _reopen_selected(self) -> None:
        path = self._selected()
        if path:
            self.reopen(path)

    def _reload_curves(self, rd: Any) -> None:
        self.curves.clear()
        for row in rd.read_metrics():
            x = row.get("epoch", row.get("step", 0))
            self.curves.add(x, {k: v for k, v in row.items() if k not in ("epoch", "step")},
                            "val" if "epoch" in row else "train")
        self.curves.flush()

    def _show_run(self, path: str) -> None:
        """A run was reopened or resumed: its curves and the tail of its log."""
        from app.engine.run_dir import RunDir

        try:
            rd = RunDir.open(path)
        except Exception:  # the session already said why it cannot be opened
            return
        self._reload_curves(rd)
        rec = self.state.current
        if rec is not None and rec.status != "running":  # reopened (a resume keeps the live log)
            self.log.clear()
            for line in rd.tail_log(200):
                self.log.appendPlainText(line)
            self.status.setText(f"Reopened {Path(path).name} ({rd.status})")

    def plots(self) -> dict[str, Any]:
        """The loss and metric curves (``PlotSource``), with the points still waiting for the batched redraw."""
        self.curves.flush()
        out = {name: w for name, w in (("loss", self.curves.loss), ("metric", self.curves.metric))
               if w.plotItem.items}
        return out | self.quality.plots() | self.live_map.plots()
