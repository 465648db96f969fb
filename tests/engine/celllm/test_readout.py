"""The ``cls+linear`` readout: CellTypist-scaled linear path beside the pooled head, stored with the model."""

from __future__ import annotations

import json
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from sklearn.linear_model import LogisticRegression

from app.engine.celllm.baseline import FittedLinear, fit_celltypist, log_normalise
from app.engine.celllm.embed import LoadedModel, embed_adata, infer, load_for_inference, resolve_model_dir
from app.engine.celllm.finetune import finetune, stratified_subsample
from app.engine.celllm.live import LIVE_DIR
from app.engine.celllm.readout import READOUT_FILE, from_fit, load_readout
from app.engine.celllm.splits import stratified_split
from app.engine.celllm.tokenize import tokenize_counts
from app.models.celllm.heads import ClassifierHead

torch.set_num_threads(1)
PBMC = "singlecell/pbmc8k_hvg200_h5ad/pbmc.h5ad"


def _toy(n_classes: int = 3, seed: int = 0) -> tuple[sp.csr_matrix, np.ndarray, list[str]]:
    """Cell types with 5 marker genes each over a Poisson background; gene names g0..g59."""
    rng = np.random.default_rng(seed)
    names = ["T", "B", "NK"][:n_classes]
    n, g = 50 * n_classes, 60
    y = np.repeat(np.array(names), n // n_classes)
    lam = np.full((n, g), 1.0)
    for k, cls in enumerate(names):
        lam[y == cls, k * 5:(k + 1) * 5] = 12.0
    return sp.csr_matrix(rng.poisson(lam).astype(np.float32)), y, [f"g{i}" for i in range(g)]


@pytest.mark.parametrize("n_classes", [2, 3])
def test_fitted_linear_predicts_as_scikit_learn(n_classes: int) -> None:
    """The stored coef/intercept reproduce the fitted logistic regression (binary: one logit split in two)."""
    x, y, _ = _toy(n_classes)
    ln = log_normalise(x)
    s = stratified_split(y, seed=0)
    fit = fit_celltypist(ln, y, s.train, seed=0)
    assert fit.coef.shape == (n_classes, len(fit.genes)) and fit.classes == sorted(set(y))
    ref = LogisticRegression(C=1.0, solver="lbfgs", max_iter=1000).fit(fit.scaled(ln, s.train), y[s.train])
    assert (fit.predict(ln, s.test) == ref.predict(fit.scaled(ln, s.test))).all()


def test_features_scale_like_the_baseline_and_impute_missing_genes_at_the_mean() -> None:
    x, y, genes = _toy()
    ln = log_normalise(x)
    s = stratified_split(y, seed=0)
    fit = fit_celltypist(ln, y, s.train, seed=0)
    ro = from_fit(fit, genes, "baseline")
    feats = ro.features(x, genes)
    assert np.allclose(feats.rows(s.test), fit.scaled(ln, s.test), atol=1e-5)
    # genes are read by name: another column order gives the same features
    rev = list(range(len(genes)))[::-1]
    assert np.allclose(ro.features(x[:, rev], [genes[j] for j in rev]).rows(s.test), feats.rows(s.test), atol=1e-5)
    # a query without the first readout gene: that gene reads as the training mean (scaled 0)
    keep = [j for j, g in enumerate(genes) if g != ro.genes[0]]
    q = ro.features(x[:, keep], [genes[j] for j in keep])
    assert ro.n_missing(q) == 1 and np.all(q.rows(s.test)[:, 0] == 0.0)
    assert feats.rows(s.test)[:, 0].std() > 0.1
    # the same genes written another way are still found: another case, or an Ensembl version suffix
    upper = ro.features(x, [g.upper() for g in genes])
    assert ro.n_missing(upper) == 0 and np.allclose(upper.rows(s.test), feats.rows(s.test), atol=1e-5)
    ens = [f"ENSG{j:011d}" for j in range(len(genes))]
    ro_ens = from_fit(fit, ens, "baseline")
    versioned = ro_ens.features(x, [f"{g}.{j % 9 + 1}" for j, g in enumerate(ens)])
    assert ro_ens.n_missing(versioned) == 0 and np.allclose(versioned.rows(s.test), feats.rows(s.test), atol=1e-5)


def test_baseline_init_with_a_zero_head_predicts_exactly_the_baseline(tmp_path: Path) -> None:
    """Training starts at the baseline: the shipped encoder + a zero head + the linear path = its predictions."""
    x, y, genes = _toy()
    lm = load_for_inference(None, torch.device("cpu"))
    # the toy genes are not in the vocabulary: give the encoder real gene ids so it has tokens to read
    vocab_idx = np.arange(len(genes))
    cells = tokenize_counts(x, vocab_idx, max_len=32)
    s = stratified_split(y, seed=0)
    fit = fit_celltypist(log_normalise(x), y, s.train, seed=0)
    head = ClassifierHead(lm.model.config.dim, 3)
    torch.nn.init.zeros_(head.linear.weight)
    torch.nn.init.zeros_(head.linear.bias)
    ro = from_fit(fit, genes, "baseline")
    both = LoadedModel(lm.model, lm.config, lm.vocab, {}, lm.path, head=head, classes=fit.classes, readout=ro)
    with pytest.raises(ValueError, match="linear readout"):
        infer(both, cells, torch.device("cpu"))
    _, probs = infer(both, cells, torch.device("cpu"), features=ro.features(x, genes))
    assert probs is not None
    pred = np.asarray(fit.classes)[probs.argmax(1)]
    assert (pred == fit.predict(log_normalise(x), np.arange(len(y)))).all()
    # saved and loaded: same weights, genes and scaling
    ro.save(tmp_path, fit.classes)
    back = load_readout(tmp_path)
    assert back is not None and back.genes == ro.genes
    assert torch.equal(back.module.linear.weight, ro.module.linear.weight)
    assert np.allclose(back.mean, ro.mean) and np.allclose(back.scale, ro.scale)


def test_zero_init_starts_from_zero() -> None:
    x, y, genes = _toy()
    s = stratified_split(y, seed=0)
    fit: FittedLinear = fit_celltypist(log_normalise(x), y, s.train, seed=0)
    ro = from_fit(fit, genes, "zero")
    assert float(ro.module.linear.weight.abs().sum()) == 0.0
    with pytest.raises(ValueError, match="linear_init"):
        from_fit(fit, genes, "ones")


@pytest.mark.shared_data
def test_finetune_cls_linear_stores_the_readout_and_embed_applies_it(shared_data: Path, tmp_path: Path) -> None:
    a = ad.read_h5ad(shared_data / PBMC)
    keep = stratified_subsample(a.obs["cell_type"].astype(str).to_numpy(), 200, 0)
    sub = a[keep].copy()
    data = tmp_path / "pbmc_small.h5ad"
    sub.write_h5ad(data)
    run = tmp_path / "run"
    m = finetune({"data": str(data), "label_key": "cell_type", "run_dir": str(run), "epochs": 1, "max_len": 64,
                  "seed": 0, "device": "cpu", "threads": 1, "readout": "cls+linear", "live_cells": 40})
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["readout"] == "cls+linear"
    assert metrics["history"] and metrics["best_epoch"] in (0, 1)  # epoch 0 = the baseline's linear path
    assert (run / "model" / READOUT_FILE).is_file()
    # the live map's class probabilities include the linear path: at epoch 0 (zero head) they are the baseline's
    live0 = np.load(run / LIVE_DIR / "probs-0000.npy")
    assert live0.shape == (40, len(metrics["classes"])) and live0.std() > 0.01
    if m["best_epoch"] == 0:  # kept the starting point: CellLM's test predictions are the baseline's
        pred = pd.read_csv(run / "test_predictions.csv")
        assert (pred["celllm"] == pred["baseline"]).all()
    lm = load_for_inference(run, torch.device("cpu"))
    assert lm.readout is not None and lm.readout.genes
    out = embed_adata(sub, run, device="cpu")
    assert out.obs["celllm_label"].isin(metrics["classes"]).all()
    # the same model on a query lacking some readout genes still annotates (those genes at the training mean)
    lacking = sub[:, ~sub.var_names.isin(lm.readout.genes[:5])].copy()
    out2 = embed_adata(lacking, run, device="cpu")
    assert len(out2) == len(sub) and out2.obs["celllm_label"].notna().all()
    assert resolve_model_dir(run).is_dir()
