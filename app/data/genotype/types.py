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
        calls: int8 array (n_samples, n_markers) of additive dosages 0/1/2 = copies of ``markers.alt``
            (PLINK: A1; VCF: ALT; HapMap: the second allele of the ``alleles`` column), ``MISSING`` (-9)
            for a missing call. Binary presence/absence markers (e.g. DArT) are kept 0/1 as given, with
            ``coding == "binary"``.
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

    @property
    def missing_rate(self) -> float:
        """Fraction of calls that are ``MISSING``."""
        return float((self.calls == MISSING).mean()) if self.calls.size else 0.0

    def subset(self, samples: list[str] | None = None, markers: np.ndarray | None = None) -> GenotypeMatrix:
        """A copy restricted to the given sample IDs (in that order) and/or a boolean/int marker index."""
        rows = np.arange(self.n_samples)
        if samples is not None:
            pos = {s: i for i, s in enumerate(self.samples)}
            unknown = [s for s in samples if s not in pos]
            if unknown:
                from app.data.errors import DataError

                raise DataError(
                    f"{len(unknown)} sample ID(s) are not in the genotypes, e.g. {', '.join(map(str, unknown[:3]))}",
                    self.source or None,
                    "use IDs from the genotype file (see join_phenotypes for the overlap)",
                )
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
