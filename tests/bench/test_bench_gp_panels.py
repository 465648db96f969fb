"""``bench gp --suite panels``: runs of one trait (one deep model each, GBLUP in each) merge into the README's
table; runs on different folds are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.bench.gp import main, markdown_table, merge_panel_runs


def _fig(repeat_means: list[float], vs: dict | None = None) -> dict:
    mean = sum(repeat_means) / len(repeat_means)
    return {"pearson_mean": mean, "pearson_mean_over_repeats": mean, "pearson_sd_over_repeats": 0.01,
            "pearson_repeat_means": repeat_means, "seconds": 1.0, "vs_gblup": vs}


def _doc(models: dict, load: float) -> dict:
    return {"folds": 5, "repeats": 3, "machine": {"load_1m_mean": load},
            "rows": [{"dataset": "wheat599", "trait": "E1", "n_lines": 599, "n_markers": 1279,
                      "readme_gblup_10x5": 0.512, "models": models}]}


def _toy_panel(seed: int) -> tuple:
    """90 simulated lines x 40 markers and a trait of the first four markers plus noise (seeded)."""
    import numpy as np
    import pandas as pd

    from app.data.genotype import GenotypeMatrix

    rng = np.random.default_rng(seed)
    calls = rng.binomial(2, 0.4, size=(90, 40)).astype(np.int8)
    y = calls[:, :4].sum(axis=1) + rng.normal(0, 1, 90)
    markers = pd.DataFrame({"id": [f"m{j}" for j in range(40)], "chrom": "1", "pos": np.arange(40), "ref": "A",
                            "alt": "C"})
    return GenotypeMatrix(calls, [f"L{i}" for i in range(90)], markers), y


def test_runs_of_one_trait_merge_into_one_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    g = _fig([0.50, 0.51, 0.52])
    vs = {"mean": 0.02, "low": 0.01, "high": 0.03}
    a = _doc({"GBLUP": g, "DeepGS": _fig([0.52, 0.53, 0.54], vs)}, 1.5)
    b = _doc({"GBLUP": g, "DNNGP": _fig([0.40, 0.41, 0.42], {"mean": -0.1, "low": -0.12, "high": -0.08})}, 3.0)
    rows = merge_panel_runs([a, b])
    assert len(rows) == 1 and set(rows[0]["models"]) == {"GBLUP", "DeepGS", "DNNGP"}
    table = markdown_table(rows).splitlines()
    assert len(table) == 3 and table[0].startswith("| panel | trait |")
    cells = [c.strip() for c in table[2].strip("|").split("|")]
    assert cells[:3] == ["wheat599", "E1", "599 x 1,279"]
    assert cells[3] == "0.510 ± 0.010"  # GBLUP
    assert cells[4] == "0.410 ± 0.010 (-0.100 [-0.120, -0.080])"  # DNNGP, behind GBLUP
    assert cells[5] == "0.530 ± 0.010 (+0.020 [+0.010, +0.030])"  # DeepGS
    assert cells[6] == "not run" and cells[-1] == "1.5-3.0"

    for i, d in enumerate((a, b)):  # the CLI twin reads saved --json outputs
        (tmp_path / f"{i}.json").write_text(json.dumps(d))
    assert main(["--suite", "panels", "--from-json", str(tmp_path / "0.json"), str(tmp_path / "1.json")]) == 0
    assert capsys.readouterr().out.strip().splitlines()[2] == table[2]

    # a run with fewer repeats (the first repeats' folds are the same): its cells say so, GBLUP keeps 3
    c = _doc({"GBLUP": _fig([0.50, 0.51]), "DLGWAS": _fig([0.45, 0.47], {"mean": -0.045, "low": -0.2,
                                                                         "high": 0.11})}, 2.0)
    row = merge_panel_runs([c, a])[0]
    assert len(row["models"]["GBLUP"]["pearson_repeat_means"]) == 3
    cells = [x.strip() for x in markdown_table([row]).splitlines()[2].strip("|").split("|")]
    assert cells[3] == "0.510 ± 0.010" and cells[6] == "0.460 ± 0.010 (-0.045 [-0.200, +0.110]), 2 repeats"
    assert cells[-1] == "1.5-2.0"


def test_runs_on_different_folds_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _doc({"GBLUP": _fig([0.50, 0.51, 0.52])}, 1.0)
    b = _doc({"GBLUP": _fig([0.49, 0.51, 0.53])}, 1.0)  # another seed: other folds, other GBLUP repeat means
    with pytest.raises(ValueError, match="GBLUP differs"):
        merge_panel_runs([a, b])
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    assert main(["--suite", "panels", "--from-json", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "GBLUP differs" in err and "Traceback" not in err


def test_blend_weights_are_recorded_per_fold_and_shown_in_the_table() -> None:
    import numpy as np

    from app.bench.gp import _parse, blend_weights, cv_models
    from app.engine.gp.cv import make_folds, run_cv
    from app.engine.gp.jobs import ensemble_spec, model_spec

    geno, y = _toy_panel(3)

    # the engine's rows: each fold's weight is the one its blend predicted with
    cfg = {"epochs": 3, "params": {"deepgs": {"ensemble": 2}}}
    res = run_cv(geno, y, [model_spec("gblup", cfg), model_spec("deepgs", cfg), ensemble_spec("deepgs")],
                 make_folds(90, folds=3, repeats=2, seed=0))
    bw = blend_weights(res.rows, "GBLUP+DeepGS")
    assert bw is not None and blend_weights(res.rows, "DeepGS") is None
    assert len(bw["per_fold"]) == 6 and len(bw["inner_val_lines_per_fold"]) == 6
    p = res.predictions
    g, d, e = (p[p.model == n].reset_index(drop=True) for n in ("GBLUP", "DeepGS", "GBLUP+DeepGS"))
    for k, (_, grp) in enumerate(e.groupby(["repeat", "fold"], sort=True)):
        i = grp.index
        np.testing.assert_allclose(grp.predicted, bw["per_fold"][k] * d.predicted[i]
                                   + (1 - bw["per_fold"][k]) * g.predicted[i], atol=1e-9)
    assert bw["mean"] == round(float(np.mean(bw["per_fold"])), 4)
    assert bw["min"] == min(bw["per_fold"]) and bw["max"] == max(bw["per_fold"])
    assert all(0 < n < 60 for n in bw["inner_val_lines_per_fold"])  # inner lines of ~60 training lines

    # the bench's JSON row carries them, and the table's blend cell shows the mean weight
    args = _parse(["--suite", "panels", "--models", "gblup,deepgs", "--ensemble", "deepgs", "--folds", "3",
                   "--epochs", "2"])
    out = cv_models(geno, y, args, repeats=2)
    ens = out["models"]["GBLUP+DeepGS"]
    assert len(ens["blend_weights"]["per_fold"]) == 6 and "blend_weights" not in out["models"]["DeepGS"]
    doc = {"folds": 3, "repeats": 2, "rows": [{"dataset": "toy", "trait": "t", "n_lines": 90, "n_markers": 40,
                                               "models": out["models"]}]}
    cells = [c.strip() for c in markdown_table(merge_panel_runs([doc])).splitlines()[2].strip("|").split("|")]
    assert cells[8].endswith(f"(w {ens['blend_weights']['mean']:.2f})") and "(w " not in cells[5]


def test_each_networks_restored_epoch_is_recorded_per_fold_and_early_stops_show() -> None:
    import numpy as np

    from app.bench.gp import _parse, best_epochs, cv_models, model_table
    from app.engine.gp.cv import make_folds, run_cv
    from app.engine.gp.jobs import ensemble_spec, model_spec

    geno, y = _toy_panel(5)

    # patience 1 on noisy inner validation: networks stop long before the cap of 40 epochs
    cfg = {"epochs": 40, "params": {"deepgs": {"ensemble": 2, "patience": 1}}}
    res = run_cv(geno, y, [model_spec("gblup", cfg), model_spec("deepgs", cfg), ensemble_spec("deepgs")],
                 make_folds(90, folds=3, repeats=2, seed=0))
    be = best_epochs(res.rows, "DeepGS")
    assert be is not None and best_epochs(res.rows, "GBLUP") is None and best_epochs(res.rows, "GBLUP+DeepGS") is None
    assert len(be["per_fold"]) == 6 and all(len(f) == 2 for f in be["per_fold"])  # 6 folds x 2 networks
    assert be["max_epochs"] == 40 and be["n_networks"] == 12
    for best, ran in zip(be["per_fold"], be["epochs_run_per_fold"], strict=True):
        for b, r in zip(best, ran, strict=True):
            assert 1 <= b <= r <= 40
            assert r == 40 or r - b == 1  # an early stop comes `patience` epochs after the restored one
    assert 0 < be["n_stopped_early"] == sum(r < 40 for f in be["epochs_run_per_fold"] for r in f)
    flat = [b for f in be["per_fold"] for b in f]
    assert (be["min"], be["max"], be["median"]) == (min(flat), max(flat), float(np.median(flat)))

    # the bench's JSON and its table carry them
    args = _parse(["--suite", "panels", "--models", "gblup,deepgs", "--ensemble", "deepgs", "--folds", "3",
                   "--epochs", "2"])
    out = cv_models(geno, y, args, repeats=2)
    deep = out["models"]["DeepGS"]["best_epochs"]
    assert deep["max_epochs"] == 2 and len(deep["per_fold"]) == 6
    assert "best_epochs" not in out["models"]["GBLUP"] and "best_epochs" not in out["models"]["GBLUP+DeepGS"]
    line = next(ln for ln in model_table(out["models"]).splitlines() if ln.split()[0] == "DeepGS")
    assert f"best epoch {deep['min']}-{deep['max']}" in line and "of 2;" in line and "stopped early" in line
