"""Summaries over repeated evaluations: mean and SD of a metric, and the paired difference of two methods
with a 95 % t-interval, plus the sentence a scientist reads ("DeepGS is ahead of GBLUP by 0.04 ± 0.03").

One home for this arithmetic, used by genomic-prediction CV (deep model minus GBLUP) and by CellLM
fine-tuning (CellLM minus baseline). The unit is one *repeat* (one reshuffle of the folds, one seeded split):
both methods are scored on the same lines in each repeat, so the difference is taken repeat by repeat
(paired) and its spread is far smaller than either method's own spread.

Caveat kept in the docstring rather than hidden: repeats reuse the same lines, so they are not independent
samples of the population and a t-interval over repeats is somewhat optimistic (Nadeau & Bengio 2003, who
propose a variance correction). It still answers the question a single split cannot: is the gap larger than
the noise of the splitting?

Usage::

    from app.engine.stats import paired_difference, spread
    spread([0.51, 0.53, 0.50])                       # Spread(mean=0.513, sd=0.015, n=3)
    d = paired_difference(deep_r, gblup_r)           # per-repeat values, same order
    d.verdict("DeepGS", "GBLUP")                     # 'DeepGS is ahead of GBLUP by 0.021 ± 0.015 (95 % CI ...)'
    d.to_dict()                                      # JSON-ready for metrics.json
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

CONFIDENCE = 0.95


def _finite(values: Sequence[float] | np.ndarray) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    return v[np.isfinite(v)]


@dataclass(frozen=True)
class Spread:
    """Mean and sample SD (ddof 1; None with one value) of a metric over ``n`` repeats."""

    mean: float | None
    sd: float | None
    n: int

    def to_dict(self) -> dict[str, float | int | None]:
        """JSON-ready: ``{"mean", "sd", "n"}``."""
        return asdict(self)

    def text(self, digits: int = 3) -> str:
        """``"0.513 ± 0.015"`` (mean ± SD), ``"0.513"`` with one value, ``"-"`` with none."""
        if self.mean is None:
            return "-"
        if self.sd is None:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.sd:.{digits}f}"


def spread(values: Sequence[float] | np.ndarray) -> Spread:
    """Mean and SD over repeats of one metric; non-finite values (a failed repeat) are left out."""
    v = _finite(values)
    return Spread(float(v.mean()) if len(v) else None, float(v.std(ddof=1)) if len(v) > 1 else None, len(v))


@dataclass(frozen=True)
class PairedDifference:
    """A minus B, repeat by repeat: mean, SD and a two-sided t-interval of the mean difference.

    ``half_width`` is ``t_{(1+confidence)/2, n-1} * sd / sqrt(n)``; ``low``/``high`` are None with fewer than
    2 paired repeats (no interval can be given). ``n`` counts repeats where both A and B are finite.
    """

    mean: float | None
    sd: float | None
    n: int
    low: float | None
    high: float | None
    half_width: float | None
    confidence: float = CONFIDENCE

    @property
    def distinguishable(self) -> bool:
        """True when the interval excludes zero (A is ahead or behind), False otherwise (or no interval)."""
        return self.low is not None and self.high is not None and (self.low > 0 or self.high < 0)

    def to_dict(self) -> dict[str, float | int | bool | None]:
        """JSON-ready: mean, sd, n, low, high, half_width, confidence, distinguishable."""
        return {**asdict(self), "distinguishable": self.distinguishable}

    def verdict(self, a: str, b: str, digits: int = 3) -> str:
        """The plain-words reading, e.g. ``"DeepGS is ahead of GBLUP by 0.021 ± 0.015"``,
        ``"DNNGP is behind GBLUP by 0.060 ± 0.020"``, ``"DLGWAS is not distinguishable from GBLUP
        (-0.004 ± 0.012)"``; ± is the half-width of the 95 % interval over ``n`` repeats."""
        if self.mean is None:
            return f"{a} vs {b}: no repeat where both were scored"
        if self.half_width is None:
            return (f"{a} minus {b}: {self.mean:+.{digits}f} on one repeat (no interval: use 3 or more repeats "
                    "to tell a difference from split noise)")
        pm = f"{abs(self.mean):.{digits}f} ± {self.half_width:.{digits}f}"
        tail = f" ({round(self.confidence * 100)} % interval over {self.n} repeats)"
        if self.low is not None and self.low > 0:
            return f"{a} is ahead of {b} by {pm}{tail}"
        if self.high is not None and self.high < 0:
            return f"{a} is behind {b} by {pm}{tail}"
        return f"{a} is not distinguishable from {b} ({self.mean:+.{digits}f} ± {self.half_width:.{digits}f}){tail}"


def paired_difference(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray,
                      confidence: float = CONFIDENCE) -> PairedDifference:
    """A minus B over paired repeats (``a[i]`` and ``b[i]`` scored on the same split), with a t-interval.

    Identical inputs give a zero difference with a zero-width interval; a repeat where either value is
    non-finite is left out of both.

    Raises:
        ValueError: ``a`` and ``b`` differ in length, or ``confidence`` is not in (0, 1).
    """
    from scipy.stats import t as student_t

    av = np.asarray(a, dtype=np.float64).reshape(-1)
    bv = np.asarray(b, dtype=np.float64).reshape(-1)
    if av.shape != bv.shape:
        raise ValueError(f"paired values must have the same length, got {len(av)} and {len(bv)}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    ok = np.isfinite(av) & np.isfinite(bv)
    d = av[ok] - bv[ok]
    n = len(d)
    if n == 0:
        return PairedDifference(None, None, 0, None, None, None, confidence)
    mean = float(d.mean())
    if n == 1:
        return PairedDifference(mean, None, 1, None, None, None, confidence)
    sd = float(d.std(ddof=1))
    half = float(student_t.ppf(0.5 + confidence / 2.0, n - 1)) * sd / math.sqrt(n)
    return PairedDifference(mean, sd, n, mean - half, mean + half, half, confidence)


__all__ = ["CONFIDENCE", "PairedDifference", "Spread", "paired_difference", "spread"]
