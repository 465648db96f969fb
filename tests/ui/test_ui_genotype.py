"""The genotype workflow through the real window on the shared wheat 599 data: open genotypes -> add the
phenotype table -> pick a trait -> cross-validate GBLUP and DNNGP (tiny epochs) -> r table, predicted vs
observed scatter, marker importance -> export the GEBV/prediction and CV tables and read them back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.shared_data


def test_genotype_workflow(qtbot, win, idle, shared_data: Path, tmp_path: Path) -> None:
    s = win.state
    wheat = shared_data / "genotype" / "wheat599_numeric"
    with qtbot.waitSignal(win.datasetLoaded, timeout=60000):
        win.open_path(str(wheat / "wheat.X"))
    assert s.kind == "genotype" and s.n_items == 599
    assert "599 samples x 1,279 markers" in win.data_tab.info()["summary"]
    assert win.results_tab.stack.currentIndex() == 2
    # training before a phenotype table is a clear message, not a crash
    win.train_tab.train()
    assert win.last_error[0] == "Not ready to train" and "phenotype" in win.last_error[1]
    assert win.train_tab.job is None and win.train_tab.train_btn.isEnabled()

    win.add_phenotypes(str(wheat / "wheat.Y"))
    idle(win)
    assert s.trait == "E1" and s.traits == ["E1", "E2", "E3", "E4"]
    win.data_tab.trait_combo.setCurrentText("E2")  # the combo re-joins on the new trait
    idle(win)
    assert s.trait == "E2" and "599" in win.data_tab.info()["join"]

    win.model_tab.set_task("compare")
    win.model_tab.set_compare_models(["GBLUP", "DNNGP"])
    for k, v in {"folds": 3, "epochs": 3, "batch_size": 64}.items():
        win.model_tab.set_param(k, v)
    tt = win.train_tab
    tt.train()
    assert tt.running
    target, cfg = s.current.target, s.current.config
    assert target == "app.engine.gp.jobs:cv" and cfg["models"] == ["GBLUP", "DNNGP"] and cfg["trait"] == "E2"
    assert cfg["folds"] == 3 and cfg["epochs"] == 3 and "lr" not in cfg  # 0 = the model's default
    with qtbot.waitSignal(tt.job.finished, timeout=300000) as done:
        pass
    from app.engine.events import Result

    assert isinstance(done.args[0], Result), win.train_tab.log.toPlainText()[-2000:]
    assert s.current.status == "done" and s.gp_result is not None
    assert tt.curves.n_points() >= 6  # one Pearson point per model and fold, live
    assert {"GBLUP pearson", "DNNGP pearson"} <= set(tt.curves.data)
    # the deep model's own fit (loss by epoch) on the left, restarted each fold: at most 3 epochs shown
    assert "train loss" in tt.curves.data and len(tt.curves.data["train loss"][0]) <= 3
    assert not tt.curves.loss.isHidden() and not tt.curves.metric.isHidden()
    rt = win.results_tab
    assert win.tabs.currentWidget() is rt
    # table: one row per model, three folds, mean and sd; mean equals the engine's
    header = [rt.gp_table.horizontalHeaderItem(j).text() for j in range(rt.gp_table.columnCount())]
    assert header == ["model", "fold 1", "fold 2", "fold 3", "mean", "sd"]
    assert rt.gp_table.rowCount() == 2
    for i in range(2):
        name = rt.gp_table.item(i, 0).text()
        shown = float(rt.gp_table.item(i, 4).text())
        assert shown == pytest.approx(s.gp_result["models"][name]["pearson_mean"], abs=6e-4)
    assert rt.fold_combo.count() == 2
    scatter_pts = sum(len(it.data) for it in rt.scatter.plotItem.items if hasattr(it, "data")
                      and isinstance(it.data, np.ndarray))
    assert scatter_pts == 599  # every line once: out-of-fold predictions of the chosen model
    assert rt.manh.plotItem.items  # marker importance drawn

    gebv = tmp_path / "gebv.csv"
    win.export_tab.export_gebv(str(gebv))
    idle(win)
    back = pd.read_csv(gebv)
    assert {"ID", "fold", "model", "observed", "predicted"} <= set(back.columns)
    assert len(back) == 2 * 599 and set(back["model"]) == {"GBLUP", "DNNGP"}
    cv = tmp_path / "cv.csv"
    win.export_tab.export_cv(str(cv))
    idle(win)
    assert len(pd.read_csv(cv)) == 6
    files = win.export_tab.export_plots(str(tmp_path / "plots"))
    assert {"gp_scatter.png", "gp_scatter.svg", "marker_importance.png"} <= {f.name for f in files}

    # the final model: GBLUP on all lines, GEBVs of every line, model folder exported
    rt.fold_combo.setCurrentText("GBLUP")
    assert rt.final_btn.isEnabled()
    rt.final_btn.click()
    with qtbot.waitSignal(tt.job.finished, timeout=120000) as fin:
        pass
    assert isinstance(fin.args[0], Result), win.train_tab.log.toPlainText()[-2000:]
    assert s.gp_final is not None and s.gp_final["models"] == ["GBLUP"]
    assert s.current.target == "app.engine.gp.jobs:cv"  # the CV stays the run the Results show
    all_lines = tmp_path / "gebv_all.csv"
    win.export_tab.export_gebv_all(str(all_lines))
    idle(win)
    g = pd.read_csv(all_lines)
    assert len(g) == 599 and g["GBLUP"].notna().all()
    assert win.export_tab.model_btn.isEnabled()
    win.export_tab.export_model(str(tmp_path / "models"))
    idle(win)
    saved = list((tmp_path / "models").glob("gp-*/models/GBLUP"))
    assert saved and any(saved[0].iterdir())
