"""Reliability campaign, genotypes: the orientation comes from the phenotype join (then the corner word, then
the shape) and can be chosen; inputs that cannot give a meaningful r are refused with what to do."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from campaign import assert_refused, cli, geno_csv, pheno_csv

from app.cli import main
from app.data.errors import DataError
from app.data.genotype import pheno_id_candidates, read_genotypes, read_phenotypes
from app.data.sniff import detect_kind


def _cv(g: Path, ph: Path, out: Path, *extra: str) -> list[str]:
    return ["gp", "cv", "--geno", str(g), "--pheno", str(ph), "--trait", "yield", "--model", "gblup",
            "--folds", "3", "--out", str(out), "--inline", "--quiet", *extra]


# -- 3. orientation -----------------------------------------------------------------------------
def test_lines_as_rows_with_an_id_corner_and_more_lines_than_markers(tmp_path: Path, capsys) -> None:
    # 60 lines x 30 markers, corner "ID": the shape alone says "markers x samples" (wrong)
    g, calls, lines = geno_csv(tmp_path / "geno.csv", n_lines=60, n_markers=30)
    ph = pheno_csv(tmp_path / "pheno.csv", lines, calls)
    geno = read_genotypes(g, sample_ids=pheno_id_candidates(read_phenotypes(ph)))
    assert geno.samples == lines and geno.n_markers == 30
    np.testing.assert_array_equal(geno.calls, calls)
    assert any("from the phenotype join: 60 row IDs are phenotype IDs" in n for n in geno.notes)
    # inspect and gp cv use the same rule, and say which rule decided
    assert main(["inspect", str(g), "--pheno", str(ph)]) == 0
    out = capsys.readouterr().out
    assert "60 samples x 30 markers" in out and "from the phenotype join" in out
    p = cli(_cv(g, ph, tmp_path / "run"), tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "from the phenotype join" in (tmp_path / "run" / "log.txt").read_text()
    # without phenotypes the shape decides (and the note says how to override); --orientation overrides
    assert read_genotypes(g).n_samples == 30
    assert main(["inspect", str(g), "--orientation", "samples_x_markers"]) == 0
    out = capsys.readouterr().out
    assert "60 samples x 30 markers" in out and "orientation chosen" in out


def test_orientation_option_wins_over_the_join(tmp_path: Path) -> None:
    g, calls, lines = geno_csv(tmp_path / "geno.csv", n_lines=60, n_markers=30)
    ph = pheno_csv(tmp_path / "pheno.csv", lines, calls)
    p = cli(_cv(g, ph, tmp_path / "run", "--orientation", "markers_x_samples"), tmp_path)
    # read transposed on purpose: the lines are then markers, so nothing joins -- said, with the way out
    assert_refused(p, "no sample IDs in common", "--orientation")


def test_markers_as_rows_are_found_by_the_join_too(tmp_path: Path) -> None:
    g, calls, lines = geno_csv(tmp_path / "geno.csv", n_lines=20, n_markers=50, lines_as_rows=False)
    ph = pheno_csv(tmp_path / "pheno.csv", lines, calls)
    geno = read_genotypes(g, sample_ids=pheno_id_candidates(read_phenotypes(ph)))
    assert geno.samples == lines and geno.n_markers == 50
    assert any("column IDs are phenotype IDs" in n for n in geno.notes)


# -- 4. inputs that cannot give a meaningful result --------------------------------------------------
def test_all_missing_genotypes_csv_and_vcf_are_refused(tmp_path: Path) -> None:
    g, calls, lines = geno_csv(tmp_path / "geno.csv")
    ph = pheno_csv(tmp_path / "pheno.csv", lines, calls)
    df = pd.read_csv(g, index_col=0).astype(float)
    df[:] = np.nan
    df.to_csv(tmp_path / "missing.csv", na_rep="NA")
    p = cli(_cv(tmp_path / "missing.csv", ph, tmp_path / "run1"), tmp_path)
    assert_refused(p, "every genotype call", "is missing", "missing-value code")
    header = "\t".join(["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO", "FORMAT", *lines])
    rows = [f"1\t{100 + j}\tsnp{j}\tA\tG\t.\tPASS\t.\tGT\t" + "\t".join(["./."] * len(lines)) for j in range(20)]
    vcf = tmp_path / "missing.vcf.gz"
    vcf.write_bytes(gzip.compress(("##fileformat=VCFv4.2\n" + header + "\n" + "\n".join(rows) + "\n").encode()))
    p = cli(_cv(vcf, ph, tmp_path / "run2"), tmp_path)
    assert_refused(p, "every genotype call", "is missing")
    assert not (tmp_path / "run1" / "metrics.json").exists() and not (tmp_path / "run2" / "metrics.json").exists()


def test_all_monomorphic_markers_are_refused(tmp_path: Path) -> None:
    g, calls, lines = geno_csv(tmp_path / "geno.csv")
    ph = pheno_csv(tmp_path / "pheno.csv", lines, calls)
    df = pd.read_csv(g, index_col=0)
    df[:] = 2
    df.iloc[0, 0] = 0  # varies only in a line without a phenotype (below): still nothing to learn from
    df.to_csv(tmp_path / "mono.csv")
    pd.read_csv(ph).iloc[1:].to_csv(tmp_path / "pheno_rest.csv", index=False)
    p = cli(_cv(tmp_path / "mono.csv", tmp_path / "pheno_rest.csv", tmp_path / "run"), tmp_path)
    assert_refused(p, "every marker is monomorphic", "59 phenotyped lines")


def test_a_bad_code_is_a_genotype_error_at_its_true_location(tmp_path: Path, capsys) -> None:
    g, _, _ = geno_csv(tmp_path / "geno.csv", n_lines=12, n_markers=8)
    text = g.read_text().splitlines()
    # line 4 (3rd data row), 6th value -> file column 7; a larger bad code further down must not be the one named
    f = text[3].split(",")
    f[6] = "5"
    text[3] = ",".join(f)
    f = text[9].split(",")
    f[2] = "3"
    text[9] = ",".join(f)
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(text) + "\n")
    assert detect_kind(bad) == "genotype"
    with pytest.raises(DataError, match=r"value 5 at line 4, column 7 is not a genotype code"):
        read_genotypes(bad)
    assert main(["inspect", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "value 5 at line 4, column 7" in err and "Phenotype table" not in err


def test_hints_name_command_line_options_not_python_arguments(tmp_path: Path) -> None:
    g, _, _ = geno_csv(tmp_path / "geno.csv")
    pd.DataFrame({"ID": [f"X{i}" for i in range(10)], "yield": range(10)}).to_csv(tmp_path / "p.csv", index=False)
    p = cli(_cv(g, tmp_path / "p.csv", tmp_path / "run"), tmp_path)
    err = assert_refused(p, "--id-column", "--orientation")
    assert "id_column=" not in err and "read_phenotypes" not in err
    from app.engine.celllm.model_io import load_model

    (tmp_path / "m.pth").write_bytes(b"not read")
    with pytest.raises(DataError) as ei:
        load_model(tmp_path / "m.pth")
    assert "celllm import" not in str(ei.value) and "import_openbiomed_to" in str(ei.value)
