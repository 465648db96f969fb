"""Step 2, Model: what to train (sensible defaults), an Advanced section, and the device."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QRadioButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)
from superqt import QCollapsible

from app.data.errors import OmicsLabError
from app.engine.jobconfig import FieldSpec, field_specs
from app.engine.registry import job
from app.resources import CELLLM_TINY
from app.ui.config_form import ConfigForm, spec_for_value
from app.ui.state import (
    EVAL_DEFAULTS,
    GP_DEFAULTS,
    GP_MODELS,
    GP_TASKS,
    SC_DEFAULTS,
    SC_JOBS,
    SC_TASKS,
    eval_specs,
    gp_model_defaults,
)

if TYPE_CHECKING:
    from app.ui.session import Session
    from app.ui.shell import Shell

TASK_HELP = {
    "finetune": "Train a cell-type classifier on your labelled cells, starting from a pretrained CellLM "
                "(default: the bundled tiny model). Scored on held-out cells beside a logistic-regression "
                "baseline.",
    "pretrain": "Learn a new CellLM from your (unlabelled) cells: masked-expression and contrastive losses. "
                "Slow on a CPU; use a GPU for real datasets.",
    "embed": "Compute a CellLM embedding of every cell with an existing model (and labels if the model "
             "was fine-tuned), then map them.",
    "compare": "Cross-validate GBLUP, DNNGP, DeepGS and DLGWAS on the same folds and compare Pearson r.",
    "gblup": "Genomic BLUP (ridge regression on a genomic relationship matrix): the classical baseline.",
    "dnngp": "DNNGP: a CNN on principal-component scores of the markers.",
    "deepgs": "DeepGS: a CNN on the 0/1/2 marker matrix.",
    "dlgwas": "DLGWAS: a dual-stream CNN on one-hot genotypes; its saliency gives marker importance.",
}


class ModelTab(QWidget):
    """Choose the task, the starting model, hyper-parameters and the device."""

    def __init__(self, session: Session, shell: Shell) -> None:
        super().__init__()
        self.session, self.state, self.shell = session, session.state, shell
        self.task_box = QGroupBox("What to do")
        self.task_lay = QVBoxLayout(self.task_box)
        self.group = QButtonGroup(self)
        self.group.idToggled.connect(self._task_toggled)
        self.task_help = QLabel("")
        self.task_help.setWordWrap(True)
        self.task_help.setStyleSheet("color: #444;")
        self.buttons: dict[str, QRadioButton] = {}

        self.model_edit = QLineEdit(str(CELLLM_TINY))
        self.model_edit.setReadOnly(True)
        self.model_btn = QPushButton("Choose model…")
        self.model_reset = QPushButton("Bundled tiny")
        mrow = QHBoxLayout()
        mrow.addWidget(self.model_edit, 1)
        mrow.addWidget(self.model_btn)
        mrow.addWidget(self.model_reset)
        self.model_box = QGroupBox("Starting model")
        QVBoxLayout(self.model_box).addLayout(mrow)

        self.compare_box = QGroupBox("Models to compare (same folds)")
        crow = QHBoxLayout(self.compare_box)
        self.compare_checks: dict[str, QCheckBox] = {}
        for m in GP_MODELS:
            cb = QCheckBox(m)
            cb.setChecked(True)
            cb.toggled.connect(self._compare_changed)
            self.compare_checks[m] = cb
            crow.addWidget(cb)
        crow.addStretch(1)

        self.device_combo = QComboBox()
        try:
            from app.engine.device import available_devices

            self.device_combo.addItems(available_devices())
        except Exception:  # torch missing or broken: CPU still works for everything small
            self.device_combo.addItems(["auto", "cpu"])
        self.device_combo.setToolTip("auto = a CUDA GPU when one is visible, else the CPU.")
        self.device_combo.currentTextChanged.connect(self._device_changed)
        drow = QFormLayout()
        drow.addRow("Device:", self.device_combo)

        self.advanced = QCollapsible("Advanced hyper-parameters")
        self.form = ConfigForm()  # generated from the job config's field specs
        self.form.changed.connect(self.read_params)
        self.advanced.addWidget(self.form)
        self.model_defaults: dict[str, Any] = {}

        # "Evaluate (K repeats)" on the Train tab: its own settings, generated from EvaluateConfig's fields
        self.eval_box = QGroupBox("Repeated evaluation (the Train tab's Evaluate button)")
        self.eval_form = ConfigForm()
        self.eval_form.build(eval_specs(), EVAL_DEFAULTS)
        self.eval_form.changed.connect(self.read_eval_params)
        eval_help = QLabel("Fine-tunes with the settings above on several seeded splits, with the baseline on "
                           "the same cells: mean ± SD and whether CellLM is ahead beyond the split noise.")
        eval_help.setWordWrap(True)
        eval_help.setStyleSheet("color: #444;")
        el = QVBoxLayout(self.eval_box)
        el.addWidget(eval_help)
        el.addWidget(self.eval_form)

        self.cluster_btn = QPushButton("Several GPUs / cluster…")
        self.cluster_btn.setToolTip("Pretrain on several GPUs of this machine (torchrun) or write a launch script "
                                    "(Slurm or plain torchrun) for a cluster.")
        self.cluster_btn.clicked.connect(self.open_cluster_dialog)
        self.cluster_dialog: Any = None

        self.next_btn = QPushButton("Next: Train →")
        self.next_btn.clicked.connect(lambda: self.session.show_step("train"))
        # the settings scroll (the Advanced form is long): the window keeps its size, Next stays in view
        body = QWidget()
        lay = QVBoxLayout(body)
        lay.addWidget(self.task_box)
        lay.addWidget(self.task_help)
        lay.addWidget(self.model_box)
        lay.addWidget(self.compare_box)
        lay.addLayout(drow)
        arow = QHBoxLayout()  # the repeated evaluation's settings beside the Advanced form, using the width
        arow.addWidget(self.advanced, 1)
        arow.addWidget(self.eval_box, 1, Qt.AlignmentFlag.AlignTop)
        lay.addLayout(arow)
        crow2 = QHBoxLayout()
        crow2.addWidget(self.cluster_btn)
        crow2.addStretch(1)
        lay.addLayout(crow2)
        lay.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setWidget(body)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll, 1)
        outer.addWidget(self.next_btn)
        self.model_btn.clicked.connect(self._choose_model)
        self.model_reset.clicked.connect(lambda: self.set_model_dir(str(CELLLM_TINY)))
        self.state.events.dataset.connect(self.rebuild)
        self.state.events.model_dir.connect(lambda path: self.model_edit.setText(str(path)))
        self.state.events.device.connect(self._show_device)
        self.rebuild()

    # -- building ----------------------------------------------------------------------------------
    def rebuild(self) -> None:
        """Offer the tasks that fit the open dataset."""
        for b in self.buttons.values():
            self.group.removeButton(b)
            b.deleteLater()
        self.buttons = {}
        if self.state.kind == "genotype":
            tasks = {k: (v if k != "compare" else "Compare models on the same folds (GBLUP, DNNGP, DeepGS, DLGWAS)")
                     for k, v in GP_TASKS.items()}
        else:
            tasks = {k: v[0] for k, v in SC_TASKS.items()}
        for i, (key, label) in enumerate(tasks.items()):
            b = QRadioButton(label)
            b.setProperty("task", key)
            self.buttons[key] = b
            self.group.addButton(b, i)
            self.task_lay.addWidget(b)
        task = self.state.task if self.state.task in tasks else next(iter(tasks))
        self.buttons[task].setChecked(True)
        self.set_task(task)

    def _task_toggled(self, _id: int, checked: bool) -> None:
        if checked:
            b = self.group.checkedButton()
            if b is not None:
                self.set_task(str(b.property("task")))

    def set_task(self, task: str) -> None:
        """Select a task and show its hyper-parameters with their defaults."""
        self.state.task = task
        if task in self.buttons and not self.buttons[task].isChecked():
            self.buttons[task].setChecked(True)
        self.task_help.setText(TASK_HELP.get(task, ""))
        self.model_box.setVisible(task in ("finetune", "embed"))
        self.compare_box.setVisible(task == "compare")
        self.cluster_btn.setVisible(task == "pretrain")
        self.eval_box.setVisible(task == "finetune" and self.state.kind != "genotype")
        if self.state.kind == "genotype":
            self.model_defaults = gp_model_defaults(task)
            defaults = {**GP_DEFAULTS, **self.model_defaults}
        else:
            self.model_defaults = {}
            defaults = dict(SC_DEFAULTS.get(task) or {})
        self._fill_editors(defaults)

    def form_specs(self, task: str) -> list[FieldSpec]:
        """The Advanced settings of ``task``: its job config's ``advanced`` fields (the genomic-prediction
        tasks add the chosen deep model's own hyper-parameters)."""
        if self.state.kind == "genotype":
            specs = [sp for sp in field_specs(job("gp.cv").config) if sp.advanced]
            return specs + [spec_for_value(k, v) for k, v in self.model_defaults.items()]
        name = SC_JOBS.get(task)
        return [sp for sp in field_specs(job(name).config) if sp.advanced] if name else []

    def _fill_editors(self, defaults: dict[str, Any]) -> None:
        self.form.build(self.form_specs(self.state.task), defaults)
        self.read_params()

    @property
    def editors(self) -> dict[str, QWidget]:
        """The Advanced form's editors by setting name."""
        return self.form.editors

    def read_params(self) -> dict[str, Any]:
        """The Advanced values into ``state.params``."""
        out = self.form.values()
        # a deep model's own hyper-parameters travel only when changed (the engine fills the rest)
        out = {k: v for k, v in out.items() if k not in self.model_defaults or v != self.model_defaults[k]}
        self.state.params = out
        return out

    def read_eval_params(self) -> dict[str, Any]:
        """The repeated evaluation's settings into ``state.eval_params``."""
        self.state.eval_params = out = self.eval_form.values()
        return out

    def set_eval_param(self, key: str, value: Any) -> None:
        """Set one repeated-evaluation setting as a user would (tests and the screenshots use this)."""
        self.eval_form.set_value(key, value)
        self.read_eval_params()

    def set_param(self, key: str, value: Any) -> None:
        """Set one hyper-parameter as a user would (tests and the screenshots use this)."""
        self.form.set_value(key, value)
        self.read_params()

    def set_compare_models(self, models: list[str]) -> None:
        """Tick exactly ``models`` for "compare all"."""
        for m, cb in self.compare_checks.items():
            cb.setChecked(m in models)

    def _compare_changed(self) -> None:
        chosen = [m for m, cb in self.compare_checks.items() if cb.isChecked()]
        if not chosen:  # at least one model: re-tick the one just cleared
            sender = self.sender()
            if isinstance(sender, QCheckBox):
                sender.setChecked(True)
            return
        self.state.compare_models = chosen

    def open_cluster_dialog(self) -> Any:
        """The pretraining settings as a multi-GPU / cluster launch (SCALE's dialog), non-modal."""
        try:
            from app.ui.cluster_dialog import ClusterDialog
        except ImportError as exc:  # built without it: say so instead of failing
            self.shell.show_error("Not available", f"The cluster launcher is not part of this build ({exc}).")
            return None
        try:
            _, cfg = self.state.job_spec(self.session.new_run_dir("pretrain"))
        except (ValueError, OmicsLabError) as exc:
            self.shell.show_error("Open a dataset first", str(exc))
            return None
        dlg = ClusterDialog(cfg, self)
        dlg.script_written.connect(lambda p: self.session.log(f"launch script written: {p}"))
        dlg.launched.connect(lambda d: self.session.log(f"multi-GPU pretraining started in {d}"))
        dlg.open()
        self.cluster_dialog = dlg
        return dlg

    # -- model / device ----------------------------------------------------------------------------
    def _choose_model(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Choose a CellLM model folder (or a fine-tune run folder)")
        if d:
            self.set_model_dir(d)

    def set_model_dir(self, path: str) -> None:
        """Use another model (the session then recomputes the gene match)."""
        self.state.model_dir = path

    def _device_changed(self, text: str) -> None:
        self.state.device = text or "auto"

    def _show_device(self, device: str) -> None:
        if self.device_combo.findText(device) >= 0 and self.device_combo.currentText() != device:
            self.device_combo.setCurrentText(device)
