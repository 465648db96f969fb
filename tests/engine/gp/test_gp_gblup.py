"""GBLUP against closed-form solutions: mixed-model equations solved directly, dense REML, rrBLUP."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize

from app.data.errors import DataError
from app.data.genotype import MISSING, GenotypeMatrix
from app.engine.gp.gblup import (
    Spectral,
    centred,
    fit_gblup,
    is_gblup_folder,
    load_gblup,
    reml,
    reml_loglik,
    vanraden_grm,
)


def _geno(n: int, m: int, rng: np.random.Generator, missing: float = 0.0, binary: bool = False) -> GenotypeMatrix:
    freq = rng.uniform(0.05, 0.95, m)
    calls = rng.binomial(1 if binary else 2, freq, size=(n, m)).astype(np.int8)
    if missing:
        calls[rng.random((n, m)) < missing] = MISSING
    markers = pd.DataFrame({"id": [f"m{j}" for j in range(m)], "chrom": "1", "pos": np.arange(m),
                            "ref": "A", "alt": "G"})
    return GenotypeMatrix(calls=calls, samples=[f"s{i}" for i in range(n)], markers=markers,
                          coding="binary" if binary else "dosage")


def _rows(g: GenotypeMatrix, idx: np.ndarray) -> GenotypeMatrix:
    return g.subset(samples=[g.samples[i] for i in idx])


def _simulate(n: int, m: int, h2: float, seed: int, with_gv: bool = False) -> tuple:
    rng = np.random.default_rng(seed)
    g = _geno(n, m, rng)
    w = centred(g, g.calls.mean(axis=0))
    gv = w @ rng.normal(0, 1, m)
    e = rng.normal(0, 1, n)
    e *= np.sqrt(np.var(gv) * (1 - h2) / h2) / np.std(e)
    return (g, 10.0 + gv + e, gv) if with_gv else (g, 10.0 + gv + e)


def test_vanraden_matches_the_textbook_formula() -> None:
    rng = np.random.default_rng(0)
    g = _geno(30, 80, rng)
    k, means, c = vanraden_grm(g)
    p = g.calls.mean(axis=0) / 2
    z = g.calls - 2 * p
    assert np.allclose(k, z @ z.T / (2 * np.sum(p * (1 - p))))
    assert np.allclose(means, 2 * p) and np.isclose(c, 2 * np.sum(p * (1 - p)))
    gb = _geno(30, 80, rng, binary=True)
    kb, mb, cb = vanraden_grm(gb)
    assert np.isclose(cb, np.sum(mb * (1 - mb)))
    zb = gb.calls - mb
    assert np.allclose(kb, zb @ zb.T / np.sum(mb * (1 - mb)))


@pytest.mark.parametrize("missing", [0.0, 0.05])
def test_gblup_at_fixed_delta_equals_mixed_model_equations(missing: float) -> None:
    """Marker model MME [[n, 1'W], [W'1, W'W + delta c I]] [mu; b] = [1'y; W'y] solved directly."""
    rng = np.random.default_rng(1)
    g = _geno(70, 150, rng, missing=missing)
    y = rng.normal(5, 2, 70)
    tr, te = np.arange(50), np.arange(50, 70)
    delta = 0.7
    model = fit_gblup(_rows(g, tr), y[tr], params={"delta": delta})

    means = np.array([np.mean(col[col != MISSING]) for col in g.calls[tr].T])
    w = np.where(g.calls[tr] == MISSING, means, g.calls[tr]).astype(float) - means
    c = np.sum(means / 2 * (1 - means / 2)) * 2
    n, m = w.shape
    lhs = np.zeros((m + 1, m + 1))
    lhs[0, 0] = n
    lhs[0, 1:] = lhs[1:, 0] = w.sum(axis=0)
    lhs[1:, 1:] = w.T @ w + delta * c * np.eye(m)
    sol = np.linalg.solve(lhs, np.concatenate([[y[tr].sum()], w.T @ y[tr]]))
    assert np.isclose(model.intercept[0], sol[0], atol=1e-8)
    assert np.allclose(model.effects[:, 0], sol[1:], atol=1e-8)

    # GBLUP in its V^-1 form (no eigendecomposition): mu by GLS, u = K V^-1 (y - mu), V = K + delta I
    k = w @ w.T / c
    vinv = np.linalg.inv(k + delta * np.eye(n))
    one = np.ones(n)
    mu = (one @ vinv @ y[tr]) / (one @ vinv @ one)
    alpha = vinv @ (y[tr] - mu)
    assert np.isclose(model.intercept[0], mu, atol=1e-8)
    assert np.allclose(model.predict(_rows(g, tr)), mu + k @ alpha, atol=1e-8)
    # new lines: via marker effects = via their relationship to the training lines (rrBLUP = GBLUP)
    w_new = np.where(g.calls[te] == MISSING, means, g.calls[te]).astype(float) - means
    k_new = w_new @ w.T / c
    assert np.allclose(model.predict(_rows(g, te)), mu + k_new @ alpha, atol=1e-8)


def _dense_reml(k: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """REML of (s2g, s2e) by direct optimisation of the unprofiled restricted likelihood."""
    n = len(y)
    x = np.ones((n, 1))

    def nll(t: np.ndarray) -> float:
        s2g, s2e = np.exp(t)
        v = s2g * k + s2e * np.eye(n)
        vinv = np.linalg.inv(v)
        xvx = x.T @ vinv @ x
        b = np.linalg.solve(xvx, x.T @ vinv @ y)
        r = y - x @ b
        return 0.5 * (np.linalg.slogdet(v)[1] + np.linalg.slogdet(xvx)[1] + float(r @ vinv @ r))

    best = min((minimize(nll, np.log([a, b]), method="Nelder-Mead", options={"xatol": 1e-9, "fatol": 1e-12,
                                                                             "maxiter": 4000})
                for a, b in [(1, 1), (0.1, 2), (3, 0.3)]), key=lambda r: r.fun)
    s2g, s2e = np.exp(best.x)
    return float(s2g), float(s2e)


def test_reml_matches_direct_dense_optimisation() -> None:
    g, y = _simulate(120, 300, 0.5, seed=3)
    k, _, _ = vanraden_grm(g)
    sp = Spectral.of(k, y)
    r = reml(sp, sp.ys)
    s2g, s2e = _dense_reml(k, y)
    assert np.isclose(r.sigma_g2, s2g, rtol=2e-3)
    assert np.isclose(r.sigma_e2, s2e, rtol=2e-3)
    assert np.isclose(r.delta, s2e / s2g, rtol=2e-3)
    # the profiled likelihood differs from the dense one by a constant in delta
    n = len(y)
    x = np.ones((n, 1))

    def dense_profiled(delta: float) -> float:
        h = k + delta * np.eye(n)
        hinv = np.linalg.inv(h)
        xhx = x.T @ hinv @ x
        b = np.linalg.solve(xhx, x.T @ hinv @ y)
        res = y - x @ b
        quad = float(res @ hinv @ res)
        return -0.5 * ((n - 1) * np.log(quad / (n - 1)) + np.linalg.slogdet(h)[1] + np.linalg.slogdet(xhx)[1]
                       + n - 1)

    for d in (0.05, 0.5, 2.0, 20.0):
        assert np.isclose(reml_loglik(sp, sp.ys, d), dense_profiled(d), rtol=1e-9, atol=1e-7)


def test_reml_recovers_simulated_heritability() -> None:
    est = []
    for seed in range(4):
        g, y = _simulate(400, 800, 0.5, seed=10 + seed)
        model = fit_gblup(g, y)
        est.append(model.varcomp[0]["h2"])
    assert abs(np.mean(est) - 0.5) < 0.08, est
    g, y = _simulate(400, 800, 0.8, seed=20)
    assert fit_gblup(g, y).varcomp[0]["h2"] > 0.65


def test_gblup_predicts_genetic_values_of_new_lines() -> None:
    g, y, gv = _simulate(300, 120, 0.7, seed=5, with_gv=True)
    tr, te = np.arange(240), np.arange(240, 300)
    model = fit_gblup(_rows(g, tr), y[tr])
    r = np.corrcoef(model.predict(_rows(g, te)), gv[te])[0, 1]
    assert r > 0.6, r  # h2 0.7, 240 lines, 120 markers: expected accuracy ~0.8


def test_multi_trait_equals_separate_fits_and_importance_is_abs_effects() -> None:
    g, y1 = _simulate(90, 120, 0.5, seed=6)
    _, y2 = _simulate(90, 120, 0.3, seed=7)
    both = fit_gblup(g, np.column_stack([y1, y2]))
    one = fit_gblup(g, y1)
    two = fit_gblup(g, y2)
    pred = both.predict(g)
    assert pred.shape == (90, 2)
    assert np.allclose(pred[:, 0], one.predict(g)) and np.allclose(pred[:, 1], two.predict(g))
    imp = one.importance()
    assert imp.shape == (120,) and np.allclose(imp, np.abs(one.effects[:, 0]))


def test_save_load_roundtrip_without_pickles(tmp_path: Path) -> None:
    g, y = _simulate(60, 90, 0.5, seed=8)
    model = fit_gblup(g, y)
    folder = tmp_path / "GBLUP"
    model.save(folder)
    assert is_gblup_folder(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", "weights.safetensors"]
    back = load_gblup(folder)
    assert np.array_equal(back.predict(g), model.predict(g))
    assert back.varcomp == model.varcomp and back.marker_ids == model.marker_ids
    with pytest.raises(DataError):
        load_gblup(tmp_path)


def test_bad_inputs_are_data_errors() -> None:
    g, y = _simulate(40, 50, 0.5, seed=9)
    model = fit_gblup(g, y)
    with pytest.raises(DataError, match="markers"):
        model.predict(g.subset(markers=np.arange(10)))
    with pytest.raises(DataError, match="NaN"):
        fit_gblup(g, np.where(np.arange(40) == 3, np.nan, y))
    with pytest.raises(DataError, match="same value"):
        fit_gblup(g, np.ones(40))
    with pytest.raises(DataError, match="unknown GBLUP parameter"):
        fit_gblup(g, y, params={"epochs": 3})
