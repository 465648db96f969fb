"""Deep + GBLUP ensemble: the weight comes from inner validation lines of the training fold only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app.data.genotype import GenotypeMatrix
from app.engine.gp.base import FitNotes
from app.engine.gp.cv import make_folds, run_cv
from app.engine.gp.ensemble import SHRINK_LINES, choose_weight, fit_ensemble, shrink_weight
from app.engine.gp.jobs import ensemble_spec, load_model, model_spec


def test_weight_follows_the_better_predictor() -> None:
    rng = np.random.default_rng(0)
    y = rng.normal(size=200)
    good, bad = y + rng.normal(0, 0.3, 200), rng.normal(size=200)
    assert choose_weight(good, bad, y)[0] >= 0.9  # the deep side is the good one
    assert choose_weight(bad, good, y)[0] <= 0.1
    w, rs = choose_weight(good, good.copy(), y)  # identical parts: every weight ties, an even blend
    assert w == 0.5 and np.allclose(rs, rs[0])


def test_blend_weight_is_shrunk_towards_gblup_by_the_lines_behind_it() -> None:
    """A deep model that is perfect on its 20 inner validation lines wins the grid (w 1.0), but 20 lines are
    little evidence: the weight kept is 1.0 * 20 / (20 + SHRINK_LINES), and more lines shrink it less."""
    from app.engine.gp.gblup import fit_gblup

    geno, y = _toy()
    pos = {s: i for i, s in enumerate(geno.samples)}

    class Oracle:  # predicts the observed phenotype of every line: the best possible deep model
        def __init__(self, n_val: int) -> None:
            self.notes = FitNotes(info={"inner_val_samples": [list(geno.samples[:n_val])]})

        def member_predict(self, member: int, g: GenotypeMatrix) -> np.ndarray:
            return y[[pos[s] for s in g.samples]]

    few = fit_ensemble("b", geno, y, None, Oracle(20), fit_gblup=fit_gblup)
    assert few.notes.info["weight_best_inner"] == 1.0 and few.notes.info["inner_val_lines"] == 20
    assert few.weight == pytest.approx(20 / (20 + SHRINK_LINES), abs=1e-4) and few.weight < 0.5
    more = fit_ensemble("b", geno, y, None, Oracle(80), fit_gblup=fit_gblup)
    assert few.weight < more.weight == pytest.approx(80 / (80 + SHRINK_LINES), abs=1e-4)
    assert shrink_weight(0.6, 0) == 0.0 and shrink_weight(0.0, 500) == 0.0


def _toy(n: int = 90, m: int = 40) -> tuple[GenotypeMatrix, np.ndarray]:
    rng = np.random.default_rng(3)
    calls = rng.binomial(2, 0.4, size=(n, m)).astype(np.int8)
    y = calls[:, :4].sum(axis=1) + rng.normal(0, 1, n)
    markers = pd.DataFrame({"id": [f"m{j}" for j in range(m)], "chrom": "1", "pos": np.arange(m), "ref": "A",
                            "alt": "C"})
    return GenotypeMatrix(calls, [f"L{i}" for i in range(n)], markers), y


def test_ensemble_in_cv_is_a_blend_of_its_parts_on_the_same_folds(tmp_path: Path) -> None:
    geno, y = _toy()
    cfg = {"epochs": 4, "params": {"deepgs": {"ensemble": 2}}}
    specs = [model_spec("gblup", cfg), model_spec("deepgs", cfg), ensemble_spec("deepgs")]
    res = run_cv(geno, y, specs, make_folds(len(y), folds=3, repeats=2, seed=0))
    p = res.predictions
    ens = p[p.model == "GBLUP+DeepGS"].reset_index(drop=True)
    g = p[p.model == "GBLUP"].reset_index(drop=True)
    d = p[p.model == "DeepGS"].reset_index(drop=True)
    assert list(ens.ID) == list(g.ID) == list(d.ID)  # the same folds and lines
    # each fold's prediction is w * deep + (1 - w) * GBLUP with one w in [0, 1] per fold
    for (_, _), grp in ens.groupby(["repeat", "fold"]):
        i = grp.index
        den = d.predicted[i] - g.predicted[i]
        w = np.median((grp.predicted - g.predicted[i]) / den)
        assert 0.0 <= w <= 1.0
        np.testing.assert_allclose(grp.predicted, w * d.predicted[i] + (1 - w) * g.predicted[i], atol=1e-9)
    s = res.models["GBLUP+DeepGS"]
    assert s["vs_gblup"]["n"] == 2 and s["vs_gblup"]["verdict"]


def test_saved_ensemble_predicts_the_same(tmp_path: Path) -> None:
    from app.engine.gp.deep import fit_deepgs
    from app.engine.gp.ensemble import fit_ensemble
    from app.engine.gp.gblup import fit_gblup

    geno, y = _toy()
    deep = fit_deepgs(geno, y, params={"epochs": 3, "ensemble": 2}, seed=1)
    model = fit_ensemble("GBLUP+DeepGS", geno, y, fit_gblup(geno, y), deep, fit_gblup=fit_gblup, seed=1)
    assert model.notes.info["inner_val_lines"] == sum(len(v) for v in deep.notes.info["inner_val_samples"])
    model.save(tmp_path / "ens")
    back = load_model(tmp_path / "ens")
    np.testing.assert_allclose(back.predict(geno), model.predict(geno), rtol=1e-6)


def _train_blend(tmp_path: Path, pheno: pd.DataFrame, name: str) -> Path:
    from app.data.demo import genotype_demo_paths
    from app.engine.gp.jobs import train

    ppath = tmp_path / f"{name}.csv"
    pheno.to_csv(ppath, index=False)
    run = tmp_path / name
    res = train({"geno": str(genotype_demo_paths()["geno"]), "pheno": str(ppath), "trait": "trait",
                 "models": ["gblup+deepgs"], "epochs": 3, "params": {"deepgs": {"ensemble": 2}},
                 "max_markers": 300, "max_lines": 150, "seed": 2, "device": "cpu", "run_dir": str(run)})
    assert res.models == ["GBLUP+DeepGS"] and 0 <= res.fits["GBLUP+DeepGS"]["weight_deep"] <= 1
    return run


def test_trained_blend_weight_never_sees_held_out_lines(tmp_path: Path) -> None:
    """``gp train --model gblup+deepgs``: the weight comes from inner validation lines of the training
    lines; the phenotypes of lines left out of training (``max_lines``) change nothing."""
    from app.data.demo import genotype_demo_paths

    pheno = pd.read_csv(genotype_demo_paths()["pheno"])
    run = _train_blend(tmp_path, pheno, "a")
    doc = json.loads((run / "gp_model.json").read_text())
    assert doc["models"] == ["GBLUP+DeepGS"] and doc["n_train"] == 150
    gebv = pd.read_csv(run / "gebv.csv")
    train_ids = set(gebv.ID[gebv.training])
    held = pheno.id.isin(set(gebv.ID[~gebv.training]))
    assert held.sum() == 400 - 150
    ens = json.loads((run / "models" / "GBLUP+DeepGS" / "ensemble.json").read_text())
    assert 0.0 <= ens["weight_deep"] <= 1.0 and ens["info"]["inner_val_lines"] > 0
    deep_info = load_model(run / "models" / "GBLUP+DeepGS" / "deep").notes.info
    val_ids = {s for ids in deep_info["inner_val_samples"] for s in ids}
    assert val_ids and val_ids <= train_ids  # chosen on training lines only
    assert sum(len(v) for v in deep_info["inner_val_samples"]) == ens["info"]["inner_val_lines"]

    other = pheno.copy()  # scramble the held-out lines' phenotypes: nothing of the fit may move
    other.loc[held, "trait"] = np.random.default_rng(9).normal(50, 30, int(held.sum()))
    run_b = _train_blend(tmp_path, other, "b")
    ens_b = json.loads((run_b / "models" / "GBLUP+DeepGS" / "ensemble.json").read_text())
    assert ens_b["weight_deep"] == ens["weight_deep"]
    assert ens_b["info"]["inner_val_r_by_weight"] == ens["info"]["inner_val_r_by_weight"]
    gebv_b = pd.read_csv(run_b / "gebv.csv")
    np.testing.assert_allclose(gebv_b["GBLUP+DeepGS"], gebv["GBLUP+DeepGS"], rtol=1e-6, atol=1e-6)
