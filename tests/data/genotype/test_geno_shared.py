"""Every shared genotype dataset loads; shapes, values and missing counts checked against the raw files."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from app.data.genotype import MISSING, join_phenotypes, read_genotypes, read_phenotypes, run_qc

pytestmark = pytest.mark.shared_data


@pytest.fixture(scope="module")
def geno_dir(shared_data: Path) -> Path:
    return shared_data / "genotype"


@pytest.fixture(scope="module")
def wheat(geno_dir: Path):
    return read_genotypes(geno_dir / "wheat599_numeric" / "wheat.X")


@pytest.fixture(scope="module")
def rice(geno_dir: Path):
    return read_genotypes(geno_dir / "rice44k_plink" / "UNL")


@pytest.fixture(scope="module")
def maize(geno_dir: Path):
    return read_genotypes(geno_dir / "maize282_hapmap" / "mdp_genotype.hmp.txt")


@pytest.fixture(scope="module")
def sorghum(geno_dir: Path):
    return read_genotypes(geno_dir / "sorghum_sbdiv_vcf" / "example_genotypes.vcf.gz")


# ---------------------------------------------------------------- wheat599 (headerless numeric)


def test_wheat_matrix_matches_raw_text(wheat, geno_dir: Path) -> None:
    raw = np.loadtxt(geno_dir / "wheat599_numeric" / "wheat.X", dtype=np.int8)
    assert wheat.calls.shape == (599, 1279) == raw.shape
    assert wheat.calls.dtype == np.int8
    np.testing.assert_array_equal(wheat.calls, raw)
    assert wheat.coding == "binary"  # DArT 0/1 kept as given
    assert not (wheat.calls == MISSING).any()
    assert wheat.samples[:2] == ["S1", "S2"] and wheat.markers["id"].iloc[-1] == "M1279"


def test_wheat_phenotypes_named_from_readme_and_joined(wheat, geno_dir: Path) -> None:
    y = read_phenotypes(geno_dir / "wheat599_numeric" / "wheat.Y")
    assert list(y.columns) == ["E1", "E2", "E3", "E4"]  # the README names the columns 1 = E1 ...
    assert y.shape == (599, 4)
    assert y.loc["S1", "E1"] == pytest.approx(1.67162948031973)
    assert y.loc["S2", "E4"] == pytest.approx(-1.73875882442463)
    rep = join_phenotypes(wheat, y, "E3")
    assert len(rep.samples) == 599 and not rep.geno_only and not rep.pheno_only
    # DNNGP's wheat1.tsv names the lines M1..M599 and is column 1 of wheat.Y: joined by row order.
    w1 = read_phenotypes(geno_dir / "wheat599_numeric" / "dnngp_example" / "wheat1.tsv")
    rep1 = join_phenotypes(wheat, w1, "env1")
    assert rep1.how == "row order" and len(rep1.samples) == 599
    np.testing.assert_allclose(rep1.y, y["E1"].to_numpy(), atol=1e-8)


# ---------------------------------------------------------------- rice44k (PLINK)


def _decode_bed(bed: Path, n: int, m: int) -> np.ndarray:
    """Independent SNP-major .bed decoder: 00 -> 2 (two A1), 10 -> 1, 11 -> 0, 01 -> missing."""
    raw = np.frombuffer(bed.read_bytes()[3:], dtype=np.uint8).reshape(m, -1)
    codes = np.stack([(raw >> (2 * k)) & 3 for k in range(4)], axis=-1).reshape(m, -1)[:, :n]
    lut = np.array([2, MISSING, 1, 0], dtype=np.int8)
    return lut[codes].T


def test_rice_plink_matches_raw_bytes(rice, geno_dir: Path) -> None:
    d = geno_dir / "rice44k_plink"
    assert rice.calls.shape == (374, 36901)
    np.testing.assert_array_equal(rice.calls, _decode_bed(d / "UNL.bed", 374, 36901))
    miss = float((rice.calls == MISSING).mean())
    assert miss == pytest.approx(1 - 0.957, abs=0.001)  # README: genotyping rate 0.957
    bim0 = (d / "UNL.bim").read_text().split("\n", 1)[0].split()
    m0 = rice.markers.iloc[0]
    assert [m0["chrom"], m0["id"], str(m0["pos"]), m0["alt"], m0["ref"]] == [
        bim0[0],
        bim0[1],
        bim0[3],
        bim0[4],
        bim0[5],
    ]
    assert rice.samples[:3] == ["1", "3", "4"]  # .fam IIDs


def test_rice_phenotypes_join_via_plink_ids(rice, geno_dir: Path) -> None:
    ph = read_phenotypes(geno_dir / "rice44k_plink" / "44kPhenos.csv")
    assert ph.shape[0] == 374 and ph.shape[1] == 28  # PlinkIDs + 27 traits
    expected = {
        "Plant.height": 357,
        "Panicle.number.per.plant": 349,
        "Panicle.fertility": 353,
        "Flowering.time.at.Arkansas": 349,
        "Flowering.time.at.Faridpur": 291,
        "Flowering.time.at.Aberdeen": 340,
        "Na.K.Root.LSMEAN": 370,
    }
    for trait, n in expected.items():
        rep = join_phenotypes(rice, ph, trait)
        assert rep.how == "column PlinkIDs"
        assert len(rep.samples) == 374
        assert int(np.isfinite(rep.y).sum()) == n, trait
    fam = read_phenotypes(geno_dir / "rice44k_plink" / "UNL.fam")
    assert list(fam.columns) == ["FID", "fam_pheno"] and fam["fam_pheno"].isna().all()
    assert join_phenotypes(rice, fam).samples == rice.samples


# ---------------------------------------------------------------- maize282 (HapMap + TASSEL)


def test_maize_hapmap_matches_raw_text(maize, geno_dir: Path) -> None:
    assert maize.calls.shape == (281, 3093)
    lines = (geno_dir / "maize282_hapmap" / "mdp_genotype.hmp.txt").read_text().replace("\r", "").split("\n")
    header = lines[0].split("\t")
    assert maize.samples == header[11:]
    n_nn = n_foreign = 0
    for j, line in enumerate(lines[1:200]):
        f = line.split("\t")
        a, b = f[1].split("/")
        expect = np.array([{a + a: 0, a + b: 1, b + a: 1, b + b: 2}.get(c, MISSING) for c in f[11:]], np.int8)
        np.testing.assert_array_equal(maize.calls[:, j], expect)
        n_nn += sum(c == "NN" for c in f[11:])
        n_foreign += sum(c not in (a + a, a + b, b + a, b + b, "NN") for c in f[11:])
    assert int((maize.calls[:, :199] == MISSING).sum()) == n_nn + n_foreign
    miss = float((maize.calls == MISSING).mean())
    assert 0.036 <= miss < 0.04  # README: NN about 3.6 %, plus calls with a third allele
    assert maize.markers["chrom"].nunique() == 10


def test_maize_tassel_traits(maize, geno_dir: Path) -> None:
    d = geno_dir / "maize282_hapmap"
    tr = read_phenotypes(d / "mdp_traits.txt")
    assert list(tr.columns) == ["EarHT", "dpoll", "EarDia"]
    assert tr.shape[0] == 301  # the file has 301 taxon rows (its README says 300)
    for trait, n in {"EarHT": 279, "dpoll": 276, "EarDia": 249}.items():  # README counts
        rep = join_phenotypes(maize, tr, trait)
        assert len(rep.samples) == 279
        assert int(np.isfinite(rep.y).sum()) == n
    rep = join_phenotypes(maize, tr)
    assert {"811", "C49", "CI44"} <= set(rep.pheno_only)
    ph = read_phenotypes(d / "mdp_phenotype.txt")  # <Phenotype> with a location factor
    assert {"EarHT_A", "EarHT_B", "dpoll_A"} <= set(ph.columns) and ph.shape[0] == 284
    cov = read_phenotypes(d / "mdp_population_structure.txt")
    assert list(cov.columns) == ["Q1", "Q2", "Q3"]


# ---------------------------------------------------------------- sorghum (bgzipped VCF)


def test_sorghum_vcf_matches_raw_text(sorghum, geno_dir: Path) -> None:
    f = geno_dir / "sorghum_sbdiv_vcf" / "example_genotypes.vcf.gz"
    text = gzip.decompress(f.read_bytes()).decode()
    body = text[text.index("#CHROM") :]
    assert sorghum.calls.shape == (738, 6533)
    v, c = np.unique(sorghum.calls, return_counts=True)
    counts = dict(zip(v.tolist(), c.tolist(), strict=True))
    assert counts[0] == body.count("0|0")
    assert counts[2] == body.count("1|1")
    assert counts[1] == body.count("0|1") + body.count("1|0")
    assert MISSING not in counts
    first = body.split("\n")[1].split("\t")
    assert sorghum.markers["id"].iloc[0] == first[2] == "Chr01_186674"
    gt = {"0|0": 0, "0|1": 1, "1|0": 1, "1|1": 2}
    np.testing.assert_array_equal(sorghum.calls[:, 0], [gt[x] for x in first[9:]])


def test_sorghum_phenotypes_empty_cells_missing(sorghum, geno_dir: Path) -> None:
    ph = read_phenotypes(geno_dir / "sorghum_sbdiv_vcf" / "example_phenotypes.csv")
    rep = join_phenotypes(sorghum, ph, "PlantHeight")
    assert len(rep.samples) == 738 and rep.n_missing_y == 12
    assert join_phenotypes(sorghum, ph, "DaysToFlower").n_missing_y == 20


def test_qc_on_rice_reports_each_step(rice) -> None:
    out, rep = run_qc(rice, min_call_rate=0.9, min_maf=0.05, max_sample_missing=0.5)
    assert [s["name"] for s in rep.steps] == ["marker call rate", "sample missingness", "minor allele frequency"]
    assert rep.marker_call_rate.shape == (36901,) and rep.maf.shape == (36901,)
    kept = (rep.marker_call_rate >= 0.9).sum()
    assert rep.steps[0]["after"] == kept and rep.steps[0]["removed"] == 36901 - kept
    assert out.n_markers == rep.steps[-1]["after"] < kept
    assert "removed" in rep.to_text()
