"""Fit/predict layer of the deep GP models: scaling, honest early stopping, determinism, collapse, save/load."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import rankdata

from app.data.errors import DataError
from app.data.genotype import MISSING, GenotypeMatrix, additive, simulate_population
from app.engine.gp import deep
from app.engine.gp.deep import (
    DEFAULTS,
    PRESETS,
    fit_deepgs,
    fit_dlgwas,
    fit_dnngp,
    inner_split,
    load_deep,
    resolve_params,
)
from app.engine.reporter import Cancelled, Reporter

FITS = {"dnngp": fit_dnngp, "deepgs": fit_deepgs, "dlgwas": fit_dlgwas}
# Small, fast settings (the networks are the real ones; only training length and input size are small).
FAST = {
    "dnngp": {"epochs": 30, "patience": 10, "batch_size": 32, "lr": 3e-3, "val_frac": 0.2},
    "deepgs": {"epochs": 80, "patience": 20, "batch_size": 32, "lr": 3e-3, "val_frac": 0.2, "ensemble": 1},
    "dlgwas": {"epochs": 40, "patience": 10, "batch_size": 32, "lr": 3e-3, "val_frac": 0.2},
}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def pop() -> tuple[GenotypeMatrix, np.ndarray, pd.DataFrame]:
    """160 RILs x 120 markers, 20 causal markers, h2 = 0.8 (genotypes, trait, causal markers)."""
    geno, pheno, causal = simulate_population(n_lines=160, n_markers=120, n_causal=20, h2=0.8, seed=7,
                                              n_families=8, n_chrom=2)
    return geno, pheno["trait"].to_numpy(), causal


@pytest.fixture(scope="module")
def fitted(pop) -> dict[str, deep.DeepModel]:
    """Each model fitted once on the 120 training lines of :func:`split` (PCA on all 160 lines)."""
    geno, y, _ = pop
    gtr, ytr, _, _, _, _ = split(geno, y)
    return {name: fit(gtr, ytr, params=FAST[name], seed=1, all_geno=geno) for name, fit in FITS.items()}


def split(geno: GenotypeMatrix, y: np.ndarray, n_test: int = 40, seed: int = 0):
    rng = np.random.default_rng(seed)
    perm = rng.permutation(geno.n_samples)
    te, tr = np.sort(perm[:n_test]), np.sort(perm[n_test:])
    return (geno.subset([geno.samples[i] for i in tr]), y[tr], geno.subset([geno.samples[i] for i in te]), y[te],
            tr, te)


def test_defaults_match_their_default_preset_and_resolve() -> None:
    for model, d in DEFAULTS.items():
        assert d["preset"] in PRESETS[model]
        for k, v in PRESETS[model][d["preset"]].items():
            assert d[k] == v, (model, k)  # what the GUI shows is what the default preset runs
        assert resolve_params(model, None) == d
        assert resolve_params(model, dict(d)) == d  # a GUI passing the whole dict back changes nothing
    v3 = resolve_params("dnngp", {"preset": "v3"})
    assert (v3["act"], v3["optimizer"], v3["loss"]) == ("swish", "adadelta", "ccc")
    v1 = resolve_params("dnngp", {"preset": "v1"})
    assert (v1["act"], v1["optimizer"], v1["loss"]) == ("relu", "adam", "mse")
    assert resolve_params("dnngp", {"preset": "v3", "lr": 0.5})["lr"] == 0.5  # an explicit change wins
    assert resolve_params("deepgs", {"preset": "original"})["optimizer"] == "sgd"
    assert resolve_params("dlgwas", {"preset": "original"})["patience"] == 5
    with pytest.raises(DataError, match="unknown deepgs parameter"):
        resolve_params("deepgs", {"epoch": 3})
    with pytest.raises(DataError, match="preset"):
        resolve_params("dnngp", {"preset": "v2"})


# DNNGP squeezes its PCs through a 3-unit dense layer with dropout 0.5: on 120 lines it learns less.
MIN_R = {"deepgs": 0.5, "dlgwas": 0.5, "dnngp": 0.35}


@pytest.mark.parametrize("model", ["dnngp", "deepgs", "dlgwas"])
def test_learns_additive_signal_and_round_trips(model: str, pop, fitted, tmp_path) -> None:
    geno, y, _ = pop
    _, _, gte, yte, _, _ = split(geno, y)
    m = fitted[model]
    p = m.predict(gte)
    assert p.shape == (gte.n_samples,)
    r = np.corrcoef(p, yte)[0, 1]
    assert r > MIN_R[model], f"{model}: held-out r = {r:.3f}"
    assert not m.notes.warnings
    # save -> load -> the same predictions and importance.
    m.save(tmp_path / model)
    assert (tmp_path / model / "weights.safetensors").is_file() and (tmp_path / model / "model.json").is_file()
    m2 = load_deep(tmp_path / model)
    assert m2.name == model and m2.marker_ids == m.marker_ids
    np.testing.assert_array_equal(m2.predict(gte), p)
    np.testing.assert_array_equal(m2.importance(), m.importance())
    assert m2.notes.info["best_epoch"] == m.notes.info["best_epoch"]
    # New lines must come on the model's markers.
    with pytest.raises(DataError, match="markers"):
        m2.predict(gte.subset(markers=np.arange(1, gte.n_markers)))


def test_same_seed_same_predictions(pop) -> None:
    geno, y, _ = pop
    gtr, ytr, gte, _, _, _ = split(geno, y)
    params = {**FAST["deepgs"], "epochs": 15}
    a = fit_deepgs(gtr, ytr, params=params, seed=3).predict(gte)
    b = fit_deepgs(gtr, ytr, params=params, seed=3).predict(gte)
    c = fit_deepgs(gtr, ytr, params=params, seed=4).predict(gte)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    # DNNGP (dropout + BatchNorm) too.
    params = {**FAST["dnngp"], "epochs": 5}
    a = fit_dnngp(gtr, ytr, params=params, seed=3).predict(gte)
    b = fit_dnngp(gtr, ytr, params=params, seed=3).predict(gte)
    np.testing.assert_array_equal(a, b)


def test_phenotype_scale_is_restored(pop) -> None:
    # The networks see the z-scored trait; predictions come back on the trait's scale.
    geno, y, _ = pop
    gtr, ytr, gte, _, _, _ = split(geno, y)
    params = {**FAST["deepgs"], "epochs": 20}
    p = fit_deepgs(gtr, ytr, params=params, seed=2).predict(gte)
    ys = ytr * 50 + 1000
    ps = fit_deepgs(gtr, ys, params=params, seed=2).predict(gte)
    np.testing.assert_allclose(ps, p * 50 + 1000, rtol=1e-5, atol=1e-3)
    assert abs(ps.mean() - ys.mean()) < 0.5 * ys.std()
    assert 0.1 * ys.std() < ps.std() < 2 * ys.std()


def test_early_stopping_only_uses_training_lines(pop) -> None:
    geno, y, _ = pop
    gtr, ytr, gte, _, tr, te = split(geno, y)
    params = {**FAST["deepgs"], "epochs": 15, "ensemble": 2}
    m = fit_deepgs(gtr, ytr, params=params, seed=0)
    train_ids, test_ids = set(gtr.samples), set(gte.samples)
    vals = m.notes.info["inner_val_samples"]
    assert len(vals) == 2 and vals[0] != vals[1]  # each ensemble member has its own inner split
    assert len(m.nets) == 2
    for v in vals:
        assert len(v) == round(FAST["deepgs"]["val_frac"] * gtr.n_samples)
        assert set(v) <= train_ids and not set(v) & test_ids
    # The inner split is seeded, disjoint and covers the training lines.
    fit_idx, val_idx = inner_split(150, 0.1, seed=0)
    assert not set(fit_idx) & set(val_idx) and len(fit_idx) + len(val_idx) == 150
    np.testing.assert_array_equal(inner_split(150, 0.1, seed=0)[1], val_idx)
    assert not np.array_equal(inner_split(150, 0.1, seed=1)[1], val_idx)
    # Scrambling the test lines' phenotypes (what a leaky CV would pass on) changes nothing.
    y2 = y.copy()
    y2[te] = np.random.default_rng(9).normal(size=len(te)) * 1e3
    m2 = fit_deepgs(gtr, y2[tr], params=params, seed=0)
    np.testing.assert_array_equal(m2.predict(gte), m.predict(gte))
    # ... while changing a training line's phenotype does change the fit (the check can fail).
    y3 = y.copy()
    y3[tr[:20]] += 30
    m3 = fit_deepgs(gtr, y3[tr], params=params, seed=0)
    assert not np.array_equal(m3.predict(gte), m.predict(gte))


@pytest.mark.parametrize("trainer", ["sequential", "stacked"])
def test_min_epochs_holds_off_early_stopping_and_keeps_the_best_epoch(pop, trainer: str) -> None:
    """With patience 1 a noisy validation loss stops a fit within a few epochs; ``min_epochs`` (DNNGP's
    "tuned" default trains every epoch) runs it to that epoch and still restores the best one."""
    geno, y, _ = pop
    gtr, ytr, _, _, _, _ = split(geno, y)
    base = {**FAST["dnngp"], "epochs": 12, "patience": 1, "variance": 0.5, "trainer": trainer}
    early = fit_dnngp(gtr, ytr, params={**base, "min_epochs": 0}, seed=3, all_geno=geno).notes.info
    held = fit_dnngp(gtr, ytr, params={**base, "min_epochs": 12}, seed=3, all_geno=geno).notes.info
    assert early["epochs_run"][0] < 12  # the check can fail: without min_epochs it stops early
    assert held["epochs_run"] == [12]
    assert 1 <= held["best_epoch"][0] <= 12 and held["best_val"][0] <= early["best_val"][0] + 1e-9
    assert resolve_params("dnngp", None)["min_epochs"] == resolve_params("dnngp", None)["epochs"]
    assert resolve_params("dnngp", {"preset": "v1"})["min_epochs"] == 0  # the original recipe stops early
    assert resolve_params("dnngp", {"preset": "v1"})["variance"] == 0.95


def test_pca_fit_all_or_train(pop) -> None:
    geno, y, _ = pop
    gtr, ytr, gte, _, _, _ = split(geno, y)
    params = {**FAST["dnngp"], "epochs": 3, "preset": "v1"}  # v1: PCs to 95 % variance, no cap
    m_all = fit_dnngp(gtr, ytr, params=params, all_geno=geno)
    m_tr = fit_dnngp(gtr, ytr, params={**params, "pca_fit": "train"}, all_geno=geno)
    assert m_all.notes.info["pca_lines"] == geno.n_samples and m_all.notes.info["pca_fit"] == "all"
    assert m_tr.notes.info["pca_lines"] == gtr.n_samples and m_tr.notes.info["pca_fit"] == "train"
    assert m_all.encoder.pca.total_variance_ratio >= 0.95
    assert m_all.predict(gte).shape == (gte.n_samples,)
    with pytest.raises(DataError, match="all_geno"):
        fit_dnngp(gtr, ytr, params=params, all_geno=geno.subset(markers=np.arange(10)))


def test_collapse_to_constant_is_reported(pop) -> None:
    geno, y, _ = pop
    gtr, ytr, _, _, _, _ = split(geno, y)
    rep = Reporter(keep=True)
    # A dead model: lr 0 leaves DeepGS at its U(-0.01, 0.01) start, whose output is flat.
    m = fit_deepgs(gtr, ytr, params={"lr": 0.0, "epochs": 3, "patience": 3}, reporter=rep)
    assert m.notes.warnings and "collapsed" in m.notes.warnings[0]
    assert any(getattr(e, "level", None) == "warning" and "collapsed" in e.line for e in rep.history)
    # A healthy fit does not warn.
    ok = fit_deepgs(gtr, ytr, params={**FAST["deepgs"], "epochs": 20}, seed=0)
    assert not ok.notes.warnings and min(ok.notes.info["train_pred_sd"]) > 0.1
    # A constant target is refused before training.
    with pytest.raises(DataError, match="constant"):
        fit_deepgs(gtr, np.full(gtr.n_samples, 3.0))


@pytest.mark.parametrize("model", ["deepgs", "dlgwas"])
def test_importance_ranks_causal_markers(model: str, pop, fitted) -> None:
    geno, _, causal = pop
    imp = fitted[model].importance()
    assert imp.shape == (geno.n_markers,) and (imp >= 0).all()
    # Percentile rank of the causal markers among all markers, weighted by their share of the genetic
    # variance (0.5 = random ranking).
    pct = rankdata(imp)[causal["index"].to_numpy()] / len(imp)
    score = float(np.average(pct, weights=causal["var_share"].to_numpy()))
    # DLGWAS is linear up to its ISRU output, so its saliency is close to |marker effect|; DeepGS's max-pooling
    # sends each gradient to one of 4 neighbouring markers, which blurs its ranking.
    assert score > {"dlgwas": 0.75, "deepgs": 0.6}[model], f"{model}: causal markers' mean percentile {score:.2f}"


def test_dnngp_saliency_maps_back_through_the_pca(pop, fitted) -> None:
    # Saliency w.r.t. the markers = gradient through the PCA projection (autograd on the markers directly).
    geno, _, _ = pop
    m = fitted["dnngp"]
    lines = geno.subset(geno.samples[:30])
    pca = m.encoder.pca
    x = torch.as_tensor(additive(lines, means=m.encoder.means), dtype=torch.float64).requires_grad_(True)
    comp = torch.as_tensor(pca.components)
    scores = ((x - torch.as_tensor(pca.mean)) @ comp.T).float()
    m.nets[0].eval()
    m.nets[0](scores).sum().backward()
    expect = x.grad.abs().mean(0).numpy() * m.y_sd[0]
    np.testing.assert_allclose(m.saliency(lines), expect, rtol=1e-4, atol=1e-9)
    imp = m.importance()
    assert imp.shape == (geno.n_markers,) and (imp >= 0).all() and (imp > 0).mean() > 0.9  # 0: monomorphic


def test_multi_trait_and_reporter_events(pop) -> None:
    geno, y, _ = pop
    gtr, ytr, gte, _, _, _ = split(geno, y)
    y2 = np.column_stack([ytr, -2 * ytr + 7])
    rep = Reporter(keep=True)
    m = fit_deepgs(gtr, y2, params={**FAST["deepgs"], "epochs": 30}, reporter=rep)
    p = m.predict(gte)
    assert p.shape == (gte.n_samples, 2)
    assert np.corrcoef(p[:, 0], p[:, 1])[0, 1] < -0.9
    kinds = {type(e).__name__ for e in rep.history}
    assert {"Progress", "Metrics", "Log"} <= kinds
    splits = {e.split for e in rep.history if type(e).__name__ == "Metrics"}
    assert splits == {"train", "val"}
    assert all("loss" in e.values for e in rep.history if type(e).__name__ == "Metrics")
    n_epochs = m.notes.info["epochs_run"][0]
    assert sum(type(e).__name__ == "Progress" for e in rep.history) == n_epochs
    # Cancelling stops the fit at the next epoch.
    stop = Reporter()
    stop.request_stop()
    with pytest.raises(Cancelled):
        fit_deepgs(gtr, ytr, reporter=stop)


def test_missing_calls_imputed_with_training_means(pop) -> None:
    geno, y, _ = pop
    gtr, ytr, gte, _, _, _ = split(geno, y)
    m = fit_deepgs(gtr, ytr, params={**FAST["deepgs"], "epochs": 2})
    assert m.encoder.means.shape == (geno.n_markers,)
    calls = gte.calls.copy()
    calls[:, 0] = MISSING
    g_miss = GenotypeMatrix(calls, gte.samples, gte.markers, coding=gte.coding)
    x = m.encoder(g_miss)
    np.testing.assert_allclose(x[:, 0], m.encoder.means[0])  # training means, not these lines' means
    assert np.isfinite(m.predict(g_miss)).all()


def test_bad_input_raises_data_error(pop) -> None:
    geno, y, _ = pop
    small = geno.subset(geno.samples[:8])
    with pytest.raises(DataError, match="training lines"):
        fit_deepgs(small, y[:8])
    with pytest.raises(DataError, match="phenotype values"):
        fit_deepgs(geno, y[:-1])
    y_nan = y.copy()
    y_nan[3] = np.nan
    with pytest.raises(DataError, match="NaN"):
        fit_dlgwas(geno, y_nan)
    with pytest.raises(DataError, match="constant"):
        fit_dnngp(geno, np.ones(geno.n_samples))
    with pytest.raises(DataError, match="1-D"):
        fit_deepgs(geno, y[:, None, None])
    with pytest.raises(DataError, match="at least 21 markers"):
        fit_deepgs(geno.subset(markers=np.arange(15)), y)
    with pytest.raises(DataError, match="unknown"):
        fit_deepgs(geno, y, params={"optimizer": "lbfgs", "epochs": 1})
    with pytest.raises(DataError, match=r"model\.json"):
        load_deep(geno.source or ".")


def test_fit_functions_match_the_contract() -> None:
    import inspect

    from app.engine.gp.base import DEEP_MODELS

    assert set(deep.FIT_FUNCTIONS) == set(DEEP_MODELS) == set(DEFAULTS)
    for fn in deep.FIT_FUNCTIONS.values():
        sig = inspect.signature(fn)
        assert list(sig.parameters)[:2] == ["train", "y"]
        assert {"params", "seed", "device", "reporter", "all_geno"} <= set(sig.parameters)


def test_precision_bf16_trains_in_bf16_and_predicts_in_fp32(pop) -> None:
    from app.engine.gp.precision import resolve_precision

    geno, y, _ = pop
    tr, y_tr, te, _, _, _ = split(geno, y)
    params = {**FAST["dnngp"], "epochs": 8, "patience": 8}
    a = fit_dnngp(tr, y_tr, params=params, seed=3)
    b = fit_dnngp(tr, y_tr, params={**params, "precision": "bf16"}, seed=3)
    assert (a.notes.info["precision"], b.notes.info["precision"]) == ("fp32", "bf16")
    pa, pb = a.predict(te), b.predict(te)
    assert pb.dtype == np.float64 and np.isfinite(pb).all()
    assert not np.array_equal(pa, pb)  # bf16 arithmetic did run in the training steps...
    assert np.corrcoef(pa, pb)[0, 1] > 0.9  # ...and trained the same network to within rounding
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"
    assert resolve_precision("auto", torch.device("meta")) == "fp32"
    assert resolve_precision("auto", cpu) == ("bf16" if torch.cpu._is_avx512_bf16_supported()
                                              or torch.cpu._is_amx_tile_supported() else "fp32")
    with pytest.raises(DataError, match="precision"):
        fit_dnngp(tr, y_tr, params={**params, "precision": "fp16"})


def test_device_choice(pop) -> None:
    geno, y, _ = pop
    params = {**FAST["deepgs"], "epochs": 2}
    m = fit_deepgs(geno, y, params=params, device="auto")
    assert m.notes.info["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        from app.data.errors import OmicsLabError

        with pytest.raises(OmicsLabError, match="CUDA"):
            fit_deepgs(geno, y, params=params, device="cuda")


@pytest.mark.shared_data
def test_dnngp_on_wheat599_uses_251_pcs_of_all_lines(shared_data) -> None:
    # DNNGP's own wheat599_pc95.tsv has 251 PCs (PCA on all 599 lines); the network then has 81,799 weights.
    from app.data.genotype import read_genotypes

    geno = read_genotypes(shared_data / "genotype" / "wheat599_numeric" / "wheat.X")
    y = np.loadtxt(shared_data / "genotype" / "wheat599_numeric" / "wheat.Y")[:, 0]
    train = geno.subset(geno.samples[:60])
    m = fit_dnngp(train, y[:60], params={"epochs": 1, "batch_size": 30, "preset": "v1"}, all_geno=geno)
    assert m.notes.info["n_pcs"] == 251 and m.notes.info["pca_lines"] == 599
    assert sum(p.numel() for p in m.nets[0].parameters()) == 81_799
    assert m.predict(geno.subset(geno.samples[60:70])).shape == (10,)
    # the default ("tuned"): PCs to 80 % variance (93 of all 599 lines), at most one per 4 training lines
    big = fit_dnngp(geno.subset(geno.samples[:480]), y[:480], params={"epochs": 1}, all_geno=geno)
    assert big.notes.info["n_pcs"] == 93
    small = fit_dnngp(train, y[:60], params={"epochs": 1, "batch_size": 30}, all_geno=geno)
    assert small.notes.info["n_pcs"] == 15  # 60 training lines: the cap, not the 93 PCs of 80 % variance
