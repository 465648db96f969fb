"""Label cleaning, stratified train/validation/test splits and classification metrics for CellLM tasks.

Shared by fine-tuning and its baseline so both are scored on exactly the same cells.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from app.data.errors import DataError

MISSING_LABELS = {"", "na", "nan", "none", "null", "n/a", "unknown"}
"""Label strings treated as "no label" (compared case-insensitively after stripping)."""


@dataclass
class CleanLabels:
    """Labels with the unlabelled cells removed."""

    labels: np.ndarray  # str, one per kept cell
    keep: np.ndarray  # bool mask over the input cells
    classes: list[str]
    n_dropped: int
    notes: list[str] = field(default_factory=list)


def clean_labels(values: pd.Series | np.ndarray, *, source: str = "labels") -> CleanLabels:
    """Drop NaN / "NA"-like labels (with a note) and refuse a label column with fewer than two classes."""
    s = pd.Series(np.asarray(values, dtype=object))
    missing = s.isna() | s.astype(str).str.strip().str.lower().isin(MISSING_LABELS)
    keep = ~missing.to_numpy()
    labels = s[keep].astype(str).str.strip().to_numpy()
    notes: list[str] = []
    n_dropped = int((~keep).sum())
    if n_dropped:
        notes.append(f"dropped {n_dropped} cell(s) whose label is missing or 'NA'")
    classes = sorted(set(labels.tolist()))
    if len(classes) < 2:
        found = f"only {classes[0]!r}" if classes else "no labels at all"
        raise DataError(
            f"the label column {source!r} has {found} after dropping missing labels; "
            "classification needs at least two classes",
            None,
            "Pick another .obs column (or labels file) that holds cell types with two or more values.",
        )
    return CleanLabels(labels, keep, classes, n_dropped, notes)


@dataclass
class Split:
    """Indices (into the cleaned cells) of each split, plus notes for the user."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    notes: list[str] = field(default_factory=list)
    small_classes: list[str] = field(default_factory=list)
    test_only_classes: list[str] = field(default_factory=list)

    def names(self, n: int) -> np.ndarray:
        """Per-cell split name ("train"/"val"/"test"), length ``n``."""
        out = np.full(n, "", dtype=object)
        out[self.train], out[self.val], out[self.test] = "train", "val", "test"
        return out


def stratified_split(labels: np.ndarray, *, val_frac: float = 0.15, test_frac: float = 0.15,
                     seed: int = 0) -> Split:
    """Seeded stratified split, per class: ``round(n*test_frac)`` test and ``round(n*val_frac)`` validation
    cells, each at least one when the class has >= 3 cells, the rest train.

    Classes with fewer than 3 cells cannot be put in all three splits: they go to train entirely (so the
    model at least sees them) and are listed in ``small_classes`` with a note.
    """
    if not (0 < val_frac < 1 and 0 < test_frac < 1 and val_frac + test_frac < 1):
        raise DataError(f"invalid split fractions val={val_frac}, test={test_frac}", None,
                        "Use fractions in (0, 1) whose sum is below 1, e.g. 0.15 and 0.15.")
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    tr, va, te = [], [], []
    small = []
    for cls in sorted(set(labels.tolist())):
        idx = np.flatnonzero(labels == cls)
        rng.shuffle(idx)
        n = len(idx)
        if n < 3:
            small.append(cls)
            tr.append(idx)
            continue
        n_te = min(max(1, round(n * test_frac)), n - 2)
        n_va = min(max(1, round(n * val_frac)), n - n_te - 1)
        te.append(idx[:n_te])
        va.append(idx[n_te:n_te + n_va])
        tr.append(idx[n_te + n_va:])
    split = Split(*(np.sort(np.concatenate(p)) if p else np.zeros(0, int) for p in (tr, va, te)))
    if small:
        split.small_classes = small
        split.notes.append(
            f"{len(small)} class(es) have fewer than 3 cells and were put in train only (not scored): "
            + ", ".join(small))
    if len(split.test) == 0 or len(split.val) == 0:
        raise DataError("too few labelled cells to make validation and test splits", None,
                        "Provide at least 3 labelled cells in at least one class (more for useful scores).")
    return split


def split_from_column(labels: np.ndarray, column: pd.Series | np.ndarray) -> Split:
    """Use a user-given split column (values train/val/test, case-insensitive; "validation" allowed).

    Classes present in test but absent from train are reported in ``test_only_classes``: the model can
    never predict them, so their test cells count as errors.
    """
    col = pd.Series(np.asarray(column, dtype=object)).astype(str).str.strip().str.lower()
    col = col.replace({"validation": "val", "valid": "val"})
    bad = sorted(set(col) - {"train", "val", "test"})
    if bad:
        raise DataError(f"split column has values {bad[:5]} other than train/val/test", None,
                        "Use only 'train', 'val' and 'test' in the split column.")
    arr = col.to_numpy()
    split = Split(np.flatnonzero(arr == "train"), np.flatnonzero(arr == "val"), np.flatnonzero(arr == "test"))
    if min(len(split.train), len(split.val), len(split.test)) == 0:
        raise DataError("the split column must have at least one train, one val and one test cell", None,
                        "Assign cells to all three splits or leave the split to OmicsLab.")
    finish_split_notes(split, labels)
    return split


def finish_split_notes(split: Split, labels: np.ndarray) -> None:
    """Fill ``test_only_classes`` and classes with < 2 cells for any split."""
    labels = np.asarray(labels)
    train_classes = set(labels[split.train].tolist())
    test_only = sorted(set(labels[split.test].tolist()) - train_classes)
    if test_only:
        split.test_only_classes = test_only
        split.notes.append("class(es) in test but not in train (cannot be predicted): " + ", ".join(test_only))
    counts = pd.Series(labels).value_counts()
    tiny = sorted(counts[counts < 2].index.tolist())
    if tiny:
        split.small_classes = sorted(set(split.small_classes) | set(tiny))
        split.notes.append("class(es) with fewer than 2 cells: " + ", ".join(tiny))


def classification_scores(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict:
    """Accuracy, macro-F1 (over the classes present in truth or prediction), per-class F1 and the
    confusion matrix (rows = true, columns = predicted, in ``labels`` order)."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    y_true = np.asarray(y_true, dtype=object).astype(str)
    y_pred = np.asarray(y_pred, dtype=object).astype(str)
    present = sorted(set(y_true.tolist()) | set(y_pred.tolist()))
    per_class = f1_score(y_true, y_pred, labels=present, average=None, zero_division=0)
    labels = [c for c in classes if c in present] + [c for c in present if c not in classes]
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
        "per_class_f1": {c: float(f) for c, f in zip(present, per_class, strict=True)},
        "confusion": {"labels": labels, "matrix": cm.astype(int).tolist()},
    }
