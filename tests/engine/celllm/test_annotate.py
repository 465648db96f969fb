"""The cheap parts of annotation the window's slider calls on every move: threshold, counts, scores."""

from __future__ import annotations

import numpy as np
import pytest

from app.engine.celllm.annotate import UNASSIGNED, apply_threshold, class_counts, output_paths, score_transfer


def test_threshold_makes_low_confidence_cells_unassigned() -> None:
    best = ["A", "B", "A", "C"]
    conf = [0.9, 0.4, 0.55, 0.7]
    assert apply_threshold(best, conf, 0.5).tolist() == ["A", UNASSIGNED, "A", "C"]
    assert apply_threshold(best, conf, 0.0).tolist() == best
    assert apply_threshold(best, conf, 1.0).tolist() == [UNASSIGNED] * 4
    assert apply_threshold(best, conf, 0.55).tolist() == ["A", UNASSIGNED, "A", "C"]  # >= threshold is kept


def test_class_counts_list_every_class_then_unassigned() -> None:
    counts = class_counts(["A", UNASSIGNED, "A", "C"], ["A", "B", "C"])
    assert counts == {"A": 2, "B": 0, "C": 1, UNASSIGNED: 1}
    assert list(counts) == ["A", "B", "C", UNASSIGNED]


def test_scores_count_unassigned_as_wrong_and_skip_unlabelled_cells() -> None:
    true = ["A", "A", "B", "B", "NA", "D"]
    pred = ["A", UNASSIGNED, "B", "A", "A", "A"]
    s = score_transfer(true, pred, ["A", "B"])
    assert s["n_scored"] == 5  # the "NA" cell is not scored
    assert s["accuracy"] == pytest.approx(2 / 5)
    assert s["assigned_fraction"] == pytest.approx(4 / 5)
    assert s["accuracy_assigned"] == pytest.approx(2 / 4)
    assert s["unknown_classes"] == ["D"]
    # macro-F1 over the query's classes A, B, D (Unassigned is not a class of its own)
    f1 = s["per_class_f1"]
    assert s["macro_f1"] == pytest.approx(np.mean([f1["A"], f1["B"], f1["D"]]))
    assert np.array(s["confusion"]["matrix"]).sum() == 5


def test_output_paths_sit_beside_the_h5ad(tmp_path) -> None:
    p = output_paths(tmp_path / "q.h5ad")
    assert p["labels_csv"].name == "q_labels.csv" and p["joint_map_png"].name == "q_joint_map.png"
    assert p["report"].name == "q_annotate.json"
