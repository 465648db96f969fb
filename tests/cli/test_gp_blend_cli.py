"""``gp train --model gblup+deepgs`` then ``gp predict``: the blend's weight is saved with the model and applied
to new lines; a damaged or foreign model folder is one clear message."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app.data.demo import genotype_demo_paths

pytestmark = pytest.mark.usefixtures("runs_root")


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from app.cli import main

    rc = main(args)
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture(scope="module")
def blend_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One train run with GBLUP, DeepGS and their blend on the demo (few markers and epochs)."""
    from app.engine.gp.jobs import train

    d = genotype_demo_paths()
    run = tmp_path_factory.mktemp("blend") / "train"
    train({"geno": str(d["geno"]), "pheno": str(d["pheno"]), "trait": "trait",
           "models": ["gblup", "deepgs", "GBLUP+DeepGS"], "epochs": 3, "params": {"deepgs": {"ensemble": 2}},
           "max_markers": 300, "device": "cpu", "run_dir": str(run)})
    return run


def test_predict_applies_the_saved_weight(blend_run: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "train"
    shutil.copytree(blend_run, run)
    d = genotype_demo_paths()
    out_csv = tmp_path / "p.csv"
    rc, _, err = _cli(["gp", "predict", "--model", str(run), "--geno", str(d["geno"]), "--out", str(out_csv),
                         "--quiet"], capsys)
    assert rc == 0, err[-3000:]
    pred = pd.read_csv(out_csv)
    assert list(pred.columns) == ["ID", "GBLUP", "DeepGS", "GBLUP+DeepGS"]
    gebv = pd.read_csv(run / "gebv.csv")
    np.testing.assert_allclose(pred["GBLUP+DeepGS"], gebv["GBLUP+DeepGS"], rtol=1e-5, atol=1e-6)
    folder = run / "models" / "GBLUP+DeepGS"
    doc = json.loads((folder / "ensemble.json").read_text())
    w = doc["weight_deep"]
    # its parts are the run's own GBLUP and DeepGS fits (same lines, same seed)
    np.testing.assert_allclose(pred["GBLUP+DeepGS"], w * pred.DeepGS + (1 - w) * pred.GBLUP, rtol=1e-5, atol=1e-6)

    doc["weight_deep"] = 0.3 if abs(w - 0.3) > 0.1 else 0.8  # predict reads the weight saved in the folder
    (folder / "ensemble.json").write_text(json.dumps(doc))
    rc, _, err = _cli(["gp", "predict", "--model", str(run), "--geno", str(d["geno"]), "--out", str(out_csv),
                       "--models", "gblup+deepgs", "--quiet"], capsys)
    assert rc == 0, err[-3000:]
    again = pd.read_csv(out_csv)
    assert list(again.columns) == ["ID", "GBLUP+DeepGS"]
    w2 = doc["weight_deep"]
    np.testing.assert_allclose(again["GBLUP+DeepGS"], w2 * pred.DeepGS + (1 - w2) * pred.GBLUP, rtol=1e-5,
                               atol=1e-6)
    assert not np.allclose(again["GBLUP+DeepGS"], pred["GBLUP+DeepGS"])


@pytest.mark.parametrize("damage, words", [
    ("weight", "not in [0, 1]"),
    ("format", "not a GP ensemble description"),
    ("json", "unreadable ensemble description"),
    ("no_deep", "no deep/ model folder"),
    ("foreign_part", "no model.json in the model folder"),
])
def test_damaged_blend_folder_is_one_clear_error(blend_run: Path, tmp_path: Path, damage: str, words: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "train"
    shutil.copytree(blend_run, run)
    folder = run / "models" / "GBLUP+DeepGS"
    doc = json.loads((folder / "ensemble.json").read_text())
    if damage == "weight":
        doc["weight_deep"] = 1.7
    elif damage == "format":
        doc["format"] = "something-else"
    if damage in ("weight", "format"):
        (folder / "ensemble.json").write_text(json.dumps(doc))
    elif damage == "json":
        (folder / "ensemble.json").write_text("{not json")
    elif damage == "no_deep":
        shutil.rmtree(folder / "deep")
    else:  # a folder of something else where the deep part should be
        shutil.rmtree(folder / "deep")
        (folder / "deep").mkdir()
        (folder / "deep" / "notes.txt").write_text("not a model")
    out_csv = tmp_path / "p.csv"
    rc, _, err = _cli(["gp", "predict", "--model", str(run), "--geno", str(genotype_demo_paths()["geno"]),
                       "--out", str(out_csv), "--quiet"], capsys)
    assert rc == 2, err[-3000:]
    assert err.startswith("error: ") and words in err and "Traceback" not in err
    assert not out_csv.exists()  # no half-written predictions


def test_blend_names_in_train_and_predict_settings() -> None:
    from app.data.errors import DataError
    from app.engine.gp.job_configs import GPCVConfig, GPTrainConfig

    base = {"geno": "g", "pheno": "p", "trait": "t", "run_dir": "r"}
    assert GPTrainConfig.from_dict({**base, "models": ["GBLUP+DeepGS", "gblup"]}).models == ("gblup+deepgs", "gblup")
    with pytest.raises(DataError, match="unknown model"):
        GPTrainConfig.from_dict({**base, "models": ["gblup+gblup"]})
    with pytest.raises(DataError, match="unknown model"):  # cv scores blends through its ensemble setting
        GPCVConfig.from_dict({**base, "models": ["gblup+deepgs"]})
