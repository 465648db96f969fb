"""Genomic prediction on every shared genotype dataset, in its own format, and GBLUP's wheat599 calibration.

* ``gp cv`` through the CLI (GBLUP + one deep model at tiny epochs, on a subset where the data are wide);
* ``gp train`` on a subset of the phenotyped lines, ``gp predict`` on the same file: GEBVs agree;
* GBLUP 10-fold x 5 repeats on wheat599 within 0.03 of the README's reference r for E1..E4.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app.engine.gp.cv import ModelSpec, make_folds, run_cv
from app.engine.gp.gblup import fit_gblup
from app.engine.gp.job_configs import GPCVConfig
from app.engine.gp.jobs import load_inputs

pytestmark = [pytest.mark.shared_data, pytest.mark.usefixtures("runs_root")]

# dataset -> (genotype file, phenotype file, trait, deep model, extra CLI options, expected lines, join)
DATASETS: dict[str, tuple[str, str, str, str, list[str], int, str]] = {
    "maize282_hapmap": ("mdp_genotype.hmp.txt", "mdp_traits.txt", "EarHT", "dlgwas",
                        ["--max-markers", "1000", "--max-lines", "150"], 150, "index"),
    "rice44k_plink": ("UNL", "44kPhenos.csv", "Plant.height", "deepgs",
                      ["--max-markers", "3000", "--max-lines", "150"], 150, "column PlinkIDs"),
    "sorghum_sbdiv_vcf": ("example_genotypes.vcf.gz", "example_phenotypes.csv", "DaysToFlower", "dnngp",
                          ["--max-markers", "2000", "--max-lines", "150"], 150, "index"),
    "wheat599_numeric": ("wheat.X", "wheat.Y", "3", "deepgs", ["--max-lines", "300"], 300, "index"),
}




@pytest.mark.parametrize("name", list(DATASETS))
def test_cli_cv_train_predict(name: str, shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Through ``app.cli.main`` with ``--inline`` (the job in this process: the spawned path is tested on the
    demo in test_gp_cli.py; here the formats matter, and a child's torch import per call would cost ~9 s CPU)."""
    from app.cli import main

    geno_f, pheno_f, trait, deep, extra, n_lines, how = DATASETS[name]
    d = shared_data / "genotype" / name
    geno, pheno = str(d / geno_f), str(d / pheno_f)
    common = ["--device", "cpu", "--quiet", "--inline"]
    run = tmp_path / "cv"
    rc = main(["gp", "cv", "--geno", geno, "--pheno", pheno, "--trait", trait, "--model", f"gblup,{deep}",
               "--folds", "2", "--epochs", "2", "--out", str(run), *common, *extra])
    out = capsys.readouterr()
    assert rc == 0, out.err[-3000:]
    m = json.loads((run / "metrics.json").read_text())
    assert m["n_lines"] == n_lines and m["join"]["how"] == how
    if name == "wheat599_numeric":
        assert m["trait"] == "E3" and m["coding"] == "binary"  # ID-less wheat.Y: column 3 is E3
    assert len(m["models"]) == 2 and all(len(s["pearson_folds"]) == 2 for s in m["models"].values())
    # GBLUP predicts every one of these traits (README: r 0.47-0.82 with all lines)
    assert m["models"]["GBLUP"]["pearson_mean"] > 0.15, m["models"]["GBLUP"]
    assert "GBLUP" in out.out and f"{m['models']['GBLUP']['pearson_mean']:.3f}" in out.out
    preds = pd.read_csv(run / "predictions.csv")
    assert len(preds) == 2 * n_lines and preds.predicted.notna().all()

    # train GBLUP on a subset of lines and markers, then predict the same file: the same GEBVs for every line
    train_dir, new_csv = tmp_path / "train", tmp_path / "new.csv"
    rc = main(["gp", "train", "--geno", geno, "--pheno", pheno, "--trait", trait, "--model", "GBLUP",
               "--max-markers", "1500", "--max-lines", "120", "--out", str(train_dir), *common])
    assert rc == 0, capsys.readouterr().err[-3000:]
    info = json.loads((train_dir / "gp_model.json").read_text())
    assert info["n_markers"] == (1279 if name == "wheat599_numeric" else 1500)  # wheat has fewer than 1500
    gebv = pd.read_csv(train_dir / "gebv.csv", dtype={"ID": str})
    assert gebv.training.sum() == 120 and len(gebv) == info["n_genotyped"]
    rc = main(["gp", "predict", "--model", str(train_dir), "--geno", geno, "--out", str(new_csv), *common])
    out = capsys.readouterr()
    assert rc == 0, out.err[-3000:]
    assert f"{info['n_markers']} of {info['n_markers']} model markers found" in out.out
    new = pd.read_csv(new_csv, dtype={"ID": str})
    assert list(new.ID) == list(gebv.ID) and np.allclose(new.GBLUP, gebv.GBLUP, atol=1e-8)


# README of wheat599_numeric: REML GBLUP, 10-fold CV Pearson r, mean of 5 repeats
WHEAT_REFERENCE = {"E1": 0.512, "E2": 0.505, "E3": 0.389, "E4": 0.472}


def test_wheat599_gblup_matches_the_readme(shared_data: Path) -> None:
    d = shared_data / "genotype" / "wheat599_numeric"
    got = {}
    for env, ref in WHEAT_REFERENCE.items():
        inp = load_inputs(GPCVConfig.from_dict({"geno": str(d / "wheat.X"), "pheno": str(d / "wheat.Y"), "trait": env}))
        folds = make_folds(len(inp.ids), folds=10, repeats=5, seed=0)
        res = run_cv(inp.geno_y, inp.y, [ModelSpec("GBLUP", fit_gblup)], folds)
        got[env] = res.models["GBLUP"]["pearson_mean"]
        assert abs(got[env] - ref) <= 0.03, (env, got[env], ref)
    print("wheat599 GBLUP 10x5:", {k: round(v, 3) for k, v in got.items()})


def test_bench_gp_json_is_one_object(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from app.bench.gp import main

    rc = main(["--json", "--suite", "panels", "--models", "gblup", "--datasets", "wheat599", "--traits", "E2",
               "--folds", "3", "--repeats", "1", "--data", str(shared_data), "--threads", "1"])
    out = capsys.readouterr().out.strip()
    assert rc == 0 and len(out.splitlines()) == 1
    doc = json.loads(out)
    (row,) = doc["rows"]
    assert row["trait"] == "E2" and row["n_lines"] == 599 and row["readme_gblup_10x5"] == 0.505
    assert 0.35 < row["models"]["GBLUP"]["pearson_mean"] < 0.65 and row["models"]["GBLUP"]["seconds"] >= 0
    assert main(["--datasets", "barley"]) == 2
