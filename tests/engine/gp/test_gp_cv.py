"""CV folds (disjoint, covering, grouped, seeded), metrics incl. DeepGS's meanNDCG by hand, the CV loop."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy.stats import rankdata

from app.data.errors import DataError
from app.data.genotype import GenotypeMatrix
from app.engine.gp.base import FitNotes
from app.engine.gp.cv import ModelSpec, fold_metrics, make_folds, mean_ndcg, run_cv
from app.engine.gp.gblup import fit_gblup
from app.engine.reporter import Cancelled, Reporter


def test_folds_are_disjoint_cover_every_line_and_are_seeded() -> None:
    folds = make_folds(53, folds=5, repeats=3, seed=7)
    assert len(folds) == 15
    for r in range(3):
        mine = [f for f in folds if f.repeat == r]
        tests = np.concatenate([f.test for f in mine])
        assert sorted(tests.tolist()) == list(range(53))  # each line tested exactly once per repeat
        for f in mine:
            assert not set(f.train) & set(f.test)
            assert len(f.train) + len(f.test) == 53
            assert len(f.test) in (10, 11)
    again = make_folds(53, folds=5, repeats=3, seed=7)
    assert all(np.array_equal(a.test, b.test) for a, b in zip(folds, again, strict=True))
    other = make_folds(53, folds=5, repeats=1, seed=8)
    assert not all(np.array_equal(a.test, b.test) for a, b in zip(folds[:5], other, strict=True))
    # repeats reshuffle
    assert not all(np.array_equal(folds[i].test, folds[5 + i].test) for i in range(5))


def test_grouped_folds_never_split_a_group() -> None:
    rng = np.random.default_rng(0)
    groups = np.repeat([f"fam{i}" for i in range(13)], rng.integers(2, 9, 13))
    n = len(groups)
    folds = make_folds(n, folds=4, repeats=2, seed=1, groups=groups)
    for r in range(2):
        mine = [f for f in folds if f.repeat == r]
        assert sorted(np.concatenate([f.test for f in mine]).tolist()) == list(range(n))
        for f in mine:
            assert not set(groups[f.train]) & set(groups[f.test])
    assert [f.test.tolist() for f in folds] == [f.test.tolist() for f in make_folds(n, 4, 2, 1, groups)]
    assert [f.test.tolist() for f in folds[:4]] != [f.test.tolist() for f in make_folds(n, 4, 1, 2, groups)]


def test_fold_errors_are_data_errors() -> None:
    with pytest.raises(DataError, match="at least 2 folds"):
        make_folds(10, folds=1)
    with pytest.raises(DataError, match="cannot be split"):
        make_folds(3, folds=5)
    with pytest.raises(DataError, match="3 groups"):
        make_folds(12, folds=5, groups=list("aaaabbbbcccc"))


def test_pearson_spearman_rmse() -> None:
    rng = np.random.default_rng(2)
    y = rng.normal(size=40)
    p = y + rng.normal(size=40)
    m = fold_metrics(y, p)
    assert math.isclose(m["pearson"], np.corrcoef(y, p)[0, 1], rel_tol=1e-12)
    assert math.isclose(m["spearman"], np.corrcoef(rankdata(y), rankdata(p))[0, 1], rel_tol=1e-12)
    assert math.isclose(m["rmse"], float(np.sqrt(np.mean((y - p) ** 2))), rel_tol=1e-12)
    const = fold_metrics(y, np.full(40, 1.5))
    assert const["pearson"] == 0.0 and const["spearman"] == 0.0


def test_mean_ndcg_hand_computed() -> None:
    # y = [3, 1, 2, 0] rescaled by (v - 1.5) / 3 -> [1/2, -1/6, 1/6, -1/2]; alpha 50 % of 4 lines -> k = 2.
    # by prediction: line 1 (-1/6), line 2 (1/6); ideal: line 0 (1/2), line 2 (1/6); discounts 1, 1/log2(3)
    y = np.array([3.0, 1.0, 2.0, 0.0])
    p = np.array([0.1, 0.9, 0.5, 0.2])
    d2 = 1 / math.log2(3)
    ndcg1 = (-1 / 6) / (1 / 2)
    ndcg2 = (-1 / 6 + d2 / 6) / (1 / 2 + d2 / 6)
    assert math.isclose(mean_ndcg(y, p, 50), (ndcg1 + ndcg2) / 2, rel_tol=1e-12)
    # a perfect ranking scores 1 at every depth, whatever the scale of the prediction
    assert math.isclose(mean_ndcg(y, 100 * y - 7, 50), 1.0)
    assert math.isclose(mean_ndcg(y, -y, 25), (-1 / 2) / (1 / 2))  # k = 1: worst line picked first


def test_mean_ndcg_top_k_rounds_like_r_and_is_at_least_one() -> None:
    y = np.arange(25, dtype=float)  # rescaled: (v - 12) / 24
    p = np.array([*range(24, -1, -1)], dtype=float)  # reversed: the worst ranked first
    p[[24, 0]] = p[[0, 24]]  # ... except the best line is predicted best
    # 10 % of 25 = 2.5 -> 2 (half to even, as R); NDCG@1 = 1, NDCG@2 = (12 + 11 d2 ... ) by hand:
    top = (24 - 12) / 24
    second_pred = (1 - 12) / 24  # the second-highest prediction is line 1
    d2 = 1 / math.log2(3)
    ndcg2 = (top + second_pred * d2) / (top + (23 - 12) / 24 * d2)
    assert math.isclose(mean_ndcg(y, p, 10), (1 + ndcg2) / 2, rel_tol=1e-12)
    # 1 % of 25 lines rounds to 0: k is 1 (the R code would fail)
    assert math.isclose(mean_ndcg(y, p, 1), 1.0)
    assert math.isnan(mean_ndcg(np.ones(5), np.arange(5.0), 10))


def _toy(n: int = 60, m: int = 40, seed: int = 0) -> tuple[GenotypeMatrix, np.ndarray]:
    rng = np.random.default_rng(seed)
    calls = rng.binomial(2, 0.4, size=(n, m)).astype(np.int8)
    y = calls[:, :5].sum(axis=1) + rng.normal(0, 1, n)
    markers = pd.DataFrame({"id": [f"m{j}" for j in range(m)], "chrom": "1", "pos": np.arange(m), "ref": "A",
                            "alt": "C"})
    return GenotypeMatrix(calls, [f"L{i}" for i in range(n)], markers), y


class _MeanModel:
    name = "mean"

    def __init__(self, mu: float) -> None:
        self.mu = mu
        self.notes = FitNotes()

    def predict(self, geno: GenotypeMatrix) -> np.ndarray:
        return np.full(geno.n_samples, self.mu)

    def importance(self) -> None:
        return None

    def save(self, folder: Any) -> None:  # pragma: no cover - not used
        raise NotImplementedError


def test_run_cv_same_folds_for_every_model_and_training_phenotypes_only() -> None:
    geno, y = _toy()
    seen: list[tuple[list[str], np.ndarray]] = []

    def spy_fit(train: GenotypeMatrix, yt: np.ndarray, **kw: Any) -> _MeanModel:
        seen.append((list(train.samples), yt.copy()))
        return _MeanModel(float(yt.mean()))

    folds = make_folds(len(y), folds=4, repeats=2, seed=3)
    rep = Reporter(keep=True)
    res = run_cv(geno, y, [ModelSpec("GBLUP", fit_gblup), ModelSpec("Mean", spy_fit)], folds, reporter=rep)
    # the spy saw exactly the training lines and their phenotypes, fold by fold
    assert len(seen) == 8
    for (ids, yt), f in zip(seen, folds, strict=True):
        assert ids == [geno.samples[i] for i in f.train]
        assert np.array_equal(yt, y[f.train])
    pr = res.predictions
    assert set(pr.columns) >= {"ID", "fold", "repeat", "model", "observed", "predicted"}
    assert len(pr) == 2 * 2 * len(y)
    for (_, rep_no, fold_no), grp in pr.groupby(["model", "repeat", "fold"]):
        other = pr[(pr.repeat == rep_no) & (pr.fold == fold_no)]
        assert set(other.ID) == set(grp.ID)  # same test lines for both models
    for name in ("GBLUP", "Mean"):
        for r in (1, 2):
            ids = pr[(pr.model == name) & (pr.repeat == r)].ID
            assert sorted(ids) == sorted(geno.samples)
    s = res.models["GBLUP"]
    assert s["n_folds"] == 8 and len(s["pearson_folds"]) == 8
    assert math.isclose(s["pearson_mean"], np.mean(s["pearson_folds"]))
    assert s["pearson_mean"] > 0.3  # 5 strong causal markers: GBLUP predicts
    assert res.models["Mean"]["pearson_mean"] == 0.0 and res.models["Mean"]["warnings"]
    assert "GBLUP" in res.importance and res.importance["GBLUP"].shape == (geno.n_markers,)
    assert "Mean" not in res.importance
    steps = [e for e in rep.history if type(e).__name__ == "Progress"]
    assert steps[-1].step == steps[-1].total == 16


def test_run_cv_honours_cancel() -> None:
    geno, y = _toy()
    rep = Reporter()
    rep.request_stop()
    with pytest.raises(Cancelled):
        run_cv(geno, y, [ModelSpec("GBLUP", fit_gblup)], make_folds(len(y), 3), reporter=rep)


def test_repeats_give_spread_and_paired_difference_to_gblup() -> None:
    geno, y = _toy(n=80)
    folds = make_folds(len(y), folds=4, repeats=3, seed=1)
    assert [(f.repeat, f.fold) for f in folds[:4]] == [(0, i) for i in range(4)]
    first = make_folds(len(y), folds=4, repeats=1, seed=1)  # repeat 0 is the single-repeat folds
    assert all(np.array_equal(a.test, b.test) for a, b in zip(first, folds[:4], strict=True))

    def noisy_gblup(train: GenotypeMatrix, yt: np.ndarray, **kw: Any) -> Any:
        return fit_gblup(train, yt, **kw)

    specs = [ModelSpec("GBLUP", fit_gblup), ModelSpec("Twin", noisy_gblup),
             ModelSpec("Mean", lambda tr, yt, **kw: _MeanModel(float(yt.mean())))]
    res = run_cv(geno, y, specs, folds)
    g = res.models["GBLUP"]
    assert g["n_repeats"] == 3 and len(g["pearson_repeat_means"]) == 3
    assert math.isclose(g["over_repeats"]["pearson"]["mean"], np.mean(g["pearson_repeat_means"]))
    assert g["vs_gblup"] is None
    twin = res.models["Twin"]["vs_gblup"]  # the same predictor: zero difference, not distinguishable
    assert twin["mean"] == 0.0 and twin["half_width"] == 0.0 and not twin["distinguishable"]
    assert "not distinguishable from GBLUP" in twin["verdict"]
    mean = res.models["Mean"]["vs_gblup"]  # a constant predictor is dominated: interval below zero
    assert mean["high"] < 0 and mean["n"] == 3 and mean["verdict"].startswith("Mean is behind GBLUP by")
