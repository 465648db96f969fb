"""The Advanced form, generated from a job config's field specs (``app.engine.jobconfig.field_specs``).

Each setting marked ``advanced`` in the engine's config gets an editor chosen by its kind (a spin box within
its range for numbers, a list for choices, a check box for yes/no, an editable list for suggestions, a line
for text), its one-line help and default as the tooltip, its unit in the label, and, where ``None`` means
something ("by preset", "all", "model default"), that meaning shown at the editor's lowest value. Nothing about
a setting is written here: a new hyper-parameter is one line in the config and both faces get it.

Values read back are what the form holds (0 / "" for a setting left at its "None" meaning);
``AppState.job_spec`` turns them into the config's values.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QSpinBox,
    QWidget,
)

from app.engine.jobconfig import FieldSpec

INT_MAX = 2_000_000_000


def spec_for_value(name: str, value: Any, help: str = "") -> FieldSpec:
    """A spec for a setting known only by its default (a deep GP model's own hyper-parameters, ``"dnngp.dropout1"``)."""
    kind = ("bool" if isinstance(value, bool) else "int" if isinstance(value, int)
            else "float" if isinstance(value, float) else "str")
    return FieldSpec(name=name, kind=kind, default=value, help=help, advanced=True)


def split_none_label(label: str) -> tuple[str, str]:
    """A spin box's special-value text and the detail shown beside it: "by preset (tiny 1e-3, small 5e-4)" ->
    ("by preset", "tiny 1e-3, small 5e-4"). The whole label cut off inside a narrow editor read as noise."""
    head, sep, tail = label.partition(" (")
    if not sep or not head.strip():
        return label, ""
    return head.strip(), tail.rstrip(")").strip()


def _decimals(spec: FieldSpec, value: float) -> int:
    small = [abs(v) for v in (value, spec.default if isinstance(spec.default, float) else 0.0, spec.min or 0.0)
             if v]
    return 6 if small and min(small) < 0.01 else 4


class ConfigForm(QWidget):
    """Editors for a list of field specs; ``changed`` fires on every edit."""

    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.form = QFormLayout(self)
        self.editors: dict[str, QWidget] = {}
        self.specs: dict[str, FieldSpec] = {}
        self.hints: dict[str, QLabel] = {}  # the grey detail beside a spin box at its "None" meaning

    def build(self, specs: Iterable[FieldSpec], values: dict[str, Any]) -> None:
        """One editor per spec, showing ``values[name]`` (the form's starting values)."""
        while self.form.rowCount():
            self.form.removeRow(0)
        self.editors, self.specs, self.hints = {}, {}, {}
        for spec in specs:
            ed = self._editor(spec, values.get(spec.name, spec.default))
            self.editors[spec.name] = ed
            self.specs[spec.name] = spec
            label = spec.name.split(".", 1)[-1].replace("_", " ")
            if spec.unit and spec.unit not in label:  # "batch size (cells)", not "epochs (epochs)"
                label += f" ({spec.unit})"
            self.form.addRow(label + ":", self._with_hint(spec, ed))

    def _with_hint(self, spec: FieldSpec, ed: QWidget) -> QWidget:
        """A spin box whose "None" meaning has a detail: the detail in grey beside it, while it shows that
        meaning (at its lowest value)."""
        detail = split_none_label(spec.none_label)[1] if isinstance(ed, QSpinBox | QDoubleSpinBox) else ""
        if not (detail and spec.nullable):
            return ed
        hint = QLabel(detail)
        hint.setStyleSheet("color: #666;")
        hint.setObjectName(f"hint_{spec.name}")
        row = QWidget()
        lay = QHBoxLayout(row)
        lay.setContentsMargins(0, 0, 0, 0)
        ed.setMinimumWidth(ed.maximumWidth())  # as wide as the editors of the other rows
        lay.addWidget(ed)
        lay.addWidget(hint, 1)
        self.hints[spec.name] = hint

        def show(_: object = None) -> None:
            hint.setVisible(ed.value() == ed.minimum())

        ed.valueChanged.connect(show)
        show()
        return row

    def _editor(self, spec: FieldSpec, value: Any) -> QWidget:
        tip = spec.help or ""
        if "." in spec.name:
            tip = f"{spec.name.split('.')[0].upper()} hyper-parameter" + (f": {tip}" if tip else "")
        tip += f" (default: {spec.default_text()}{' ' + spec.unit if spec.unit and spec.default is not None else ''})"
        ed: QWidget
        if spec.kind == "bool":
            ed = QCheckBox()
            ed.setChecked(bool(value))
            ed.toggled.connect(self.changed)
        elif spec.kind == "choice" or (spec.suggestions and spec.kind not in ("list", "paths")):
            ed = QComboBox()
            ed.addItems([str(c) for c in (spec.choices or spec.suggestions or ())])
            ed.setEditable(spec.kind != "choice")  # suggestions: other values stay valid (freeze last:3)
            ed.setCurrentText(str(value))
            ed.currentTextChanged.connect(self.changed)
        elif spec.kind in ("int", "float"):
            ed = QSpinBox() if spec.kind == "int" else QDoubleSpinBox()
            special = bool(spec.nullable and spec.none_label)
            lo = spec.min if spec.min is not None else 0
            if special or (spec.min_exclusive and lo == 0):
                lo = 0  # the lowest value stands for None ("by preset", "all")
            hi = spec.max if spec.max is not None else (INT_MAX if spec.kind == "int" else 1e9)
            if isinstance(ed, QDoubleSpinBox):
                ed.setDecimals(_decimals(spec, float(value or 0)))
                base = float(value or spec.default or 0.0)
                ed.setSingleStep(base / 10 if base else 10 ** -min(ed.decimals(), 4))
            ed.setRange(int(lo) if spec.kind == "int" else float(lo), int(hi) if spec.kind == "int" else float(hi))
            if special:
                ed.setSpecialValueText(split_none_label(spec.none_label)[0])  # the detail sits beside it
            ed.setValue(value if value is not None else lo)
            ed.valueChanged.connect(self.changed)
        else:
            if spec.kind in ("list", "paths"):  # several names: comma-separated in one line
                text = ", ".join(map(str, value or ()))
            elif spec.kind == "json":
                text = json.dumps(value) if value not in (None, "") else ""
            else:
                text = "" if value is None else str(value)
            ed = QLineEdit(text)
            if spec.nullable and spec.none_label:
                ed.setPlaceholderText(spec.none_label)
            elif spec.kind in ("list", "paths"):
                eg = f", e.g. {', '.join(map(str, spec.suggestions))}" if spec.suggestions else ""
                ed.setPlaceholderText(f"none (comma-separated{eg})")
            ed.textChanged.connect(self.changed)
        ed.setToolTip(tip)
        ed.setMaximumWidth(260)
        return ed

    def values(self) -> dict[str, Any]:
        """What every editor holds."""
        out: dict[str, Any] = {}
        for name, ed in self.editors.items():
            if isinstance(ed, QCheckBox):
                out[name] = ed.isChecked()
            elif isinstance(ed, QSpinBox):
                out[name] = int(ed.value())
            elif isinstance(ed, QDoubleSpinBox):
                out[name] = float(ed.value())
            elif isinstance(ed, QComboBox):
                out[name] = ed.currentText()
            elif isinstance(ed, QLineEdit):
                out[name] = ed.text()
                if self.specs[name].kind in ("list", "paths"):
                    out[name] = [v.strip() for v in ed.text().split(",") if v.strip()]
        return out

    def set_value(self, name: str, value: Any) -> None:
        """Set one editor as a user would."""
        ed = self.editors[name]
        if isinstance(ed, QCheckBox):
            ed.setChecked(bool(value))
        elif isinstance(ed, QSpinBox | QDoubleSpinBox):
            ed.setValue(value)
        elif isinstance(ed, QComboBox):
            ed.setCurrentText(str(value))
        elif self.specs[name].kind in ("list", "paths"):
            ed.setText(", ".join(map(str, [value] if isinstance(value, str) else value)))
        else:
            ed.setText(str(value))


__all__ = ["ConfigForm", "spec_for_value", "split_none_label"]
