"""Typed results of the engine jobs: what each job returns, and what its metrics.json / result.json hold.

Each result is a dataclass whose fields are the keys a face may read (the window, the CLI, ``runs show``);
``to_dict()`` is its JSON form (through ``app.data.jsonsafe.json_safe``: the one JSON-safety function) and
``from_dict(d)`` reads it back from a file or from the job process. A key a job writes that is not (yet) a
field travels in ``extra``, so a job may report more without breaking readers; a face that wants to rely on
a key makes it a field here.

A result also reads like the dict it serialises to (``res["test"]``, ``res.get("cancelled")``, ``"x" in res``)
so code written against the JSON files works unchanged on the object.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from app.data.jsonsafe import json_safe

R = TypeVar("R", bound="JobResult")


@dataclass(eq=False)
class JobResult(Mapping[str, Any]):
    """Base of the job results: ``cancelled`` (a stop request ended the run; a checkpoint is kept),
    ``run_dir``, ``seconds`` and ``extra`` (keys the job wrote that are not fields)."""

    cancelled: bool = False
    run_dir: str | None = None
    seconds: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls: type[R], values: Mapping[str, Any] | None) -> R:
        """A result from its JSON form (unknown keys go to ``extra``)."""
        values = dict(values or {})
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: values.pop(k) for k in list(values) if k in names}
        extra = {**dict(values.pop("extra", {}) or {}), **values}
        return cls(**known, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: every field (``extra`` flattened in), JSON-safe."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        return json_safe({**self.extra, **out})

    # -- read like the JSON ------------------------------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        if key != "extra" and key in self._names():
            return getattr(self, key)
        return self.extra[key]

    def __iter__(self) -> Iterator[str]:
        yield from self._names()
        yield from (k for k in self.extra if k not in self._names())

    def __len__(self) -> int:
        return len(set(self._names()) | set(self.extra))

    def _names(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self) if f.name != "extra"]


@dataclass(eq=False)
class FinetuneResult(JobResult):
    """``celllm.finetune``: CellLM and the baseline scored on the same test cells (``metrics.json``)."""

    test: dict[str, Any] = field(default_factory=dict)  # accuracy, macro_f1, per_class_f1, confusion
    baseline: dict[str, Any] = field(default_factory=dict)
    classes: list[str] = field(default_factory=list)
    n_train: int = 0
    n_val: int = 0
    n_test: int = 0
    test_only_classes: list[str] = field(default_factory=list)
    small_classes: list[str] = field(default_factory=list)
    label_key: str | None = None
    notes: list[str] = field(default_factory=list)
    best_epoch: int | None = None
    best_val_macro_f1: float | None = None
    epochs_run: int = 0
    epochs_done: int | None = None  # a cancelled run: epochs finished before the stop
    history: list[dict[str, Any]] = field(default_factory=list)
    gene_match_rate: float | None = None
    max_len: int | None = None
    freeze: str | None = None
    lr: float | None = None
    init: str | None = None
    seed: int | None = None
    device: str | None = None


@dataclass(eq=False)
class EvaluateResult(JobResult):
    """``celllm.evaluate``: CellLM (and scratch) beside the baseline over repeated splits: means, SDs and
    paired intervals per metric, one row per run in ``rows``, a plain-words verdict per metric."""

    repeats: int = 0
    seed: int = 0
    methods: list[str] = field(default_factory=list)
    init: str | None = None
    n_cells: int = 0
    classes: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    verdicts: dict[str, str] = field(default_factory=dict)
    label_efficiency: list[dict[str, Any]] | None = None


@dataclass(eq=False)
class PretrainResult(JobResult):
    """``celllm.pretrain``: where the model went and what it saw."""

    model_dir: str | None = None
    steps: int = 0
    step: int | None = None  # a cancelled run: steps done
    checkpoint: str | None = None
    epochs: float | None = None
    n_cells: int = 0
    vocab_size: int = 0
    chunk_size: int | None = None
    batch_size: int | None = None
    device: str | None = None
    gene_match: list[dict[str, Any]] = field(default_factory=list)
    final: dict[str, Any] = field(default_factory=dict)


@dataclass(eq=False)
class EmbedResult(JobResult):
    """``celllm.embed``: the written AnnData (and the embedding as .npy for the window)."""

    out: str | None = None
    n_cells: int = 0
    dim: int = 0
    gene_match_rate: float | None = None
    has_labels: bool = False
    embedding_npy: str | None = None


@dataclass(eq=False)
class AnnotateResult(JobResult):
    """``celllm.annotate``: labels of a new dataset, counts, and transfer scores when it has labels."""

    model: str | None = None
    query: str | None = None
    classes: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    n_cells: int = 0
    min_confidence: float | None = None
    scores: dict[str, Any] | None = None
    baseline: dict[str, Any] | None = None


@dataclass(eq=False)
class GPCVResult(JobResult):
    """``gp.cv``: every model on the same folds. ``folds`` holds one row per model x repeat x fold (model,
    repeat, fold, pearson, spearman, rmse, ...); ``models`` the per-model summaries (pearson_mean, ...)."""

    trait: str | None = None
    geno: str | None = None
    pheno: str | None = None
    n_lines: int = 0
    n_markers: int = 0
    coding: str | None = None
    n_folds: int = 0
    repeats: int = 0
    seed: int = 0
    group: str | None = None
    n_groups: int | None = None
    device: str | None = None
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    folds: list[dict[str, Any]] = field(default_factory=list)
    join: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    metrics_json: str | None = None
    predictions_csv: str | None = None
    importance_csv: str | None = None


@dataclass(eq=False)
class GPTrainResult(JobResult):
    """``gp.train``: the final models and the GEBVs of every genotyped line."""

    trait: str | None = None
    models: list[str] = field(default_factory=list)
    coding: str | None = None
    n_train: int = 0
    n_markers: int = 0
    n_genotyped: int = 0
    n_unphenotyped: int = 0
    seed: int = 0
    fits: dict[str, dict[str, Any]] = field(default_factory=dict)
    join: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    models_dir: str | None = None
    gebv_csv: str | None = None
    gebv_unphenotyped_csv: str | None = None
    importance_csv: str | None = None


@dataclass(eq=False)
class GPPredictResult(JobResult):
    """``gp.predict``: predictions of new lines."""

    predictions_csv: str | None = None
    n_lines: int = 0
    models: list[str] = field(default_factory=list)
    trait: str | None = None
    train_run: str | None = None
    align: dict[str, Any] = field(default_factory=dict)


__all__ = ["AnnotateResult", "EmbedResult", "EvaluateResult", "FinetuneResult", "GPCVResult", "GPPredictResult",
           "GPTrainResult", "JobResult", "PretrainResult"]
