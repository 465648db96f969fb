"""The contract every genomic-prediction model meets, so cross-validation treats GBLUP and the CNNs alike.

A model is fitted on training lines only (``fit_*`` functions return a ``FittedModel``). Whatever it
learns from phenotypes (z-scoring of y, early stopping on an inner validation split, tuning) comes from
the training lines it was given; the CV runner never shows it a test fold's phenotypes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from app.data.genotype import GenotypeMatrix
from app.engine.reporter import Reporter

MODEL_NAMES = ("gblup", "dnngp", "deepgs", "dlgwas")
DEEP_MODELS = ("dnngp", "deepgs", "dlgwas")


@dataclass
class FitNotes:
    """What a fit wants the user to know (collapse to a constant, early-stopping epoch, ...)."""

    warnings: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


class FittedModel(Protocol):
    """A model trained on some lines, ready to predict others (on the phenotype's original scale)."""

    name: str
    notes: FitNotes

    def predict(self, geno: GenotypeMatrix) -> np.ndarray:
        """Predicted values, shape (n_samples,) or (n_samples, n_traits), on the original trait scale."""
        ...

    def importance(self) -> np.ndarray | None:
        """One non-negative score per marker of the training genotypes (saliency, |marker effect|) or None."""
        ...

    def save(self, folder: str | Path) -> None:
        """Write the model to ``folder`` (safetensors + JSON; no pickles)."""
        ...


class FitFn(Protocol):
    """``fit(train, y, *, params, seed, device, reporter, all_geno) -> FittedModel``.

    ``train``: genotypes of the training lines; ``y``: their phenotypes (n,) or (n, t), NaN-free;
    ``params``: model hyper-parameters (missing keys take the model's defaults); ``all_geno``: every
    genotyped line (phenotypes unknown), for transductive PCA (DNNGP's original behaviour) or None.
    """

    def __call__(self, train: GenotypeMatrix, y: np.ndarray, *, params: dict[str, Any] | None = None,
                 seed: int = 0, device: str = "cpu", reporter: Reporter | None = None,
                 all_geno: GenotypeMatrix | None = None) -> FittedModel: ...
