"""Genomic prediction on every shared genotype dataset, in its own format, and GBLUP's wheat599 calibration.

* ``gp cv`` through the CLI (GBLUP + one deep model at tiny epochs, on a subset where the data are wide);
* train on the phenotyped lines and predict lines read back from the same file: GEBVs agree;
* GBLUP 10-fold x 5 repeats on wheat599 within 0.03 of the README's reference r for E1..E4.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from app.engine.gp.cv import ModelSpec, make_folds, run_cv
from app.engine.gp.gblup import fit_gblup
from app.engine.gp.jobs import load_inputs, predict, train

pytestmark = pytest.mark.shared_data

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


@pytest.fixture(autouse=True)
def _runs_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMICSLAB_RUNS_DIR", str(tmp_path / "runs"))


@pytest.mark.parametrize("name", list(DATASETS))
def test_cli_cv_then_train_and_predict(name: str, shared_data: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    from app.cli import main

    geno_f, pheno_f, trait, deep, extra, n_lines, how = DATASETS[name]
    d = shared_data / "genotype" / name
    geno, pheno = str(d / geno_f), str(d / pheno_f)
    run = tmp_path / "cv"
    rc = main(["gp", "cv", "--geno", geno, "--pheno", pheno, "--trait", trait, "--model", f"gblup,{deep}",
               "--folds", "2", "--epochs", "2", "--device", "cpu", "--out", str(run), "--quiet", *extra])
    out = capsys.readouterr()
    assert rc == 0, out.err[-3000:]
    m = json.loads((run / "metrics.json").read_text())
    assert m["n_lines"] == n_lines and m["join"]["how"] == how
    if name == "wheat599_numeric":
        assert m["trait"] == "E3" and m["coding"] == "binary"  # ID-less wheat.Y: column 3 is E3
    assert len(m["models"]) == 2 and all(len(s["pearson_folds"]) == 2 for s in m["models"].values())
    # GBLUP predicts every one of these traits (README: r 0.47-0.82 with all lines)
    assert m["models"]["GBLUP"]["pearson_mean"] > 0.15, m["models"]["GBLUP"]
    preds = pd.read_csv(run / "predictions.csv")
    assert len(preds) == 2 * n_lines and preds.predicted.notna().all()

    # train (GBLUP, fast) on a quick subset of lines, then predict the same file: the same GEBVs
    cfg: dict[str, Any] = {"geno": geno, "pheno": pheno, "trait": trait, "models": ["GBLUP"], "device": "cpu",
                           "run_dir": str(tmp_path / "train"), "max_markers": 1500, "max_lines": 120}
    res = train(cfg)
    gebv = pd.read_csv(res["gebv_csv"], dtype={"ID": str})
    assert gebv.training.sum() == 120 and len(gebv) == res["n_genotyped"]
    p = predict({"model": res["run_dir"], "geno": geno, "out": str(tmp_path / "new.csv"), "device": "cpu"})
    new = pd.read_csv(p["predictions_csv"], dtype={"ID": str})
    assert res["n_markers"] == (1279 if name == "wheat599_numeric" else 1500)  # wheat has fewer than 1500
    assert p["align"]["n_matched"] == p["align"]["n_reference"] == res["n_markers"]
    assert list(new.ID) == list(gebv.ID) and np.allclose(new.GBLUP, gebv.GBLUP, atol=1e-8)


# README of wheat599_numeric: REML GBLUP, 10-fold CV Pearson r, mean of 5 repeats
WHEAT_REFERENCE = {"E1": 0.512, "E2": 0.505, "E3": 0.389, "E4": 0.472}


def test_wheat599_gblup_matches_the_readme(shared_data: Path) -> None:
    d = shared_data / "genotype" / "wheat599_numeric"
    got = {}
    for env, ref in WHEAT_REFERENCE.items():
        inp = load_inputs({"geno": str(d / "wheat.X"), "pheno": str(d / "wheat.Y"), "trait": env})
        folds = make_folds(len(inp.ids), folds=10, repeats=5, seed=0)
        res = run_cv(inp.geno_y, inp.y, [ModelSpec("GBLUP", fit_gblup)], folds)
        got[env] = res.models["GBLUP"]["pearson_mean"]
        assert abs(got[env] - ref) <= 0.03, (env, got[env], ref)
    print("wheat599 GBLUP 10x5:", {k: round(v, 3) for k, v in got.items()})
