"""Mean/SD over repeats and the paired difference with its t-interval (app.engine.stats)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from app.engine.stats import paired_difference, spread


def test_identical_predictors_give_zero_difference() -> None:
    r = [0.51, 0.48, 0.55, 0.50, 0.47]
    d = paired_difference(r, list(r))
    assert d.mean == 0.0 and d.sd == 0.0 and d.low == 0.0 and d.high == 0.0 and d.n == 5
    assert not d.distinguishable
    assert "not distinguishable from" in d.verdict("A", "B")


def test_dominated_predictor_interval_below_zero() -> None:
    rng = np.random.default_rng(0)
    b = rng.uniform(0.4, 0.6, 5)  # large spread between repeats ...
    a = b - 0.05 + rng.normal(0, 0.005, 5)  # ... but A is always ~0.05 below B on the same split
    d = paired_difference(a, b)
    assert d.high is not None and d.high < 0
    assert d.distinguishable
    assert d.verdict("Deep", "GBLUP").startswith("Deep is behind GBLUP by 0.04")
    # the unpaired spreads overlap: pairing is what makes the gap visible
    sa, sb = spread(a), spread(b)
    assert sa.sd is not None and sb.sd is not None and abs(sa.mean - sb.mean) < sa.sd + sb.sd
    ahead = paired_difference(b, a)
    assert ahead.low is not None and ahead.low > 0 and "is ahead of" in ahead.verdict("B", "A")


def test_interval_matches_scipy_t_interval() -> None:
    a = np.array([0.52, 0.50, 0.57, 0.49, 0.55])
    b = np.array([0.50, 0.51, 0.52, 0.47, 0.50])
    d = paired_difference(a, b)
    diff = a - b
    lo, hi = sps.t.interval(0.95, len(diff) - 1, loc=diff.mean(), scale=sps.sem(diff))
    assert d.low == pytest.approx(lo) and d.high == pytest.approx(hi)
    assert d.half_width == pytest.approx((hi - lo) / 2)
    assert d.sd == pytest.approx(diff.std(ddof=1))


def test_one_repeat_and_missing_values() -> None:
    one = paired_difference([0.5], [0.4])
    assert one.mean == pytest.approx(0.1) and one.low is None and one.half_width is None
    assert "no interval" in one.verdict("A", "B")
    d = paired_difference([0.5, math.nan, 0.6, 0.7], [0.4, 0.5, 0.5, 0.65])
    assert d.n == 3  # the repeat where A failed is dropped from both sides
    assert paired_difference([], []).mean is None
    with pytest.raises(ValueError, match="same length"):
        paired_difference([1.0, 2.0], [1.0])
    s = spread([0.5, math.inf, 0.7])
    assert s.n == 2 and s.mean == pytest.approx(0.6) and s.sd == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert spread([0.5]).sd is None and spread([0.5]).text() == "0.500"
    assert set(d.to_dict()) >= {"mean", "sd", "n", "low", "high", "half_width", "distinguishable"}
