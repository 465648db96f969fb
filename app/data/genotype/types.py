"""The one in-memory genotype type every genotype reader returns and every model reads."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

MISSING: int = -9
"""Code for a missing call in ``GenotypeMatrix.calls``."""


@dataclass
class GenotypeMatrix:
    """Samples x markers genotype calls.

    Attributes:
        calls: int8 array (n_samples, n_markers) of additive dosages 0/1/2 (count of the *alternative*
            allele, i.e. the second allele of ``markers.alleles``), ``MISSING`` (-9) for a missing call.
            Binary presence/absence markers (e.g. DArT) are stored as 0/2 only when ``ploidy_coding``
            is "binary"; see ``coding``.
        samples: sample IDs, length n_samples (unique strings).
        markers: DataFrame indexed 0..m-1 with columns ``id``, ``chrom`` (str), ``pos`` (int, -1 when
            unknown), ``ref``, ``alt`` (str, "" when unknown).
        coding: "dosage" (0/1/2) or "binary" (values 0/1 as given, e.g. DArT presence/absence).
        source: path the data came from, for messages.
        notes: what a reader noticed and did (e.g. "recoded -1/0/1 to 0/1/2"), for the inspect report.
    """

    calls: np.ndarray
    samples: list[str]
    markers: pd.DataFrame
    coding: str = "dosage"
    source: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def n_samples(self) -> int:
        return int(self.calls.shape[0])

    @property
    def n_markers(self) -> int:
        return int(self.calls.shape[1])

    def subset(self, samples: list[str] | None = None, markers: np.ndarray | None = None) -> GenotypeMatrix:
        """A copy restricted to the given sample IDs (in that order) and/or a boolean/int marker index."""
        rows = np.arange(self.n_samples)
        if samples is not None:
            pos = {s: i for i, s in enumerate(self.samples)}
            rows = np.array([pos[s] for s in samples], dtype=int)
        cols = np.arange(self.n_markers) if markers is None else np.asarray(markers)
        if cols.dtype == bool:
            cols = np.flatnonzero(cols)
        return GenotypeMatrix(
            calls=self.calls[np.ix_(rows, cols)],
            samples=[self.samples[i] for i in rows],
            markers=self.markers.iloc[cols].reset_index(drop=True),
            coding=self.coding,
            source=self.source,
            notes=list(self.notes),
        )
