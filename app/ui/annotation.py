"""The window's "Annotate another dataset" step without Qt: what to run, and the result under a threshold.

``Annotation`` is an evented model (psygnal): the dialog binds its slider, counts table, scores line and
joint map to it. ``job_request`` builds the annotate job (the same config ``python -m app celllm annotate``
passes); ``load`` reads what the job wrote (the annotated query .h5ad and the joint map CSV); moving the
threshold recomputes the Unassigned cells, the per-class counts and the scores at once
(``app.engine.celllm.annotate``), and ``export`` writes every file again at the chosen threshold.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from psygnal import Signal

from app.engine.celllm.annotate import (
    UNASSIGNED,
    AnnotateConfig,
    apply_threshold,
    class_counts,
    export_annotation,
    score_transfer,
)

ANNOTATE_TARGET = "app.engine.celllm.annotate:annotate"


class Annotation:
    """One annotation of a query dataset with a fine-tuned model.

    Signals: ``loaded()`` (a result arrived), ``threshold_changed(float)``.
    """

    loaded = Signal()
    threshold_changed = Signal(float)

    def __init__(self, model: str | None = None) -> None:
        self.model = model  # fine-tune run folder (or its model folder)
        self.query: str | None = None
        self.labels_table: str | None = None  # the query's own labels table (optional)
        self.label_key: str | None = None
        self.threshold = float(AnnotateConfig.defaults()["min_confidence"])
        self.report: dict[str, Any] | None = None
        self.adata: Any = None  # the annotated query
        self.joint: pd.DataFrame | None = None  # cell, dataset, label, predicted, confidence, x, y
        self.out: str | None = None

    # -- the job -----------------------------------------------------------------------------------
    def check_ready(self) -> str | None:
        """What is missing before the job can start (a sentence), or None."""
        if not self.model:
            return "Choose a fine-tuned model (a fine-tune run folder)."
        if not self.query:
            return "Choose the dataset to annotate."
        return None

    def job_config(self, run_dir: str, device: str = "auto") -> dict[str, Any]:
        """The annotate job's config (what the CLI twin passes), writing into ``run_dir``."""
        cfg = {"model": self.model, "data": self.query, "out": str(Path(run_dir) / "annotated.h5ad"),
               "labels": self.labels_table, "label_key": self.label_key,
               "min_confidence": self.threshold, "device": device}
        return {k: v for k, v in cfg.items() if v is not None}

    def load(self, result: dict[str, Any]) -> None:
        """Read what the job wrote (its result is the report) and announce it."""
        import anndata as ad

        files = result.get("files") or {}
        self.report = dict(result)
        self.out = files.get("h5ad")
        self.adata = ad.read_h5ad(files["h5ad"])
        jm = files.get("joint_map_csv")
        self.joint = pd.read_csv(jm) if jm and Path(jm).is_file() else None
        self.threshold = float(result.get("min_confidence", self.threshold))
        self.loaded.emit()

    # -- the threshold -----------------------------------------------------------------------------
    @property
    def classes(self) -> list[str]:
        return list((self.report or {}).get("classes", []))

    def set_threshold(self, value: float) -> None:
        """Move the confidence threshold (0..1); views recompute from ``labels()``."""
        value = float(min(max(value, 0.0), 1.0))
        if value != self.threshold:
            self.threshold = value
            self.threshold_changed.emit(value)

    def labels(self) -> np.ndarray:
        """Per query cell: the predicted class, or Unassigned under the threshold."""
        if self.adata is None:
            return np.zeros(0, dtype=object)
        return apply_threshold(self.adata.obs["celllm_best_label"], self.adata.obs["celllm_confidence"],
                               self.threshold)

    def counts(self) -> dict[str, int]:
        """Cells per class at the threshold, then Unassigned."""
        return class_counts(self.labels(), self.classes)

    def true_labels(self) -> np.ndarray | None:
        """The query's own labels, when it has a label column."""
        key = (self.report or {}).get("label_key")
        if self.adata is None or not key or key not in self.adata.obs.columns:
            return None
        return self.adata.obs[key].to_numpy()

    def scores(self) -> dict[str, Any] | None:
        """Accuracy / macro-F1 / assigned fraction against the query's labels at the threshold."""
        true = self.true_labels()
        return score_transfer(true, self.labels(), self.classes) if true is not None else None

    def map_values(self, colour_by: str) -> np.ndarray:
        """Joint-map colours: "dataset", "label" (reference: its own; query: predicted at the threshold) or
        "confidence"."""
        if self.joint is None:
            return np.zeros(0)
        if colour_by == "confidence":
            return self.joint["confidence"].to_numpy(dtype=np.float32)
        if colour_by == "label":
            vals = self.joint["label"].astype(object).to_numpy().copy()
            is_q = (self.joint["dataset"] == "query").to_numpy()
            vals[is_q] = self.labels()
            return vals
        return self.joint["dataset"].astype(str).to_numpy()

    def n_unassigned(self) -> int:
        return int((self.labels() == UNASSIGNED).sum())

    # -- export ------------------------------------------------------------------------------------
    def export(self, out: str | Path) -> dict[str, str]:
        """Write the annotated query at the current threshold (h5ad, labels CSV, joint map, report)."""
        if self.adata is None or self.report is None:
            raise ValueError("annotate a dataset first")
        report = {k: v for k, v in self.report.items() if k not in ("files", "seconds")}
        return export_annotation(self.adata, self.joint, report, out, self.threshold,
                                 true_labels=self.true_labels())


__all__ = ["ANNOTATE_TARGET", "Annotation"]
