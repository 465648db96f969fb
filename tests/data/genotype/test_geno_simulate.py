"""The simulated demo population: known causal markers, LD, families, reproducible files."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app.data.genotype import MISSING, join_phenotypes, read_genotypes, read_phenotypes, simulate_population
from app.data.genotype.population import DEMO_FILES
from app.resources import GENOTYPE_DEMO as DEMO

REPO = Path(__file__).resolve().parents[3]


pytestmark = pytest.mark.usefixtures("one_blas_thread")




@pytest.fixture(scope="module")
def sim():
    return simulate_population(n_lines=120, n_markers=600, n_causal=20, h2=0.6, seed=7, n_families=10)


def test_shapes_and_contract(sim) -> None:
    geno, pheno, causal = sim
    assert geno.calls.shape == (120, 600) and geno.calls.dtype == np.int8
    assert set(np.unique(geno.calls)) <= {0, 1, 2, MISSING}
    assert list(pheno.index) == geno.samples and {"trait", "family"} <= set(pheno.columns)
    assert pheno["family"].nunique() == 10
    assert list(causal.columns[:4]) == ["id", "chrom", "pos", "effect"] and len(causal) == 20
    assert set(causal["id"]) <= set(geno.markers["id"])
    assert geno.markers["chrom"].nunique() == 5
    for _, m in geno.markers.groupby("chrom"):
        assert (np.diff(m["pos"].to_numpy()) > 0).all()


def test_trait_is_the_sum_of_causal_effects(sim) -> None:
    geno, pheno, causal = sim
    # True genetic value = intercept + X_causal @ effect (complete genotypes; check on called entries).
    x = geno.calls[:, causal["index"].to_numpy()].astype(float)
    ok = (x != MISSING).all(axis=1)
    gv = x[ok] @ causal["effect"].to_numpy()
    r = np.corrcoef(gv, pheno["true_gv"].to_numpy()[ok])[0, 1]
    assert r > 0.999
    h2 = pheno["true_gv"].var() / pheno["trait"].var()
    assert h2 == pytest.approx(0.6, abs=0.01)


def test_linkage_disequilibrium_and_structure(sim) -> None:
    geno, pheno, _ = sim
    x = pd.DataFrame(np.where(geno.calls == MISSING, np.nan, geno.calls.astype(float)))
    chrom = geno.markers["chrom"].to_numpy()
    # Within a biparental family, adjacent markers on one chromosome co-segregate (recombinant inbred
    # lines), markers on different chromosomes do not.
    adj, far = [], []
    for _, rows in pheno.groupby("family").indices.items():
        xf = x.iloc[rows]
        poly = [j for j in range(x.shape[1]) if xf[j].nunique() > 1]
        for a, b in itertools.pairwise(poly):
            (adj if chrom[a] == chrom[b] else far).append(abs(xf[a].corr(xf[b])))
        far += [abs(xf[a].corr(xf[b])) for a, b in zip(poly[:40], poly[-40:], strict=True) if chrom[a] != chrom[b]]
    assert np.nanmean(adj) > 0.8
    assert np.nanmean(far) < 0.4
    # lines within a family share more alleles than lines of different families
    fam = pheno["family"].to_numpy()
    d = np.nanmean(np.abs(x.to_numpy()[:, None, :] - x.to_numpy()[None, :, :]), axis=2)
    same = fam[:, None] == fam[None, :]
    np.fill_diagonal(same, False)
    assert d[same].mean() < d[~same & ~np.eye(len(fam), dtype=bool)].mean()


def test_seed_determines_everything() -> None:
    a = simulate_population(n_lines=40, n_markers=200, n_causal=5, seed=3, n_families=4)
    b = simulate_population(n_lines=40, n_markers=200, n_causal=5, seed=3, n_families=4)
    c = simulate_population(n_lines=40, n_markers=200, n_causal=5, seed=4, n_families=4)
    np.testing.assert_array_equal(a[0].calls, b[0].calls)
    pd.testing.assert_frame_equal(a[1], b[1])
    pd.testing.assert_frame_equal(a[2], b[2])
    assert not np.array_equal(a[0].calls, c[0].calls)


def test_demo_files_regenerate_identically(tmp_path: Path) -> None:
    """The committed demo files are exactly what the generator script writes."""
    res = subprocess.run(
        [sys.executable, "-m", "app.data.genotype.simulate", "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    total = 0
    for name in DEMO_FILES:
        assert (tmp_path / name).read_bytes() == (DEMO / name).read_bytes(), name
        total += (DEMO / name).stat().st_size
    assert total < 3_000_000


def test_demo_files_load_through_the_readers() -> None:
    geno = read_genotypes(DEMO / "genotypes.csv")
    assert geno.calls.shape == (400, 2000)
    assert (geno.markers["pos"] > 0).all() and geno.markers["chrom"].nunique() == 5  # map picked up
    pheno = read_phenotypes(DEMO / "pheno.csv")
    rep = join_phenotypes(geno, pheno, "trait")
    assert len(rep.samples) == 400 and rep.n_missing_y == 0
    fam = rep.values(pheno, "family")
    assert fam[0] == "F01" and len(set(fam)) == 20  # groups for grouped CV, aligned to rep.samples
    causal = pd.read_csv(DEMO / "causal_markers.csv")
    assert len(causal) == 50
    sim, _, _ = simulate_population()
    np.testing.assert_array_equal(geno.calls, sim.calls)
    assert list(geno.markers["id"]) == list(sim.markers["id"])


def test_demo_trait_is_predictable_and_causal_markers_survive_qc() -> None:
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import KFold, cross_val_predict

    from app.data.genotype import additive, run_qc

    geno, _ = run_qc(read_genotypes(DEMO / "genotypes.csv"))
    pheno = read_phenotypes(DEMO / "pheno.csv")
    causal = pd.read_csv(DEMO / "causal_markers.csv")
    assert set(causal["id"]) <= set(geno.markers["id"])  # the truth is still there after default QC
    y = pheno.loc[geno.samples, "trait"].to_numpy()
    pred = cross_val_predict(Ridge(alpha=1000.0), additive(geno), y, cv=KFold(5, shuffle=True, random_state=0))
    r = np.corrcoef(pred, y)[0, 1]
    assert 0.35 < r < np.sqrt(0.5) + 0.05  # h2 = 0.5 bounds the accuracy at about sqrt(h2)
