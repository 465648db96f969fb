"""Format round trips on tiny files written in tmp_path: PLINK (bed_reader.to_bed), VCF, HapMap, numeric."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app.data.errors import DataError
from app.data.genotype import (
    MISSING,
    GenotypeMatrix,
    detect_genotype_format,
    join_phenotypes,
    read_genotypes,
    read_phenotypes,
    write_plink,
)

CALLS = np.array(
    [
        [0, 1, 2, MISSING, 2],
        [2, 2, 0, 1, 0],
        [1, MISSING, 0, 0, 2],
    ],
    dtype=np.int8,
)


def _geno() -> GenotypeMatrix:
    markers = pd.DataFrame(
        {
            "id": [f"rs{i}" for i in range(5)],
            "chrom": ["1", "1", "2", "2", "3"],
            "pos": [100, 200, 50, 75, 10],
            "ref": list("ACGTA"),
            "alt": list("GTACC"),
        }
    )
    return GenotypeMatrix(calls=CALLS.copy(), samples=["s1", "s2", "s3"], markers=markers)


def test_plink_round_trip_with_bed_reader(tmp_path: Path) -> None:
    from bed_reader import to_bed

    val = CALLS.astype(np.float32)
    val[CALLS == MISSING] = np.nan
    to_bed(
        tmp_path / "t.bed",
        val,
        properties={
            "iid": ["a", "b", "c"],
            "sid": ["m1", "m2", "m3", "m4", "m5"],
            "allele_1": list("GTACC"),
            "allele_2": list("ACGTA"),
            "chromosome": ["1", "1", "2", "2", "3"],
            "bp_position": [100, 200, 50, 75, 10],
        },
    )
    for p in (tmp_path / "t.bed", tmp_path / "t", tmp_path / "t.bim"):
        g = read_genotypes(p)
        np.testing.assert_array_equal(g.calls, CALLS)  # counts A1 (allele_1) = alt
        assert g.samples == ["a", "b", "c"]
        assert list(g.markers["alt"]) == list("GTACC") and list(g.markers["ref"]) == list("ACGTA")
        assert list(g.markers["pos"]) == [100, 200, 50, 75, 10]
    # our writer round-trips too
    bed = write_plink(_geno(), tmp_path / "w")
    g2 = read_genotypes(bed)
    np.testing.assert_array_equal(g2.calls, CALLS)
    assert g2.samples == ["s1", "s2", "s3"] and list(g2.markers["id"]) == [f"rs{i}" for i in range(5)]


VCF = """##fileformat=VCFv4.2
##contig=<ID=1>
##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">
#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\ts1\ts2\ts3
1\t100\trs0\tA\tG\t.\tPASS\t.\tGT\t0/0\t1/1\t0|1
1\t200\t.\tC\tT\t.\tPASS\t.\tGT\t0/1\t1|1\t./.
1\t300\trs2\tG\tA,C\t.\tPASS\t.\tGT\t0/1\t1/2\t0/0
2\t50\trs3\tG\tA\t.\tPASS\t.\tGT\t1/1\t0/0\t0/0
"""


@pytest.mark.parametrize("gz", [False, True])
def test_vcf_dosage_of_alt_and_multiallelic_skipped(tmp_path: Path, gz: bool) -> None:
    p = tmp_path / ("t.vcf.gz" if gz else "t.vcf")
    p.write_bytes(gzip.compress(VCF.encode()) if gz else VCF.encode())
    g = read_genotypes(p)
    np.testing.assert_array_equal(g.calls, np.array([[0, 1, 2], [2, 2, 0], [1, MISSING, 0]], dtype=np.int8))
    assert list(g.markers["id"]) == ["rs0", "1:200", "rs3"]
    assert list(g.markers["alt"]) == ["G", "T", "A"]
    assert any("1 multi-allelic" in n for n in g.notes)


def test_hapmap_two_letter_and_iupac(tmp_path: Path) -> None:
    head = "rs#\talleles\tchrom\tpos\tstrand\tassembly#\tcenter\tprotLSID\tassayLSID\tpanel\tQCcode\tL1\tL2\tL3\tL4"
    fixed = "+\tNA\tNA\tNA\tNA\tNA\tNA"
    rows = [
        f"m1\tA/G\t1\t10\t{fixed}\tAA\tAG\tGG\tNN",  # two-letter
        f"m2\tC/T\t1\t20\t{fixed}\tC\tY\tT\tN",  # IUPAC
        f"m3\tA/C\t2\t5\t{fixed}\tM\tCC\tGG\tCA",  # mixed, G is a third allele -> missing
    ]
    p = tmp_path / "t.hmp.txt"
    p.write_bytes(("\r\n".join([head, *rows]) + "\r\n").encode())  # CRLF as in the shared file
    g = read_genotypes(p)
    assert g.samples == ["L1", "L2", "L3", "L4"]
    expect = np.array([[0, 1, 2, MISSING], [0, 1, 2, MISSING], [1, 2, MISSING, 1]], dtype=np.int8).T
    np.testing.assert_array_equal(g.calls, expect)
    assert list(g.markers["alt"]) == ["G", "T", "C"] and list(g.markers["pos"]) == [10, 20, 5]


def test_numeric_orientations_and_codings(tmp_path: Path) -> None:
    # samples x markers with header and IDs, CSV, -1/0/1 coded, NA missing
    p = tmp_path / "g.csv"
    p.write_text("id,m1,m2,m3,m4\na,-1,0,1,NA\nb,1,1,-1,0\n")
    g = read_genotypes(p)
    assert g.samples == ["a", "b"] and list(g.markers["id"]) == ["m1", "m2", "m3", "m4"]
    np.testing.assert_array_equal(g.calls, [[0, 1, 2, MISSING], [2, 2, 0, 1]])
    assert any("-1/0/1" in n for n in g.notes)
    # markers x samples TSV with a map in the leading columns
    p2 = tmp_path / "g.tsv"
    p2.write_text("snp\tchrom\tpos\ta\tb\nm1\t1\t5\t0\t2\nm2\t1\t9\t1\t-9\nm3\t2\t3\t2\t2\n")
    g2 = read_genotypes(p2)
    assert g2.samples == ["a", "b"] and list(g2.markers["pos"]) == [5, 9, 3]
    np.testing.assert_array_equal(g2.calls, [[0, 1, 2], [2, MISSING, 2]])
    # headerless, whitespace, more rows than columns -> markers x samples unless told otherwise
    p3 = tmp_path / "g.txt"
    p3.write_text("0 1\n2 1\n0 0\n1 2\n")
    g3 = read_genotypes(p3)
    assert g3.calls.shape == (2, 4) and g3.samples == ["S1", "S2"]
    g4 = read_genotypes(p3, numeric_orientation="samples_x_markers")
    assert g4.calls.shape == (4, 2) and list(g4.markers["id"]) == ["M1", "M2"]
    # headerless with row IDs in the first column
    p5 = tmp_path / "g5.txt"
    p5.write_text("x1 0 1 2 2 0\nx2 2 1 0 0 1\n")
    g5 = read_genotypes(p5)
    assert g5.samples == ["x1", "x2"] and g5.calls.shape == (2, 5)


def test_numeric_marker_map_beside_file(tmp_path: Path) -> None:
    (tmp_path / "geno.csv").write_text("id,m1,m2\na,0,2\nb,1,1\n")
    (tmp_path / "marker_map.csv").write_text("id,chrom,pos\nm2,3,30\nm1,2,20\n")
    g = read_genotypes(tmp_path / "geno.csv")
    assert list(g.markers["chrom"]) == ["2", "3"] and list(g.markers["pos"]) == [20, 30]


def test_detect_format(tmp_path: Path) -> None:
    (tmp_path / "x.vcf").write_text(VCF)
    assert detect_genotype_format(tmp_path / "x.vcf") == "vcf"
    assert detect_genotype_format(tmp_path / "y.hmp.txt") == "hapmap"
    assert detect_genotype_format(tmp_path / "z.bed") == "plink"
    (tmp_path / "w.csv").write_text("id,m1\na,0\n")
    assert detect_genotype_format(tmp_path / "w.csv") == "numeric"


def test_phenotype_formats(tmp_path: Path) -> None:
    g = _geno()
    p = tmp_path / "p.tsv"
    p.write_text("taxa\tyield\tgroup\ns1\t1.5\tA\ns2\tNA\tB\ns3\t-9\tA\nzz\t4\tB\n")
    ph = read_phenotypes(p)
    assert ph["yield"].dtype == np.float64 and ph["group"].dtype == object
    rep = join_phenotypes(g, ph, "yield")
    assert rep.samples == ["s1", "s2", "s3"] and rep.pheno_only == ["zz"] and rep.geno_only == []
    np.testing.assert_array_equal(np.isnan(rep.y), [False, True, True])
    assert "Phenotype only (no genotype): 1 (e.g. zz)" in rep.to_text()
    tassel = tmp_path / "t.txt"
    tassel.write_text("<Trait>\tH\tF\r\ns1\t3\t-999\r\ns3\t4\t5\r\n")
    ph2 = read_phenotypes(tassel)
    assert list(ph2.columns) == ["H", "F"] and np.isnan(ph2.loc["s1", "F"])
    assert join_phenotypes(g, ph2, "H").geno_only == ["s2"]
    # headerless, no README -> trait1.., IDs S1..
    (tmp_path / "y.txt").write_text("0.5 1\n0.2 3\n")
    ph3 = read_phenotypes(tmp_path / "y.txt")
    assert list(ph3.columns) == ["trait1", "trait2"] and list(ph3.index) == ["S1", "S2"]
    # R write.table: no header cell above the row names
    (tmp_path / "r.txt").write_text("h w\ns1 1 2\ns2 3 NA\n")
    ph4 = read_phenotypes(tmp_path / "r.txt")
    assert list(ph4.columns) == ["h", "w"] and np.isnan(ph4.loc["s2", "w"])
    # explicit ID column
    (tmp_path / "q.csv").write_text("line,code,h\nL1,s1,1\nL2,s2,2\n")
    assert list(read_phenotypes(tmp_path / "q.csv", id_column="code").index) == ["s1", "s2"]


def test_numeric_orientation_hints(tmp_path: Path) -> None:
    # 3 samples x 2 markers: the shape rule alone would say markers x samples; the corner cell says otherwise
    p = tmp_path / "a.csv"
    p.write_text("sample,m1,m2\na,0,1\nb,1,2\nc,2,2\n")
    g = read_genotypes(p)
    assert g.samples == ["a", "b", "c"] and any("first header cell" in n for n in g.notes)
    p.write_text("marker,a,b\nm1,0,1\nm2,1,2\nm3,2,2\nm4,0,0\n")
    g = read_genotypes(p)
    assert g.samples == ["a", "b"] and g.n_markers == 4
    # numeric sample IDs in the first column need the flag
    p2 = tmp_path / "b.txt"
    p2.write_text("17 0 1 2\n18 2 1 0\n")
    g2 = read_genotypes(p2, samples_in_first_column=True)
    assert g2.samples == ["17", "18"] and g2.n_markers == 3
    with pytest.raises(DataError, match="numeric sample IDs, give it a header word"):
        read_genotypes(p2)
    # text first column declared NOT to be samples -> marker IDs, markers are rows
    p3 = tmp_path / "c.txt"
    p3.write_text("mA 0 1\nmB 2 1\n")
    g3 = read_genotypes(p3, samples_in_first_column=False)
    assert list(g3.markers["id"]) == ["mA", "mB"] and g3.samples == ["S1", "S2"]


@pytest.mark.parametrize("name", ["g.csv", "g.vcf", "g.vcf.gz", "g.hmp.txt", "g.bed"])
def test_writers_round_trip_every_format(tmp_path: Path, name: str) -> None:
    from app.data.genotype import simulate_population, write_genotypes

    geno, _, _ = simulate_population(n_lines=24, n_markers=60, n_causal=3, n_families=4, seed=11)
    assert (geno.calls == MISSING).any() and (geno.calls == 1).any()
    out = write_genotypes(geno, tmp_path / name)
    back = read_genotypes(out)
    np.testing.assert_array_equal(back.calls, geno.calls)
    assert back.samples == geno.samples
    assert list(back.markers["id"]) == list(geno.markers["id"])
    assert list(back.markers["chrom"]) == list(geno.markers["chrom"])
    assert list(back.markers["pos"]) == list(geno.markers["pos"])
    assert list(back.markers["alt"]) == list(geno.markers["alt"])


def test_vcf_haploid_and_half_missing_calls(tmp_path: Path) -> None:
    p = tmp_path / "h.vcf"
    p.write_text(
        "##fileformat=VCFv4.2\n##contig=<ID=1>\n"
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n'
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\ta\tb\tc\td\te\n"
        "1\t5\tm1\tA\tG\t.\t.\t.\tGT\t1\t0\t./1\t.\t1/0\n"
    )
    g = read_genotypes(p)
    np.testing.assert_array_equal(g.calls[:, 0], [2, 0, MISSING, MISSING, 1])
    assert any("half-missing" in n for n in g.notes) and any("haploid" in n for n in g.notes)


def test_numeric_ids_under_an_id_header(tmp_path: Path) -> None:
    p = tmp_path / "n.tsv"
    p.write_text("id\tm1\tm2\tm3\n1\t0\t2\t1\n2\t1\t1\t0\n")
    g = read_genotypes(p)
    assert g.samples == ["1", "2"] and list(g.markers["id"]) == ["m1", "m2", "m3"]
    np.testing.assert_array_equal(g.calls, [[0, 2, 1], [1, 1, 0]])
