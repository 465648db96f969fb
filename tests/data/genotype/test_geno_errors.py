"""Bad input gives one clear DataError (which file, what is wrong, what to do); never another exception."""

from __future__ import annotations

import contextlib
import gzip
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.data.errors import DataError
from app.data.genotype import (
    GenotypeMatrix,
    additive,
    join_phenotypes,
    one_hot,
    read_genotypes,
    read_phenotypes,
    run_qc,
    write_plink,
)


def _small_geno() -> GenotypeMatrix:
    markers = pd.DataFrame(
        {"id": ["m1", "m2"], "chrom": ["1", "1"], "pos": [1, 2], "ref": ["A", "C"], "alt": ["G", "T"]}
    )
    return GenotypeMatrix(calls=np.array([[0, 1], [2, 2], [1, 0]], np.int8), samples=["a", "b", "c"], markers=markers)


def _msg(exc: pytest.ExceptionInfo[DataError]) -> str:
    return str(exc.value)


def test_missing_bim_next_to_bed(tmp_path: Path) -> None:
    write_plink(_small_geno(), tmp_path / "x")
    (tmp_path / "x.bim").unlink()
    with pytest.raises(DataError) as e:
        read_genotypes(tmp_path / "x.bed")
    assert "x.bim" in _msg(e) and ".bim" in e.value.problem and e.value.hint


def test_truncated_bed(tmp_path: Path) -> None:
    bed = write_plink(_small_geno(), tmp_path / "x")
    bed.write_bytes(bed.read_bytes()[:-1])
    with pytest.raises(DataError, match="truncated"):
        read_genotypes(bed)


def test_ragged_numeric(tmp_path: Path) -> None:
    p = tmp_path / "g.csv"
    p.write_text("id,m1,m2,m3\na,0,1,2\nb,0,1\nc,2,2,2\n")
    with pytest.raises(DataError) as e:
        read_genotypes(p)
    assert "ragged" in _msg(e) and "line 3 has 3 fields" in _msg(e) and str(p) in _msg(e)


def test_values_outside_012(tmp_path: Path) -> None:
    p = tmp_path / "g.csv"
    p.write_text("id,m1,m2\na,0,3\nb,1,1\n")
    with pytest.raises(DataError) as e:
        read_genotypes(p)
    assert "value 3" in _msg(e) and "0/1/2" in _msg(e)
    p.write_text("id,m1,m2\na,0,0.37\nb,1,1\n")
    with pytest.raises(DataError, match="not a genotype code"):
        read_genotypes(p)
    p.write_text("id,m1,m2\na,-1,2\nb,1,1\n")
    with pytest.raises(DataError, match="mixes -1 and 2"):
        read_genotypes(p)


def test_non_numeric_entry(tmp_path: Path) -> None:
    p = tmp_path / "g.csv"
    p.write_text("id,m1,m2\na,0,1\nb,1,AB\n")
    with pytest.raises(DataError, match="non-numeric value 'AB'"):
        read_genotypes(p)


def test_duplicate_sample_ids(tmp_path: Path) -> None:
    p = tmp_path / "g.csv"
    p.write_text("id,m1,m2\na,0,1\na,1,2\n")
    with pytest.raises(DataError, match="duplicated sample"):
        read_genotypes(p)


def test_empty_and_unknown_files(tmp_path: Path) -> None:
    (tmp_path / "e.csv").write_text("")
    with pytest.raises(DataError, match="empty"):
        read_genotypes(tmp_path / "e.csv")
    (tmp_path / "x.weird").write_text("hello")
    with pytest.raises(DataError, match="cannot tell the genotype format"):
        read_genotypes(tmp_path / "x.weird")
    with pytest.raises(DataError, match="not found"):
        read_genotypes(tmp_path / "nope.vcf")
    (tmp_path / "v.vcf").write_text("id,m1\na,0\n")
    with pytest.raises(DataError, match="not a VCF"):
        read_genotypes(tmp_path / "v.vcf")
    (tmp_path / "h.hmp.txt").write_text("a\tb\tc\n1\t2\t3\n")
    with pytest.raises(DataError, match="not a HapMap"):
        read_genotypes(tmp_path / "h.hmp.txt")


def test_bad_hapmap_code(tmp_path: Path) -> None:
    head = "rs#\talleles\tchrom\tpos\tstrand\tassembly#\tcenter\tprotLSID\tassayLSID\tpanel\tQCcode\tL1\tL2"
    p = tmp_path / "t.hmp.txt"
    p.write_text(head + "\nm1\tA/G\t1\t10\t+\tNA\tNA\tNA\tNA\tNA\tNA\tAA\tQ\n")
    with pytest.raises(DataError, match="unknown one-letter genotype code 'Q'"):
        read_genotypes(p)


def test_phenotype_ids_no_overlap(tmp_path: Path) -> None:
    p = tmp_path / "p.csv"
    p.write_text("id,h\nx1,1\nx2,2\n")
    with pytest.raises(DataError) as e:
        join_phenotypes(_small_geno(), read_phenotypes(p), "h")
    assert "no sample IDs in common" in _msg(e) and "x1" in _msg(e) and "a, b, c" in _msg(e)
    assert str(p) in _msg(e)


def test_trait_not_found_lists_available(tmp_path: Path) -> None:
    p = tmp_path / "p.csv"
    p.write_text("id,height,yield,grp\na,1,2,A\nb,2,3,B\n")
    with pytest.raises(DataError) as e:
        join_phenotypes(_small_geno(), read_phenotypes(p), "weight")
    assert "'weight' not found" in _msg(e) and "height, yield" in _msg(e)
    with pytest.raises(DataError, match="not numeric"):
        join_phenotypes(_small_geno(), read_phenotypes(p), "grp")


def test_phenotype_bad_inputs(tmp_path: Path) -> None:
    p = tmp_path / "p.csv"
    p.write_text("id,h\na,1\na,2\n")
    with pytest.raises(DataError, match="duplicated sample IDs"):
        read_phenotypes(p)
    p.write_text("id,h\na,1\n")
    with pytest.raises(DataError, match="ID column 'ID' not found"):
        read_phenotypes(p, id_column="ID")
    (tmp_path / "e.csv").write_text("\n")
    with pytest.raises(DataError, match="empty"):
        read_phenotypes(tmp_path / "e.csv")


def test_qc_and_encoding_bad_arguments() -> None:
    g = _small_geno()
    with pytest.raises(DataError, match="min_maf"):
        run_qc(g, min_maf=0.7)
    mono = _small_geno()
    mono.calls[:] = 2
    with pytest.raises(DataError, match="every marker"):
        run_qc(mono, min_maf=0.01)
    with pytest.raises(DataError, match="codes other than"):
        additive(np.array([[0, 5]], np.int8))
    with pytest.raises(DataError, match="2-D"):
        one_hot(np.zeros(3, np.int8))


# ----------------------------------------------------------------------------- property-based

_EXTS = ["x.bed", "x.vcf", "x.vcf.gz", "x.hmp.txt", "x.csv", "x.tsv", "x.txt"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.one_of(
        st.binary(min_size=0, max_size=400),
        st.text(alphabet="0129-,.;\t\n \rANGCTRY#<>rs/id", max_size=300).map(str.encode),
    ),
    ext=st.sampled_from(_EXTS),
)
def test_random_bytes_raise_only_data_error(tmp_path: Path, data: bytes, ext: str) -> None:
    p = tmp_path / ext
    p.write_bytes(data)
    if ext == "x.bed":
        (tmp_path / "x.bim").write_bytes(data[:50])
        (tmp_path / "x.fam").write_bytes(data[50:100])
    with contextlib.suppress(DataError):
        read_genotypes(p)
    with contextlib.suppress(DataError):
        read_phenotypes(p)


@pytest.mark.shared_data
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frac=st.floats(min_value=0.0, max_value=0.98), which=st.sampled_from(["hmp", "vcf", "bed", "x"]))
def test_truncated_real_files_raise_only_data_error(tmp_path: Path, shared_data: Path, frac: float, which: str) -> None:
    d = shared_data / "genotype"
    src = {
        "hmp": d / "maize282_hapmap" / "mdp_genotype.hmp.txt",
        "vcf": d / "sorghum_sbdiv_vcf" / "example_genotypes.vcf.gz",
        "bed": d / "rice44k_plink" / "UNL.bed",
        "x": d / "wheat599_numeric" / "wheat.X",
    }[which]
    raw = src.read_bytes()
    if which == "vcf":  # truncate the text inside too, not only the compressed stream
        raw = gzip.compress(gzip.decompress(raw)[: int(frac * 2_000_000)]) if frac > 0.5 else raw
    cut = raw[: int(len(raw) * frac)] if which != "vcf" or frac <= 0.5 else raw
    out = tmp_path / src.name
    out.write_bytes(cut)
    if which == "bed":
        for ext in (".bim", ".fam"):
            shutil.copy(src.with_suffix(ext), out.with_suffix(ext))
    try:
        g = read_genotypes(out)
    except DataError:
        return
    assert g.calls.dtype == np.int8  # a truncated text file may still be a valid (smaller) matrix


def test_plink_text_formats_point_to_conversion(tmp_path: Path) -> None:
    (tmp_path / "x.ped").write_text("f1 i1 0 0 0 -9 A A\n")
    with pytest.raises(DataError, match="make-bed"):
        read_genotypes(tmp_path / "x.ped")
