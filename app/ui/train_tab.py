"""Step 3, Train: one button, progress with ETA, live curves, log, Stop (checkpoint kept), run history.

Every job runs in a spawned process through ``app.ui.qt_jobs.QtJob``; this tab only relays its events.
After a fine-tune the new model is applied at once (cellpose's flow): an embed job maps every cell with it,
and the Results tab shows the cells coloured by prediction.
"""

from __future__ import annotations

import json
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
from app.ui.plots import CurvesWidget
from app.ui.qt_jobs import QtJob
from app.ui.state import GP_TARGET, GP_TRAIN_TARGET, SC_TASKS, AppState, RunRecord

if TYPE_CHECKING:
    from app.ui.main_window import MainWindow

EMBED_TARGET = SC_TASKS["embed"][1]


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

    def __init__(self, state: AppState, win: MainWindow) -> None:
        super().__init__()
        self.state, self.win = state, win
        self.job: QtJob | None = None
        self.jobs_started = 0
        self.after: str | None = None  # what the finished job was for: "train" | "embed-all"
        self._t0: float | None = None
        self._s0 = 0
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
        self.bar = QProgressBar()
        self.bar.setRange(0, 100)
        self.bar.setValue(0)
        self.status = QLabel("Open a dataset, choose a model, then press Train.")
        self.device_label = QLabel("")
        self.device_label.setStyleSheet("color: #555;")
        top = QHBoxLayout()
        top.addWidget(self.train_btn, 2)
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
        vsplit = QSplitter(Qt.Orientation.Vertical)
        vsplit.addWidget(self.curves)
        vsplit.addWidget(bottom)
        vsplit.setSizes([380, 220])
        lay = QVBoxLayout(self)
        lay.addLayout(top)
        srow = QHBoxLayout()
        srow.addWidget(self.status, 1)
        srow.addWidget(self.device_label)
        lay.addLayout(srow)
        lay.addWidget(vsplit, 1)
        self.train_btn.clicked.connect(self.train)
        self.stop_btn.clicked.connect(self.stop)
        self.reopen_btn.clicked.connect(self._reopen_selected)
        self.resume_btn.clicked.connect(self._resume_selected)
        self.refresh_btn.clicked.connect(self.refresh_history)
        state.events.connect("task", self.update_button)
        state.events.connect("dataset", self.update_button)
        self.update_button()
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

    @property
    def running(self) -> bool:
        return self.job is not None and self.job.running

    def append_log(self, line: str, level: str = "info") -> None:
        """One line in the log pane (warnings and errors marked)."""
        stamp = time.strftime("%H:%M:%S")
        mark = {"warning": "⚠ ", "error": "✖ "}.get(level, "")
        self.log.appendPlainText(f"{stamp} {mark}{line}")

    def _check_ready(self) -> str | None:
        s = self.state
        if s.kind is None:
            return "Open a dataset on the Data tab first."
        if s.kind == "singlecell" and s.task == "finetune" and not s.label_key:
            return ("This dataset has no label column to learn from. Add a labels table, or choose "
                    "'Embed with a model' or 'Pretrain CellLM' on the Model tab.")
        if s.kind == "genotype" and (s.pheno_path is None or not s.trait):
            return "Add a phenotype table and pick a trait on the Data tab before training."
        return None

    # -- start / stop ------------------------------------------------------------------------------
    def train(self) -> None:
        """The one button: start the chosen task as a spawned job."""
        if self.running:
            return
        problem = self._check_ready()
        if problem:
            self.win.show_error("Not ready to train", problem)
            return
        from app.engine.rundir import default_runs_root, new_run_name

        self.win.model_tab.read_params()
        run_dir = str(default_runs_root() / new_run_name(self.state.task))
        try:
            target, cfg = self.state.job_spec(run_dir)
        except ValueError as exc:
            self.win.show_error("Not ready to train", str(exc))
            return
        self._start(target, cfg, run_dir, resume=False, purpose="train")

    def _start(self, target: str, cfg: dict[str, Any], run_dir: str, *, resume: bool, purpose: str) -> None:
        from app.ui.loaders import env_threads

        if env_threads() and not cfg.get("threads"):
            cfg["threads"] = env_threads()
        job = QtJob(self)
        job.progress.connect(self._on_progress)
        job.metrics.connect(self._on_metrics)
        job.log.connect(self._on_log)
        job.device.connect(lambda d: self.device_label.setText(f"device: {d.device} {d.name}"))
        job.finished.connect(self._on_finished)
        self.after = purpose
        if purpose == "train" and not resume:
            self.curves.clear()
        if purpose == "train":
            if target == GP_TARGET:
                self.curves.set_labels("Pearson r on each held-out fold", "fold (one model after another)",
                                       "Current fit (deep models): loss and validation score", "epoch",
                                       on_left=lambda name: not name.endswith("pearson"))
            else:
                self.curves.set_labels()
        self._t0 = None
        self.bar.setValue(0)
        self.bar.setFormat("starting…")
        self.append_log(f"starting {target} in {run_dir}" + (" (resume)" if resume else ""))
        try:
            job.start(target, cfg, run_dir, device="cuda" if str(cfg.get("device", "")).startswith("cuda")
                      else "cpu", resume=resume)
        except Exception as exc:  # a start failure (bad folder, spawn error) is a message, not a crash
            job.deleteLater()
            self.win.show_error("The job could not start", str(exc))
            return
        self.job = job
        self.jobs_started += 1
        if purpose == "train":
            rec = RunRecord(path=run_dir, kind=self.state.task, target=target, config=cfg)
            self.state.add_run(rec)
        self.train_btn.setEnabled(False)
        self.stop_btn.setEnabled(True)
        self.resume_btn.setEnabled(False)
        self.status.setText(("Resuming" if resume else "Running") + f": {Path(run_dir).name}")

    def stop(self) -> None:
        """Ask the job to stop; it saves a checkpoint (Resume continues from it)."""
        if self.running:
            self.append_log("stop requested: the job saves a checkpoint and ends")
            self.status.setText("Stopping… (saving a checkpoint)")
            self.stop_btn.setEnabled(False)
            self.job.cancel()

    def resume(self, run_dir: str | None = None) -> None:
        """Continue a stopped run from its last checkpoint."""
        if self.running:
            return
        from app.engine.rundir import RunDir

        rec = self.state.current
        path = run_dir or (rec.path if rec else None)
        if not path:
            self.win.show_error("Nothing to resume", "Choose a stopped run in the run history.")
            return
        try:
            rd = RunDir.open(path)
            cfg = rd.read_config()
            target = rd.target or (rec.target if rec else None)
        except Exception as exc:
            self.win.show_error("This run cannot be resumed", str(exc))
            return
        if not target:
            self.win.show_error("This run cannot be resumed", "Its folder does not say which job made it.")
            return
        cfg = {k: v for k, v in cfg.items() if k != "resume"}
        self.state.add_run(RunRecord(path=str(path), kind=rd.kind, target=target, config=cfg,
                                     status="running"))
        self._reload_curves(rd)
        self._start(target, cfg, str(path), resume=True, purpose="train")

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
        what = "embedding all cells: " if self.after == "embed-all" else ""
        self.bar.setFormat(f"{what}{ep}{ev.step}/{ev.total}{eta}")

    def _on_metrics(self, ev: Metrics) -> None:
        if self.after != "train":
            return
        gp = self.state.current is not None and self.state.current.target == GP_TARGET
        if gp and ev.split in ("train", "val") and ev.epoch is not None:
            x = ev.epoch  # a deep model's fit inside one fold: by epoch (1-based), restarting each fold
        else:
            x = ev.epoch if ev.epoch is not None and ev.split != "train" else ev.step
        self.curves.add(x, ev.values, ev.split)

    def _on_log(self, ev: Log) -> None:
        self.append_log(ev.line, ev.level)

    def _on_finished(self, final: Result | Failed) -> None:
        job, purpose = self.job, self.after
        try:
            rec = self.state.current
            if isinstance(final, Failed):
                if rec is not None:
                    rec.status = "failed"
                self.append_log(final.message, "error")
                if final.details:
                    self.append_log(final.details, "error")
                self.status.setText("Failed — see the message and the log.")
                self.win.show_error("The run failed", final.message, final.details)
            elif final.cancelled or final.value.get("cancelled"):
                if rec is not None:
                    rec.status = "cancelled"
                self.status.setText("Stopped. A checkpoint was kept: press Resume to continue.")
                self.append_log("stopped; checkpoint kept")
            else:
                if purpose == "train" and rec is not None:
                    rec.status, rec.result = "done", final.value
                self.status.setText({"train": "Finished.", "gp-final": "Final model trained on all lines."}
                                    .get(purpose or "", "Cells embedded."))
                self._after_success(purpose, final.value)
        finally:  # the DeepLabCut lesson: buttons come back whatever happened
            self.bar.setRange(0, 1000)
            if not (job is not None and job is not self.job):
                self.stop_btn.setEnabled(False)
            if self.job is job:
                self.train_btn.setEnabled(self.state.kind is not None)
                self.resume_btn.setEnabled(True)
            if isinstance(final, Result) and not final.cancelled:
                self.bar.setValue(1000)
                self.bar.setFormat("done")
            else:
                self.bar.setFormat("stopped" if isinstance(final, Result) else "failed")
            self.state.events.emit("runs")
            self.refresh_history()
            self.win.job_finished(purpose, final)

    def _after_success(self, purpose: str | None, value: dict[str, Any]) -> None:
        s = self.state
        rec = s.current
        if purpose == "embed-all":
            self.win.load_embedding(value.get("out"))
            return
        if purpose == "gp-final":
            s.gp_final = value
            s.events.emit("gp_final")
            self.append_log(f"final model(s) {', '.join(value.get('models', []))} saved in {value.get('models_dir')}; "
                            f"GEBVs of all {value.get('n_genotyped', '?')} lines in {value.get('gebv_csv')}")
            return
        if rec is None:
            return
        if rec.target == GP_TARGET:
            s.gp_result = value
            s.events.emit("gp_result")
            self.win.tabs.setCurrentWidget(self.win.results_tab)
        elif rec.kind == "finetune":
            mpath = Path(rec.path) / "metrics.json"
            if mpath.is_file():
                s.metrics = json.loads(mpath.read_text())
                s.events.emit("metrics")
            self.embed_all(str(Path(rec.path) / "model"), rec.path)
        elif rec.kind == "embed":
            self.win.load_embedding(value.get("out"))
        elif rec.kind == "pretrain" and value.get("model_dir"):
            self.win.model_tab.set_model_dir(str(value["model_dir"]))
            self.append_log("the pretrained model is now the starting model for fine-tuning")

    def train_final(self, model: str) -> None:
        """After a cross-validation: fit ``model`` on every phenotyped line (same data and settings) and
        predict GEBVs of every genotyped line; the model folder can then be exported."""
        rec = self.state.current
        if self.running or rec is None or rec.target != GP_TARGET:
            self.win.show_error("Cross-validate first", "Run a cross-validation, then train the chosen model "
                                "on all lines.")
            return
        from app.engine.rundir import default_runs_root, new_run_name

        run_dir = str(default_runs_root() / new_run_name(f"gp-train-{model.lower()}"))
        cfg = {k: v for k, v in rec.config.items() if k not in ("run_dir", "folds", "repeats", "group")}
        cfg.update(models=[model], run_dir=run_dir)
        self._start(GP_TRAIN_TARGET, cfg, run_dir, resume=False, purpose="gp-final")

    def embed_all(self, model_dir: str, parent_run: str) -> None:
        """Apply a model at once: embed (and label) every cell, then map them."""
        run_dir = str(Path(parent_run) / "embed-all")
        cfg = {"data": self.state.data_path, "model": model_dir, "out": str(Path(run_dir) / "embedded.h5ad"),
               "device": self.state.device, "run_dir": run_dir}
        self._start(EMBED_TARGET, cfg, run_dir, resume=False, purpose="embed-all")

    # -- history -----------------------------------------------------------------------------------
    def refresh_history(self) -> None:
        """List the run folders (newest first)."""
        from app.engine.rundir import list_runs

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

    def reopen(self, path: str) -> None:
        """Show a past run: its curves, log and (when finished) its results."""
        from app.engine.rundir import RunDir

        try:
            rd = RunDir.open(path)
        except Exception as exc:
            self.win.show_error("This run cannot be opened", str(exc))
            return
        self._reload_curves(rd)
        self.log.clear()
        for line in rd.tail_log(200):
            self.log.appendPlainText(line)
        rec = RunRecord(path=str(path), kind=rd.kind, target=rd.target or "", config=rd.read_config(),
                        status=rd.status, result=rd.read_result())
        self.state.add_run(rec)
        self.status.setText(f"Reopened {Path(path).name} ({rd.status})")
        if rec.target == GP_TARGET and rec.result:
            self.state.gp_result = rec.result
            self.state.events.emit("gp_result")
        mpath = Path(path) / "metrics.json"
        if mpath.is_file():
            self.state.metrics = json.loads(mpath.read_text())
            self.state.events.emit("metrics")
        emb = Path(path) / "embed-all" / "embedded.h5ad"
        if emb.is_file() and self.state.adata is not None:
            self.win.load_embedding(str(emb))
