"""The "Several GPUs / cluster..." dialog of CellLM pretraining.

Shows the GPUs this machine sees; with more than one it offers a local multi-GPU run (torchrun, one rank per
GPU, started in the background: the run folder shows its progress); for a cluster it writes a ready-to-run
launch script (torchrun command + the job config JSON; Slurm: an ``sbatch`` script with a c10d rendezvous on
the allocation's first node). The preview shows exactly the script that will be written.

Use: ``ClusterDialog(pretrain_config, parent).exec()``; ``script_written(path)`` and ``launched(run_dir)`` tell
the caller what happened.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.data.errors import OmicsLabError
from app.engine.celllm.launch_script import (
    LaunchSpec,
    launch_config,
    script_text,
    start_local,
    visible_gpus,
    write_launch_script,
)

LOCAL, SLURM = "local", "slurm"


class ClusterDialog(QDialog):
    """Local multi-GPU run or cluster launch script for a pretraining job config (``data``, ``run_dir`` ...).

    ``gpus``: the GPU names to show (default: those visible, ``launch_script.visible_gpus``)."""

    script_written = Signal(str)
    launched = Signal(str)

    def __init__(self, config: dict[str, Any], parent: QWidget | None = None, gpus: list[str] | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Pretrain on several GPUs or a cluster")
        self.config = dict(config)
        self.gpus = list(visible_gpus() if gpus is None else gpus)
        self.process: Any = None

        gpu_text = "\n".join(self.gpus) if self.gpus else "none (this machine runs on the CPU)"
        self.gpu_label = QLabel(gpu_text)
        self.gpu_label.setObjectName("gpus")
        self.scheduler = QComboBox()
        self.scheduler.addItem("This machine (torchrun)", LOCAL)
        self.scheduler.addItem("Slurm cluster (sbatch script)", SLURM)
        self.nodes = QSpinBox()
        self.nodes.setRange(1, 1024)
        self.gpus_per_node = QSpinBox()
        self.gpus_per_node.setRange(1, 64)
        self.gpus_per_node.setValue(max(1, len(self.gpus)))
        self.partition = QLineEdit()
        self.partition.setPlaceholderText("cluster default")
        self.account = QLineEdit()
        self.account.setPlaceholderText("cluster default")
        self.time_limit = QLineEdit("24:00:00")
        run_dir = Path(str(self.config.get("run_dir") or "run"))
        self.script_path = QLineEdit(str(run_dir.parent / f"{run_dir.name}-launch.sh"))
        browse = QPushButton("Browse...")
        browse.clicked.connect(self._browse)
        path_row = QHBoxLayout()
        path_row.addWidget(self.script_path, 1)
        path_row.addWidget(browse)

        form = QFormLayout()
        form.addRow("GPUs visible here:", self.gpu_label)
        form.addRow("Run on:", self.scheduler)
        form.addRow("Nodes:", self.nodes)
        form.addRow("GPUs per node:", self.gpus_per_node)
        form.addRow("Slurm partition:", self.partition)
        form.addRow("Slurm account:", self.account)
        form.addRow("Time limit:", self.time_limit)
        form.addRow("Script:", path_row)

        self.note = QLabel()
        self.note.setWordWrap(True)
        self.preview = QPlainTextEdit()
        self.preview.setReadOnly(True)
        self.preview.setMinimumHeight(180)

        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.write_button = buttons.addButton("Write script", QDialogButtonBox.ButtonRole.ActionRole)
        self.run_button = buttons.addButton("Run here", QDialogButtonBox.ButtonRole.ActionRole)
        self.write_button.clicked.connect(self.write_script)
        self.run_button.clicked.connect(self.run_local)
        buttons.rejected.connect(self.reject)

        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.note)
        lay.addWidget(QLabel("Script preview:"))
        lay.addWidget(self.preview, 1)
        lay.addWidget(buttons)

        for w in (self.nodes, self.gpus_per_node):
            w.valueChanged.connect(self._refresh)
        for e in (self.partition, self.account, self.time_limit, self.script_path):
            e.textChanged.connect(self._refresh)
        self.scheduler.currentIndexChanged.connect(self._refresh)
        if len(self.gpus) <= 1:  # nothing to parallelise here: a cluster script is the useful choice
            self.scheduler.setCurrentIndex(1)
        self._refresh()

    # -- state -------------------------------------------------------------------------------------
    def spec(self) -> LaunchSpec:
        """The launch spec the widgets describe."""
        kind = self.scheduler.currentData()
        return LaunchSpec(nodes=self.nodes.value() if kind == SLURM else 1, gpus_per_node=self.gpus_per_node.value(),
                          scheduler=kind, partition=self.partition.text().strip() or None,
                          account=self.account.text().strip() or None,
                          time=self.time_limit.text().strip() or "24:00:00")

    def can_run_here(self) -> bool:
        """A local run makes sense with more than one visible GPU."""
        return len(self.gpus) > 1

    def _refresh(self) -> None:
        slurm = self.scheduler.currentData() == SLURM
        for w in (self.nodes, self.partition, self.account, self.time_limit):
            w.setEnabled(slurm)
        if not slurm:
            self.gpus_per_node.setMaximum(max(1, len(self.gpus)))
        else:
            self.gpus_per_node.setMaximum(64)
        self.run_button.setEnabled(self.can_run_here() and not slurm)
        spec = self.spec()
        total = spec.nodes * spec.ranks_per_node()
        bs = int(self.config.get("batch_size") or 64)
        self.note.setText(f"{total} rank(s); the contrastive batch of {bs} cells is global ({max(1, bs // total)} "
                          "per rank). Data and run folder must be on storage every node sees; running the script "
                          "again resumes from the last checkpoint.")
        try:
            path = Path(self.script_path.text().strip() or "launch.sh")
            self.preview.setPlainText(script_text(path.with_suffix(".json"), launch_config(self.config), spec))
        except OmicsLabError as exc:
            self.preview.setPlainText(f"# cannot write this script: {exc}")

    def _browse(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Launch script", self.script_path.text(), "Shell scripts (*.sh)")
        if path:
            self.script_path.setText(path)

    # -- actions -----------------------------------------------------------------------------------
    def write_script(self) -> Path | None:
        """Write the script and its config JSON; returns the script path (None after an error message)."""
        try:
            script, _cfg = write_launch_script(self.script_path.text().strip(), self.config, self.spec())
        except (OmicsLabError, OSError) as exc:
            QMessageBox.warning(self, "Cannot write the script", str(exc))
            return None
        self.script_written.emit(str(script))
        return script

    def run_local(self) -> None:
        """Write a local script and start it in the background (torchrun, one rank per GPU)."""
        if not self.can_run_here():
            return
        self.scheduler.setCurrentIndex(0)
        script = self.write_script()
        if script is None:
            return
        self.process = start_local(script)
        self.launched.emit(str(Path(str(self.config["run_dir"])).resolve()))
        self.note.setText(f"started on {self.gpus_per_node.value()} GPUs (process {self.process.pid}); "
                          f"output in {script.with_suffix('.log')}")
