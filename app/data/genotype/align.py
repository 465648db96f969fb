"""Put new lines' genotypes on a trained model's markers (for prediction of new lines)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from app.data.errors import DataError
from app.data.genotype.types import MISSING, GenotypeMatrix


@dataclass
class AlignReport:
    """How a genotype matrix was matched to a reference marker list."""

    n_reference: int
    n_matched: int
    n_absent: int
    n_flipped: int
    absent_first: list[str] = field(default_factory=list)

    @property
    def match_rate(self) -> float:
        return self.n_matched / max(self.n_reference, 1)

    def to_text(self) -> str:
        s = f"{self.n_matched} of {self.n_reference} model markers found ({100 * self.match_rate:.1f} %)"
        if self.n_absent:
            s += f"; {self.n_absent} absent (set missing, e.g. {', '.join(self.absent_first)})"
        if self.n_flipped:
            s += f"; {self.n_flipped} with swapped alleles recoded (2 - dosage)"
        return s


def align_markers(
    geno: GenotypeMatrix,
    marker_ids: list[str],
    ref: list[str] | None = None,
    alt: list[str] | None = None,
    *,
    min_match: float = 0.5,
) -> tuple[GenotypeMatrix, AlignReport]:
    """Reorder ``geno``'s markers to ``marker_ids`` (e.g. those a model was trained on).

    Markers absent from ``geno`` become all-MISSING columns (mean-imputed later). When ``ref``/``alt`` of
    the reference are given and a marker's alleles are swapped in ``geno`` (its alt is the reference's ref
    and vice versa), its dosages are flipped (2 - x) so they count the same allele as in training.

    Raises:
        DataError: fewer than ``min_match`` of the reference markers are found (wrong marker set / IDs).
    """
    idx = pd.Index([str(x) for x in geno.markers["id"]])
    if not idx.is_unique:
        raise DataError(
            "marker IDs in the genotype file are not unique", geno.source or None, "make the marker IDs unique"
        )
    want = [str(x) for x in marker_ids]
    pos = idx.get_indexer(want)
    found = pos >= 0
    n_found = int(found.sum())
    if n_found < min_match * len(want):
        raise DataError(
            f"only {n_found} of the {len(want)} model markers are in this genotype file "
            f"(e.g. model marker {want[0]!r}, file marker {idx[0] if len(idx) else '-'!r})",
            geno.source or None,
            "predict with genotypes on the same marker panel (same marker IDs) as the training data",
        )
    calls = np.full((geno.n_samples, len(want)), MISSING, dtype=np.int8)
    calls[:, found] = geno.calls[:, pos[found]]
    n_flipped = 0
    if ref is not None and alt is not None and geno.coding != "binary":
        g_ref = geno.markers["ref"].astype(str).to_numpy()
        g_alt = geno.markers["alt"].astype(str).to_numpy()
        r = np.asarray([str(x) for x in ref])
        a = np.asarray([str(x) for x in alt])
        cols = np.flatnonzero(found)
        src = pos[found]
        swap = (g_alt[src] == r[cols]) & (g_ref[src] == a[cols]) & (r[cols] != a[cols]) & (r[cols] != "")
        for j in cols[swap]:
            c = calls[:, j]
            calls[:, j] = np.where(c == MISSING, MISSING, 2 - c)
        n_flipped = int(swap.sum())
    markers = pd.DataFrame({"id": want})
    for col in ("chrom", "pos", "ref", "alt"):
        vals = geno.markers[col].to_numpy()
        fill = -1 if col == "pos" else ""
        out = np.full(len(want), fill, dtype=vals.dtype if col == "pos" else object)
        out[found] = vals[pos[found]]
        markers[col] = out
    if ref is not None and alt is not None:
        markers["ref"] = [str(x) for x in ref]
        markers["alt"] = [str(x) for x in alt]
    absent = [w for w, f in zip(want, found, strict=True) if not f]
    rep = AlignReport(
        n_reference=len(want), n_matched=n_found, n_absent=len(absent), n_flipped=n_flipped, absent_first=absent[:5]
    )
    out_geno = GenotypeMatrix(
        calls=calls,
        samples=list(geno.samples),
        markers=markers,
        coding=geno.coding,
        source=geno.source,
        notes=[*geno.notes, "aligned to model markers: " + rep.to_text()],
    )
    return out_geno, rep
