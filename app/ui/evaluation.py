"""What the window shows of a repeated evaluation (``celllm.evaluate``'s ``metrics.json``), without Qt.

The engine writes per-method mean/SD at 100 % of the training labels (``methods``), the paired differences
CellLM minus each other method with a 95 % interval (``differences``), their sentences (``verdicts``) and,
with label fractions, one such summary per fraction (``label_efficiency``). These functions turn that into
the table rows, the sentences and the label-efficiency curve the Results tab draws; tests check them
without a window.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

METHOD_NAMES = {"celllm": "CellLM (pretrained start)", "baseline": "Baseline", "scratch": "CellLM from scratch"}
METRIC_NAMES = {"macro_f1": "macro-F1", "accuracy": "accuracy"}


@dataclass(frozen=True)
class Curve:
    """One method's label-efficiency curve: fraction of the training labels, mean and SD over repeats."""

    method: str
    fraction: np.ndarray
    mean: np.ndarray
    sd: np.ndarray  # 0 where one repeat (no SD)
    n: np.ndarray  # repeats behind each point


def read_evaluation(run_dir: str | Path) -> dict[str, Any]:
    """The summary of a finished evaluation run folder (its ``metrics.json``).

    Raises:
        ValueError: the folder holds no evaluation summary (not an evaluate run, or it did not finish).
    """
    path = Path(run_dir) / "metrics.json"
    if not path.is_file():
        raise ValueError(f"{run_dir} has no metrics.json: the evaluation did not finish (or this is another "
                         "kind of run). Choose the folder of a finished 'Evaluate' run.")
    data = json.loads(path.read_text(encoding="utf-8"))
    if not is_evaluation(data):
        raise ValueError(f"{path} is not the summary of a repeated evaluation (no per-method repeats). "
                         "Choose the folder of a finished 'Evaluate' run.")
    return data


def is_evaluation(data: Any) -> bool:
    """True for an evaluate summary (per-method spreads and per-repeat rows)."""
    return isinstance(data, dict) and isinstance(data.get("methods"), dict) and isinstance(data.get("rows"), list)


def _text(s: dict[str, Any] | None, digits: int = 3) -> str:
    """``{"mean", "sd"}`` -> "0.873 ± 0.021" ("-" when missing)."""
    if not s or s.get("mean") is None:
        return "-"
    if s.get("sd") is None:
        return f"{s['mean']:.{digits}f}"
    return f"{s['mean']:.{digits}f} ± {s['sd']:.{digits}f}"


def method_rows(ev: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """Rows (method, macro-F1 mean ± SD, accuracy mean ± SD, CellLM minus it: mean ± 95 % half-width) at
    100 % of the training labels, in the engine's method order."""
    out = []
    for m, sp in (ev.get("methods") or {}).items():
        diff = (ev.get("differences") or {}).get(f"celllm_minus_{m}", {}).get("macro_f1") or {}
        d = "" if diff.get("mean") is None else (
            f"{diff['mean']:+.3f}" + ("" if diff.get("half_width") is None else f" ± {diff['half_width']:.3f}"))
        out.append((METHOD_NAMES.get(m, m), _text(sp.get("macro_f1")), _text(sp.get("accuracy")), d))
    return out


def verdicts(ev: dict[str, Any]) -> list[str]:
    """The engine's plain-words sentences (CellLM vs the baseline first, then vs from scratch)."""
    v = ev.get("verdicts") or {}
    return [v[k] for k in sorted(v, key=lambda k: (k != "celllm_vs_baseline", k))]


def efficiency_curves(ev: dict[str, Any], metric: str = "macro_f1") -> list[Curve]:
    """One curve per method over the label fractions (``label_efficiency``), fractions ascending; [] when
    the run had no fractions below 1."""
    table = ev.get("label_efficiency") or []
    if len(table) < 2:
        return []
    table = sorted(table, key=lambda t: float(t["fraction"]))
    out = []
    for m in ev.get("methods") or {}:
        pts = [(float(t["fraction"]), (t["methods"].get(m) or {}).get(metric) or {}) for t in table]
        pts = [(f, s) for f, s in pts if s.get("mean") is not None]
        if not pts:
            continue
        out.append(Curve(m, np.array([f for f, _ in pts]), np.array([float(s["mean"]) for _, s in pts]),
                         np.array([float(s.get("sd") or 0.0) for _, s in pts]),
                         np.array([int(s.get("n") or 0) for _, s in pts])))
    return out


def gp_over_repeats(result: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """A GP cross-validation with repeats > 1: per model, (Pearson r mean ± SD over repeats, the paired
    difference to GBLUP: mean ± 95 % half-width and its reading); {} with one repeat (nothing to add to the
    per-fold SD)."""
    out: dict[str, tuple[str, str]] = {}
    for name, m in (result.get("models") or {}).items():
        if not isinstance(m, dict) or int(m.get("n_repeats") or 0) < 2:
            continue
        over = _text((m.get("over_repeats") or {}).get("pearson"))
        vs = m.get("vs_gblup") or {}
        if vs.get("mean") is None:
            diff = "reference" if name == (vs.get("reference") or "GBLUP") else "-"
        else:
            word = ("ahead" if (vs.get("low") or 0) > 0 else "behind" if (vs.get("high") or 0) < 0
                    else "not distinguishable") if vs.get("half_width") is not None else "one repeat"
            hw = "" if vs.get("half_width") is None else f" ± {vs['half_width']:.3f}"
            diff = f"{vs['mean']:+.3f}{hw} ({word})"
        out[str(name)] = (over, diff)
    return out


def headline(ev: dict[str, Any]) -> str:
    """One line above the table: repeats, cells, classes, starting model."""
    n_test = sorted({r.get("n_test") for r in ev.get("rows") or [] if r.get("n_test") is not None})
    test = f", {n_test[0]}-{n_test[-1]} test cells per repeat" if len(n_test) > 1 else (
        f", {n_test[0]} test cells per repeat" if n_test else "")
    return (f"{ev.get('repeats', '?')} seeded splits of {ev.get('n_cells', '?')} labelled cells "
            f"({len(ev.get('classes') or [])} classes){test}; start: {Path(str(ev.get('init') or 'shipped')).name}")


__all__ = ["METHOD_NAMES", "Curve", "efficiency_curves", "gp_over_repeats", "headline", "is_evaluation", "method_rows",
           "read_evaluation", "verdicts"]
