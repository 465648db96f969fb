"""Genotype QC (call rate, sample missingness, MAF) and the encodings the models read."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from app.data.errors import DataError
from app.data.genotype.types import MISSING, GenotypeMatrix


@dataclass
class QCReport:
    """What :func:`run_qc` did, step by step.

    Attributes:
        steps: one dict per step: ``name``, ``unit`` ("markers"/"samples"), ``threshold``, ``before``,
            ``after``, ``removed``.
        marker_call_rate: per-marker call rate over all input samples, BEFORE filtering (for histograms).
        maf: per-marker minor-allele frequency over all input samples, BEFORE filtering.
        sample_missing: per-sample fraction of missing calls BEFORE filtering.
        n_missing_after: missing calls left after filtering (mean-imputed by :func:`additive`).
        notes: anything worth saying in words.
    """

    steps: list[dict] = field(default_factory=list)
    marker_call_rate: np.ndarray = field(default_factory=lambda: np.zeros(0))
    maf: np.ndarray = field(default_factory=lambda: np.zeros(0))
    sample_missing: np.ndarray = field(default_factory=lambda: np.zeros(0))
    n_missing_after: int = 0
    missing_rate_after: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-friendly summary (no per-marker arrays)."""
        return {
            "steps": [dict(s) for s in self.steps],
            "n_missing_after": self.n_missing_after,
            "missing_rate_after": self.missing_rate_after,
            "notes": list(self.notes),
        }

    def to_text(self) -> str:
        """Each QC step in plain words."""
        lines = []
        for s in self.steps:
            lines.append(
                f"{s['name']} ({s['threshold']}): {s['before']} -> {s['after']} {s['unit']} ({s['removed']} removed)"
            )
        lines.append(
            f"Missing calls left: {self.n_missing_after} ({100 * self.missing_rate_after:.2f} %), "
            "mean-imputed per marker for the additive coding, a 4th class in one-hot"
        )
        lines.extend(self.notes)
        return "\n".join(lines)


def allele_freq(calls: np.ndarray, coding: str = "dosage") -> tuple[np.ndarray, np.ndarray]:
    """Per-marker (frequency of the counted allele, call rate); NaN frequency when no call."""
    called = calls != MISSING
    n_called = called.sum(axis=0)
    total = np.where(called, calls, 0).sum(axis=0, dtype=np.int64)
    denom = n_called * (1 if coding == "binary" else 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        freq = np.where(n_called > 0, total / np.maximum(denom, 1), np.nan)
    rate = n_called / max(calls.shape[0], 1)
    return freq.astype(np.float64), rate.astype(np.float64)


def check_informative(geno: GenotypeMatrix, what: str = "the genotyped lines") -> None:
    """Refuse genotypes that cannot predict anything: every call missing, or every marker the same in every
    line (monomorphic). Either would give a model with r = 0 reported as a result.

    Raises:
        DataError: naming the file, what was found, and what to do.
    """
    calls = geno.calls
    src = geno.source or None
    if calls.size == 0 or not (calls != MISSING).any():
        raise DataError(f"every genotype call of {what} is missing ({geno.n_samples:,} lines x "
                        f"{geno.n_markers:,} markers): nothing to learn from", src,
                        "Check the file's missing-value code (NA, -9, ./.) and that it holds called genotypes; "
                        "impute missing calls first (e.g. with Beagle).")
    called = calls != MISSING
    hi = np.where(called, calls, np.int8(-128)).max(axis=0)
    lo = np.where(called, calls, np.int8(127)).min(axis=0)
    if not (hi > lo).any():
        raise DataError(f"every marker is monomorphic in {what} (the same genotype in every line, "
                        f"{geno.n_markers:,} markers): the lines cannot be told apart", src,
                        "Use markers that vary between these lines (check the QC thresholds, --max-markers, "
                        "and that the right genotype file was given).")


def run_qc(
    geno: GenotypeMatrix,
    min_call_rate: float = 0.9,
    min_maf: float = 0.01,
    max_sample_missing: float | None = None,
) -> tuple[GenotypeMatrix, QCReport]:
    """Filter markers by call rate, then (optionally) samples by missingness, then markers by MAF.

    Args:
        geno: input genotypes (not modified).
        min_call_rate: keep markers called in at least this fraction of samples (0..1).
        min_maf: keep markers whose minor-allele frequency is at least this (0..0.5); monomorphic markers
            go when it is > 0. For binary (presence/absence) markers the frequency of 1 is used.
        max_sample_missing: drop samples missing more than this fraction of the markers kept so far.

    Returns:
        (filtered genotypes, report). Missing calls are left as MISSING (impute with :func:`additive`).

    Raises:
        DataError: thresholds out of range, or every marker/sample removed.
    """
    if not 0.0 <= min_call_rate <= 1.0:
        raise DataError(f"min_call_rate must be in 0..1, got {min_call_rate}", None, "e.g. 0.9")
    if not 0.0 <= min_maf <= 0.5:
        raise DataError(f"min_maf must be in 0..0.5, got {min_maf}", None, "e.g. 0.01 or 0.05")
    if max_sample_missing is not None and not 0.0 <= max_sample_missing <= 1.0:
        raise DataError(f"max_sample_missing must be in 0..1, got {max_sample_missing}", None, "e.g. 0.2")
    calls = geno.calls
    freq, rate = allele_freq(calls, geno.coding)
    maf_all = np.minimum(freq, 1 - freq)
    sample_missing = (calls == MISSING).mean(axis=1) if calls.size else np.zeros(calls.shape[0])
    report = QCReport(marker_call_rate=rate, maf=np.nan_to_num(maf_all, nan=0.0), sample_missing=sample_missing)
    m0 = geno.n_markers
    keep_m = rate >= min_call_rate - 1e-12
    report.steps.append(
        {
            "name": "marker call rate",
            "unit": "markers",
            "threshold": f">= {min_call_rate:g}",
            "before": m0,
            "after": int(keep_m.sum()),
            "removed": int(m0 - keep_m.sum()),
        }
    )
    keep_s = np.ones(geno.n_samples, dtype=bool)
    if max_sample_missing is not None:
        sub = calls[:, keep_m]
        miss = (sub == MISSING).mean(axis=1) if sub.shape[1] else np.zeros(sub.shape[0])
        keep_s = miss <= max_sample_missing + 1e-12
        report.steps.append(
            {
                "name": "sample missingness",
                "unit": "samples",
                "threshold": f"<= {max_sample_missing:g}",
                "before": geno.n_samples,
                "after": int(keep_s.sum()),
                "removed": int((~keep_s).sum()),
            }
        )
        if not keep_s.any():
            raise DataError(
                "sample-missingness filter removed every sample",
                geno.source or None,
                "raise max_sample_missing or check the genotype file",
            )
    sub = calls[np.ix_(keep_s, keep_m)] if not keep_s.all() else calls[:, keep_m]
    f2, _ = allele_freq(sub, geno.coding)
    maf2 = np.nan_to_num(np.minimum(f2, 1 - f2), nan=0.0)
    keep_maf = maf2 >= min_maf - 1e-12 if min_maf > 0 else np.ones(len(maf2), dtype=bool)
    if min_maf > 0:
        keep_maf &= maf2 > 0
    before = int(keep_m.sum())
    idx = np.flatnonzero(keep_m)[keep_maf]
    report.steps.append(
        {
            "name": "minor allele frequency",
            "unit": "markers",
            "threshold": f">= {min_maf:g}",
            "before": before,
            "after": len(idx),
            "removed": before - len(idx),
        }
    )
    if len(idx) == 0:
        raise DataError(
            "QC removed every marker", geno.source or None, "lower min_call_rate / min_maf, or check the genotype file"
        )
    samples = [s for s, k in zip(geno.samples, keep_s, strict=True) if k]
    out = geno.subset(samples=samples if not keep_s.all() else None, markers=idx)
    n_miss = int((out.calls == MISSING).sum())
    report.n_missing_after = n_miss
    report.missing_rate_after = n_miss / max(out.calls.size, 1)
    out.notes.append("QC: " + "; ".join(f"{s['name']} removed {s['removed']} {s['unit']}" for s in report.steps))
    return out, report


def _calls_of(geno_or_calls: GenotypeMatrix | np.ndarray) -> tuple[np.ndarray, str]:
    if isinstance(geno_or_calls, GenotypeMatrix):
        return geno_or_calls.calls, geno_or_calls.coding
    calls = np.asarray(geno_or_calls)
    if calls.ndim != 2:
        raise DataError(f"genotype calls must be a 2-D samples x markers array, got shape {calls.shape}")
    return calls, "dosage"


def _check_codes(calls: np.ndarray) -> None:
    ok = (calls == MISSING) | ((calls >= 0) & (calls <= 2))
    if not ok.all():
        bad = np.unique(calls[~ok])[:5]
        raise DataError(
            f"genotype calls hold codes other than 0/1/2 and {MISSING}: {bad.tolist()}",
            None,
            "read the data with read_genotypes, which recodes it",
        )


def marker_means(geno_or_calls: GenotypeMatrix | np.ndarray) -> np.ndarray:
    """Per-marker mean of the called values (float32, 0/1/2 scale); the mid value (1, or 0.5 for binary
    markers) where a marker has no call. Fit on training lines and pass to :func:`additive` for new lines."""
    calls, coding = _calls_of(geno_or_calls)
    _check_codes(calls)
    miss = calls == MISSING
    x = np.where(miss, 0, calls).astype(np.float64)
    n_called = (~miss).sum(axis=0)
    mid = 0.5 if coding == "binary" else 1.0
    return np.where(n_called > 0, x.sum(axis=0) / np.maximum(n_called, 1), mid).astype(np.float32)


def additive(
    geno_or_calls: GenotypeMatrix | np.ndarray, *, signed: bool = False, means: np.ndarray | None = None
) -> np.ndarray:
    """Additive coding (n, m) float32: 0/1/2 (0/1 for binary markers), missing calls mean-imputed per marker.

    Args:
        geno_or_calls: a GenotypeMatrix or an int8 calls array (MISSING = -9).
        signed: give -1/0/1 instead (x - 1; binary markers 2x - 1, i.e. -1/1), rrBLUP's convention.
        means: per-marker values to impute with (e.g. :func:`marker_means` of the training lines, so test
            lines do not shape the imputation); default: the means of these lines. A marker with no call
            at all gets its mid value.
    """
    calls, coding = _calls_of(geno_or_calls)
    _check_codes(calls)
    x = calls.astype(np.float32)
    miss = calls == MISSING
    if miss.any():
        if means is None:
            means = marker_means(geno_or_calls)
        means = np.asarray(means, dtype=np.float32)
        if means.shape != (calls.shape[1],):
            raise DataError(f"means must have one value per marker ({calls.shape[1]}), got shape {means.shape}")
        rows, cols = np.nonzero(miss)
        x[rows, cols] = means[cols]
    if signed:
        x = x * 2 - 1 if coding == "binary" else x - 1
    return x


def one_hot(geno_or_calls: GenotypeMatrix | np.ndarray) -> np.ndarray:
    """One-hot coding (n, m, 4) float32: channels AA (0), Aa (1), aa (2), missing (3), as DLGWAS.

    For binary presence/absence markers (``coding="binary"``), 0 -> AA and 1 -> aa (inbred homozygotes).
    """
    calls, coding = _calls_of(geno_or_calls)
    _check_codes(calls)
    cls = np.where(calls == MISSING, 3, calls).astype(np.int8)
    if coding == "binary":
        cls = np.where(cls == 1, 2, cls).astype(np.int8)
    out = np.empty((*calls.shape, 4), dtype=np.float32)
    for c in range(4):
        out[..., c] = cls == c
    return out
