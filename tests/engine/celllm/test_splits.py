"""Label cleaning, stratified splits and scores used by CellLM fine-tuning and its baseline."""

from __future__ import annotations

import numpy as np
import pytest

from app.data.errors import DataError
from app.engine.celllm.splits import (
    classification_scores,
    clean_labels,
    split_from_column,
    stratified_split,
)


def _labels() -> np.ndarray:
    return np.array(["A"] * 50 + ["B"] * 30 + ["C"] * 20 + ["D"] * 2)


def test_split_is_stratified_disjoint_and_complete() -> None:
    y = _labels()
    s = stratified_split(y, val_frac=0.2, test_frac=0.2, seed=3)
    allidx = np.concatenate([s.train, s.val, s.test])
    assert sorted(allidx.tolist()) == list(range(len(y)))  # every cell exactly once
    for cls, n in (("A", 50), ("B", 30), ("C", 20)):
        assert (y[s.test] == cls).sum() == round(n * 0.2)
        assert (y[s.val] == cls).sum() == round(n * 0.2)
    # a 2-cell class cannot fill three splits: it is kept for training and reported
    assert "D" in s.small_classes and (y[s.train] == "D").sum() == 2
    assert any("D" in n for n in s.notes)


def test_split_seed_determinism() -> None:
    y = _labels()
    a = stratified_split(y, seed=7)
    b = stratified_split(y, seed=7)
    c = stratified_split(y, seed=8)
    assert np.array_equal(a.test, b.test) and np.array_equal(a.val, b.val)
    assert not np.array_equal(a.test, c.test)


def test_one_class_refused() -> None:
    with pytest.raises(DataError, match="at least two classes"):
        clean_labels(np.array(["T"] * 10 + ["NA"] * 3), source="cell_type")


def test_missing_labels_dropped_with_note() -> None:
    cl = clean_labels(np.array(["a", "NA", "b", None, "a"], dtype=object))
    assert cl.keep.tolist() == [True, False, True, False, True]
    assert cl.n_dropped == 2 and cl.classes == ["a", "b"]


def test_test_only_classes_reported() -> None:
    y = np.array(["A", "A", "B", "B", "C", "A"])
    col = np.array(["train", "val", "train", "test", "test", "Test"])
    s = split_from_column(y, col)
    assert s.test_only_classes == ["C"]
    assert any("not in train" in n for n in s.notes)


def test_bad_split_column_refused() -> None:
    with pytest.raises(DataError, match="other than train/val/test"):
        split_from_column(np.array(["A", "B"]), np.array(["train", "holdout"]))


def test_scores_confusion_and_macro_f1() -> None:
    y = np.array(["A", "A", "B", "B"])
    p = np.array(["A", "B", "B", "B"])
    sc = classification_scores(y, p, ["A", "B"])
    assert sc["accuracy"] == pytest.approx(0.75)
    assert sc["confusion"]["matrix"] == [[1, 1], [0, 2]]
    assert sc["per_class_f1"]["A"] == pytest.approx(2 / 3)
    assert sc["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)
