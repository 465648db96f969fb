"""The cell map at scale, the GP tables, and the Model tab's settings -> job config (no shared data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app.ui import plots
from app.ui.state import AppState, gp_fold_table, gp_wide_table


def test_dense_map_draws_an_image_and_picks_on_all_cells(qtbot) -> None:
    rng = np.random.default_rng(0)
    n = plots.DENSE_ABOVE + 10_000
    xy = rng.normal(size=(n, 2)).astype(np.float32)
    lab = np.where(xy[:, 0] > 0, "right", "left").astype(object)
    v = plots.EmbeddingView()
    qtbot.addWidget(v)
    v.resize(600, 500)
    v.show()
    v.set_data(xy, lab, title="cells")
    assert v.density is not None and len(v.drawn) == plots.SUBSAMPLE
    assert len(v.items) == plots.SUBSAMPLE // plots.DRAW_CHUNK and sum(len(it.data) for it in v.items) == len(v.drawn)
    img = v.density.image
    assert img.shape == (plots.IMAGE_BINS, plots.IMAGE_BINS, 4) and img[..., 3].max() == 255
    qtbot.waitUntil(lambda: v.tree is not None, timeout=30000)  # built in a worker thread
    # hover finds the exact nearest cell among ALL cells, drawn or not
    j = int(np.setdiff1d(np.arange(n), v.drawn)[5])
    assert v.hover_at(float(xy[j, 0]), float(xy[j, 1])) == j and "cell" in v.info.text()
    poly = np.array([[0.1, -0.5], [1.0, -0.5], [1.0, 0.5], [0.1, 0.5]])
    sel = v.select_polygon(poly)
    inside = np.flatnonzero((xy[:, 0] > 0.1) & (xy[:, 0] < 1.0) & (xy[:, 1] > -0.5) & (xy[:, 1] < 0.5))
    assert set(sel) == set(inside)
    assert len(v.sel_item.data) == min(sel.size, plots.SHOW_SELECTED)


def test_colour_density_mixes_category_colours() -> None:
    xy = np.array([[0, 0], [0, 0], [0, 0], [1, 1]], np.float32)
    codes = np.array([0, 0, 1, 1])
    img = plots.colour_density(xy, codes, ["#ff0000", "#0000ff"], bins=2)
    assert tuple(img[0, 0, :3]) == (170, 0, 85)  # 2 red + 1 blue
    assert tuple(img[1, 1, :3]) == (0, 0, 255) and img[0, 1, 3] == 0  # empty bin transparent
    assert img[0, 0, 3] > img[1, 1, 3]  # denser bin more opaque


def test_category_codes_missing_and_mixed() -> None:
    codes, names = plots.category_codes(np.array(["b", None, "a", "b"], dtype=object))
    assert names == ["a", "b", "NA"] and list(codes) == [1, 2, 0, 1]
    codes, names = plots.category_codes(np.array([1, "x", 1], dtype=object))
    assert names == ["1", "x"] and list(codes) == [0, 1, 0]


def test_gp_tables_from_rows_and_summaries() -> None:
    rows = [{"model": m, "repeat": r, "fold": f, "pearson": 0.1 * f + (0.2 if m == "GBLUP" else 0) + 0.01 * r}
            for m in ("GBLUP", "DNNGP") for r in (1, 2) for f in (1, 2)]
    folds = gp_fold_table({"folds": rows, "models": {"GBLUP": {"pearson_folds": [9, 9]}}})
    assert len(folds) == 8  # rows win over the summaries: nothing counted twice
    wide = gp_wide_table(folds)
    assert list(wide.index) == ["GBLUP", "DNNGP"]
    assert list(wide.columns) == ["r1 f1", "r1 f2", "r2 f1", "r2 f2", "mean", "sd"]
    assert wide.loc["GBLUP", "mean"] == pytest.approx(np.mean([r["pearson"] for r in rows if r["model"] == "GBLUP"]))
    only = gp_fold_table({"models": {"GBLUP": {"pearson_folds": [0.3, None, 0.5]}}})
    assert list(only["fold"]) == [1, 2, 3] and np.isnan(only["r"][1])


def test_model_tab_settings_become_the_job_config(qtbot, win, tmp_path: Path) -> None:
    s = win.state
    s.kind, s.data_path, s.pheno_path, s.trait = "genotype", "g.csv", "p.csv", "yield"
    win.model_tab.rebuild()
    win.model_tab.set_task("dnngp")
    assert "dnngp.dropout1" in win.model_tab.editors and not win.model_tab.compare_box.isVisible()
    win.model_tab.set_param("dnngp.dropout1", 0.3)
    win.model_tab.set_param("folds", 4)
    target, cfg = s.job_spec("RUN")
    assert target == "app.engine.gp.jobs:cv" and cfg["models"] == ["DNNGP"] and cfg["folds"] == 4
    assert cfg["params"] == {"dnngp": {"dropout1": 0.3}}  # only what was changed
    assert "epochs" not in cfg and "group" not in cfg  # 0 / "" = the engine's defaults
    win.model_tab.set_task("compare")
    win.model_tab.set_compare_models(["GBLUP", "DLGWAS"])
    assert s.job_spec("RUN")[1]["models"] == ["GBLUP", "DLGWAS"]
    win.model_tab.set_compare_models([])  # the last one cannot be cleared
    assert len(s.compare_models) == 1


def test_pretrain_offers_the_cluster_dialog(qtbot, win, tmp_path: Path) -> None:
    import anndata as ad

    p = tmp_path / "cells.h5ad"
    ad.AnnData(np.random.default_rng(0).poisson(1.0, (30, 8)).astype(np.float32),
               obs=pd.DataFrame({"cell_type": ["a", "b"] * 15}, index=[f"c{i}" for i in range(30)])).write_h5ad(p)
    with qtbot.waitSignal(win.datasetLoaded, timeout=30000):
        win.open_path(str(p))
    qtbot.waitUntil(lambda: not win.workers, timeout=30000)
    mt = win.model_tab
    mt.set_task("finetune")
    assert mt.cluster_btn.isHidden()
    mt.set_task("pretrain")
    assert not mt.cluster_btn.isHidden()
    dlg = mt.open_cluster_dialog()
    assert dlg is not None and dlg.isVisible() and dlg.config["data"] == str(p)
    dlg.close()
    assert isinstance(AppState().compare_models, list)


def test_layout_and_recent_files_are_remembered(qtbot, win) -> None:
    from app.ui.main_window import MainWindow

    win.add_recent("/data/a.h5ad")
    win.add_recent("/data/b.h5ad")
    sp = win._splitters()[0]
    sp.setSizes([100, 900])
    want = sp.sizes()
    win.resize(1111, 777)
    win.close()
    w2 = MainWindow()
    qtbot.addWidget(w2)
    assert w2.recent_files()[:2] == ["/data/b.h5ad", "/data/a.h5ad"]
    got = w2._splitters()[0].sizes()  # Qt rescales sizes to the new widget width: compare proportions
    assert got[0] / sum(got) == pytest.approx(want[0] / sum(want), abs=0.05)
    assert got[0] / sum(got) < 0.2  # not the default split
    assert w2.settings.value("geometry")  # restored on open (the offscreen screen clamps its size)
    w2.close()


def test_drop_a_file_opens_it_and_recent_menu_reopens(qtbot, win, tmp_path: Path) -> None:
    import anndata as ad
    from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
    from PySide6.QtGui import QDropEvent

    p = tmp_path / "dropped.h5ad"
    ad.AnnData(np.random.default_rng(1).poisson(1.0, (25, 6)).astype(np.float32)).write_h5ad(p)
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p))])
    ev = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.NoButton,
                    Qt.KeyboardModifier.NoModifier)
    with qtbot.waitSignal(win.datasetLoaded, timeout=30000):
        win.dropEvent(ev)
    assert win.state.n_items == 25 and win.recent_files()[0] == str(p)
    qtbot.waitUntil(lambda: not win.workers, timeout=30000)
    acts = win.data_tab.recent_menu.actions()
    assert acts and acts[0].text() == str(p)
    with qtbot.waitSignal(win.datasetLoaded, timeout=30000):
        acts[0].trigger()
    qtbot.waitUntil(lambda: not win.workers, timeout=30000)
