"""Nothing of a test fold's phenotypes reaches training, for every model.

1. Changing the test fold's phenotypes leaves that fold's predictions unchanged (exactly: fits are
   deterministic on the CPU). This fails for real if y is scaled, early-stopped on or tuned with test lines.
2. With phenotypes shuffled (no genetic signal left), every model's cross-validated r is near 0.
"""

from __future__ import annotations

import numpy as np
import pytest

from app.data.demo import genotype_demo_paths
from app.data.genotype import GenotypeMatrix, join_phenotypes, read_genotypes, read_phenotypes
from app.engine.gp.cv import ModelSpec, make_folds, run_cv
from app.engine.gp.jobs import DISPLAY, ensemble_spec, model_spec

# small and quick: every deep model still trains several epochs with its own early stopping
TINY = {"epochs": 5, "batch_size": 32}
MODELS = ("gblup", "dnngp", "deepgs", "dlgwas")


@pytest.fixture(scope="module")
def demo() -> tuple[GenotypeMatrix, np.ndarray]:
    d = genotype_demo_paths()
    geno = read_genotypes(d["geno"])
    pheno = read_phenotypes(d["pheno"])
    j = join_phenotypes(geno, pheno, "trait")
    rng = np.random.default_rng(0)
    lines = np.sort(rng.choice(len(j.samples), 160, replace=False))
    markers = np.arange(0, geno.n_markers, 8)  # 250 markers
    sub = geno.subset(samples=[j.samples[i] for i in lines], markers=markers)
    assert j.y is not None
    return sub, j.y[lines]


def _specs() -> list[ModelSpec]:
    # as the CV job builds them: the deep models fit every fold at once (stacked), plus a deep + GBLUP blend
    return [model_spec(k, dict(TINY)) for k in MODELS] + [ensemble_spec("deepgs")]


def test_test_fold_phenotypes_do_not_change_test_fold_predictions(demo: tuple[GenotypeMatrix, np.ndarray]) -> None:
    geno, y = demo
    folds = make_folds(len(y), folds=4, seed=1)[:1]  # one fold is enough: it is compared exactly
    test = folds[0].test
    y2 = y.copy()
    y2[test] = np.random.default_rng(5).normal(y.mean() + 50, 30, len(test))  # wildly different test values
    a = run_cv(geno, y, _specs(), folds, seed=2, all_geno=geno)
    b = run_cv(geno, y2, _specs(), folds, seed=2, all_geno=geno)
    for name in [*(DISPLAY[k] for k in MODELS), "GBLUP+DeepGS"]:
        pa = a.predictions[a.predictions.model == name].predicted.to_numpy()
        pb = b.predictions[b.predictions.model == name].predicted.to_numpy()
        assert len(pa) == len(test)
        assert np.allclose(pa, pb, rtol=0, atol=1e-9), f"{name}: test-fold phenotypes changed its predictions"
        obs_b = b.predictions[b.predictions.model == name].observed.to_numpy()
        assert np.array_equal(obs_b, y2[test])  # and the changed values were really the ones scored


def test_shuffled_phenotypes_give_r_near_zero(demo: tuple[GenotypeMatrix, np.ndarray]) -> None:
    geno, y = demo
    shuffled = np.random.default_rng(11).permutation(y)
    folds = make_folds(len(y), folds=3, repeats=1, seed=3)
    res = run_cv(geno, shuffled, _specs(), folds, seed=4, all_geno=geno)
    for name, s in res.models.items():
        pooled = res.predictions[res.predictions.model == name]
        r_pooled = np.corrcoef(pooled.observed, pooled.predicted)[0, 1] if pooled.predicted.std() > 0 else 0.0
        # 160 lines: the SD of r under no signal is ~0.08, so 0.3 is > 3.5 SD; a leak gives r well above it
        assert abs(s["pearson_mean"]) < 0.3, (name, s["pearson_folds"])
        assert abs(r_pooled) < 0.3, (name, r_pooled)
    # the same data unshuffled: GBLUP does find the signal, so the check above has power
    real = run_cv(geno, y, _specs()[:1], folds, seed=4)
    assert real.models["GBLUP"]["pearson_mean"] > 0.3
