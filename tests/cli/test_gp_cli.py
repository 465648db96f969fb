"""``python -m app gp cv|train|predict`` end to end on the bundled demo, and bad input as one clear error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app.data.demo import genotype_demo_paths
from app.data.errors import DataError
from app.data.genotype import read_genotypes, read_phenotypes, write_vcf
from app.engine.gp.jobs import model_params, resolve_models, resolve_trait

REPO = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("runs_root")


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from app.cli import main

    rc = main(args)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_cv_all_models_on_the_demo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = genotype_demo_paths()
    run = tmp_path / "cv"
    rc, out, err = _cli(["gp", "cv", "--geno", str(d["geno"]), "--pheno", str(d["pheno"]), "--trait", "trait",
                         "--model", "all", "--folds", "3", "--group", "family", "--epochs", "2",
                         "--max-markers", "300", "--max-lines", "90", "--device", "cpu", "--out", str(run),
                         "--quiet"], capsys)
    assert rc == 0, err[-3000:]
    m = json.loads((run / "metrics.json").read_text())
    assert set(m["models"]) == {"GBLUP", "DNNGP", "DeepGS", "DLGWAS"}
    for s in m["models"].values():
        assert {"pearson_mean", "pearson_folds", "spearman_mean", "rmse_mean", "seconds", "pearson_sd",
                "ndcg1_mean", "ndcg10_mean"} <= set(s)
        assert len(s["pearson_folds"]) == 3
    assert m["n_lines"] == 90 and m["n_markers"] == 300 and m["group"] == "family"
    assert m["join"]["n_both"] == 400
    preds = pd.read_csv(run / "predictions.csv")
    assert list(preds.columns) == ["ID", "fold", "repeat", "model", "observed", "predicted"]
    assert len(preds) == 4 * 90
    fam = read_phenotypes(d["pheno"])["family"]
    for _, grp in preds[preds.model == "GBLUP"].groupby("fold"):  # grouped: a family sits in one fold
        others = preds[(preds.model == "GBLUP") & (preds.fold != grp.fold.iloc[0])]
        assert not set(fam.loc[grp.ID]) & set(fam.loc[others.ID])
    imp = pd.read_csv(run / "importance.csv")
    assert list(imp.columns) == ["marker", "chrom", "pos", "model", "importance"]
    assert "GBLUP" in set(imp.model) and (imp.groupby("model").size() == 300).all()
    # the printed table names every model with its mean r
    for name, s in m["models"].items():
        line = next(ln for ln in out.splitlines() if ln.startswith(name + " "))
        assert f"{s['pearson_mean']:.3f}" in line


def test_train_then_predict_new_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = genotype_demo_paths()
    pheno = pd.read_csv(d["pheno"])
    pheno.loc[pheno.index[::8], "trait"] = np.nan  # 50 lines without a phenotype: their GEBVs are wanted
    ppath = tmp_path / "pheno.csv"
    pheno.to_csv(ppath, index=False)
    run = tmp_path / "train"
    rc, out, err = _cli(["gp", "train", "--geno", str(d["geno"]), "--pheno", str(ppath), "--trait", "TRAIT",
                         "--model", "gblup,DNNGP", "--epochs", "2", "--max-markers", "400", "--device", "cpu",
                         "--out", str(run), "--quiet"], capsys)
    assert rc == 0, err[-3000:]
    assert "350 lines" in out
    gebv = pd.read_csv(run / "gebv.csv")
    assert len(gebv) == 400 and {"GBLUP", "DNNGP", "phenotyped", "observed"} <= set(gebv.columns)
    assert (~gebv.phenotyped).sum() == 50
    new = pd.read_csv(run / "gebv_unphenotyped.csv")
    assert sorted(new.ID) == sorted(pheno.id[pheno.trait.isna()])
    assert (run / "models" / "GBLUP" / "weights.safetensors").is_file()
    assert (run / "models" / "DNNGP").is_dir()
    assert not list(run.rglob("*.pkl")) and not list(run.rglob("*.pt"))

    # new lines in another format, markers in another order: the same genotypes give the same GEBVs
    geno = read_genotypes(d["geno"])
    rows = [geno.samples[i] for i in range(0, 400, 8)]
    order = np.random.default_rng(0).permutation(geno.n_markers)
    vcf = write_vcf(geno.subset(samples=rows, markers=order), tmp_path / "new.vcf")
    out_csv = tmp_path / "preds.csv"
    rc, out, err = _cli(["gp", "predict", "--model", str(run), "--geno", str(vcf), "--out", str(out_csv),
                         "--device", "cpu", "--quiet"], capsys)
    assert rc == 0, err[-3000:]
    assert "400 of 400 model markers found" in out
    pred = pd.read_csv(out_csv).set_index("ID")
    ref = gebv.set_index("ID").loc[rows]
    assert list(pred.index) == rows
    assert np.allclose(pred.GBLUP, ref.GBLUP, atol=1e-8)
    assert np.allclose(pred.DNNGP, ref.DNNGP, atol=1e-5)


def _sub(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMICSLAB_RUNS_DIR": str(tmp_path / "runs")}
    return subprocess.run([sys.executable, "-m", "app", *args], cwd=REPO, capture_output=True, text=True, env=env,
                          timeout=300)


def test_bad_input_is_one_clear_error_with_exit_code_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = genotype_demo_paths()
    base = ["gp", "cv", "--geno", str(d["geno"]), "--pheno", str(d["pheno"]), "--out", str(tmp_path / "r"),
            "--quiet", "--device", "cpu"]
    # the real entry point: an unknown trait is one message listing the traits, exit code 2
    p = _sub([*base, "--trait", "yield_t_ha", "--model", "gblup"], tmp_path)
    assert p.returncode == 2, p.stderr
    assert p.stderr.startswith("error: ") and "yield_t_ha" in p.stderr and "true_gv" in p.stderr
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 2  # problem + what to do
    # checked before any job starts
    for extra, words in ((["--trait", "trait", "--model", "xgboost"], "unknown model"),
                         (["--trait", "trait", "--group", "farm"], "farm"),
                         (["--trait", "trait", "--folds", "1"], "--folds"),
                         (["--trait", "trait", "--geno", str(tmp_path / "none.bed")], "not found")):
        rc, _, err = _cli([*base, *extra], capsys)
        assert rc == 2 and words in err and "Traceback" not in err
    rc, _, err = _cli(["gp", "predict", "--model", str(tmp_path), "--geno", str(d["geno"]), "--out",
                       str(tmp_path / "p.csv"), "--quiet"], capsys)
    assert rc == 2 and "gp_model.json" in err and "gp train" in err


def test_model_names_trait_names_and_gui_settings() -> None:
    assert resolve_models(["GBLUP", "DeepGS", "dnngp"]) == ["gblup", "deepgs", "dnngp"]
    assert resolve_models("all") == ["gblup", "dnngp", "deepgs", "dlgwas"]
    with pytest.raises(DataError, match="unknown model"):
        resolve_models(["BayesB"])
    pheno = read_phenotypes(genotype_demo_paths()["pheno"])
    assert resolve_trait(pheno, "TRAIT") == "trait" and resolve_trait(pheno, "1") == "trait"
    with pytest.raises(DataError, match="true_gv"):
        resolve_trait(pheno, "height")
    gui = {"epochs": 30, "batch_size": 32, "lr": 1e-3, "params": {"DNNGP": {"preset": "v3"}}}
    assert model_params("gblup", gui) == {}
    assert model_params("deepgs", gui) == {"epochs": 30, "batch_size": 32, "lr": 1e-3}
    assert model_params("dnngp", gui) == {"epochs": 30, "batch_size": 32, "lr": 1e-3, "preset": "v3"}
