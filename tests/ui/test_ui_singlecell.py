"""The single-cell workflow through the real window, on a subsample of the shared PBMC 8k data:
open -> summary -> fine-tune the bundled tiny CellLM (curves get points) -> stop (checkpoint) -> resume ->
the new model embeds every cell -> map -> lasso a selection and label it -> export the annotated AnnData
and read it back with anndata."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.shared_data

CLASSES = ["CD8+ T-cells", "Monocytes", "CD4+ T-cells", "B-cells", "NK cells"]  # pbmc_small's (tests/ui/conftest.py)


def test_singlecell_workflow(qtbot, win, idle, pbmc_small: Path, tmp_path: Path) -> None:
    import anndata as ad

    s = win.state
    # 1 Data: open in a worker, summary and label column at once
    with qtbot.waitSignal(win.datasetLoaded, timeout=60000):
        win.open_path(str(pbmc_small))
    assert s.kind == "singlecell" and s.n_items == 300
    info = win.data_tab.info()
    assert "300" in info["summary"] and info["label"] == "cell_type" and info["classes"] == 5
    assert s.gene_match is not None and s.gene_match.n_matched > 0  # symbols found in the tiny vocabulary
    assert win.recent_files()[0] == str(pbmc_small)
    qtbot.waitUntil(lambda: s.layout is not None, timeout=60000)  # a preview map before any model
    idle(win)

    # 2 Model: fine-tune from the bundled tiny CellLM, two short epochs
    win.model_tab.set_task("finetune")
    win.model_tab.set_param("epochs", 2)
    win.model_tab.set_param("batch_size", 8)  # ~26 batches an epoch: a stop lands inside epoch 2
    win.model_tab.set_param("patience", 5)

    # 3 Train: curves get a point at the end of epoch 1, then Stop keeps a checkpoint
    tt = win.train_tab
    tt.train()
    assert tt.running and not tt.train_btn.isEnabled() and tt.stop_btn.isEnabled()
    seen: dict[str, int] = {}

    def stop_in_epoch_2(ev) -> None:  # as soon as epoch 2 runs (the curves have epoch 1's point)
        if ev.epoch == 1 and ev.step < ev.total and not seen:
            seen["points"] = tt.curves.n_points()
            tt.stop()

    tt.job.progress.connect(stop_in_epoch_2)
    with qtbot.waitSignal(tt.job.finished, timeout=180000):
        pass
    assert seen["points"] >= 1, "the curves had no point when epoch 2 began"
    assert "train loss" in tt.curves.data and "val macro f1" in tt.curves.data
    assert s.current is not None and s.current.status == "cancelled"
    assert tt.train_btn.isEnabled() and tt.resume_btn.isEnabled() and not tt.stop_btn.isEnabled()
    run_dir = Path(s.current.path)
    assert list((run_dir / "checkpoints").glob("*.safetensors"))
    points_before = tt.curves.n_points()

    # Resume: continues from the checkpoint (curves reloaded, then grow), then the model embeds every cell
    tt.resume()
    assert tt.running and "Resuming" in tt.status.text()
    with qtbot.waitSignal(win.embeddingLoaded, timeout=240000):
        pass
    assert s.current.status == "done"
    assert tt.curves.n_points() > points_before
    assert s.embedding is not None and s.embedding.shape[0] == 300
    assert s.predictions is not None and set(s.predictions["celllm_label"]) <= set(CLASSES)
    assert s.metrics is not None and s.metrics["test"]["confusion"]["labels"]
    qtbot.waitUntil(lambda: s.layout_kind == "PCA preview" and len(win.results_tab.view.xy) == 300,
                    timeout=60000)
    idle(win)
    assert win.tabs.currentWidget() is win.results_tab
    assert win.results_tab.f1_table.rowCount() == 5
    assert "celllm_label" in [win.results_tab.colour_combo.itemText(i)
                              for i in range(win.results_tab.colour_combo.count())]

    # 4 Results: hover shows a cell, a box selection gets a manual label
    rt = win.results_tab
    xy = s.layout
    i0 = rt.view.hover_at(float(xy[0, 0]), float(xy[0, 1]))
    assert i0 >= 0 and str(s.adata.obs_names[i0]) in rt.view.info.text()
    lo, hi = np.quantile(xy, 0.2, axis=0), np.quantile(xy, 0.8, axis=0)
    sel = rt.view.select_polygon(np.array([[lo[0], lo[1]], [hi[0], lo[1]], [hi[0], hi[1]], [lo[0], hi[1]]]))
    assert 0 < sel.size < 300 and rt.assign_btn.isEnabled()
    rt.label_edit.setText("my cluster")
    qtbot.mouseClick(rt.assign_btn, __import__("PySide6.QtCore", fromlist=["Qt"]).Qt.MouseButton.LeftButton)
    assert (s.manual == "my cluster").sum() == sel.size

    # 5 Export: the annotated AnnData, written atomically in a worker, read back
    out = tmp_path / "annotated.h5ad"
    win.export_tab.export_h5ad(str(out))
    idle(win)
    assert win.last_error is None, win.train_tab.log.toPlainText()[-3000:]
    assert win.export_tab.last_written == out and not list(tmp_path.glob(".annotated*"))
    back = ad.read_h5ad(out)
    assert back.n_obs == 300 and back.obsm["X_celllm"].shape == s.embedding.shape
    np.testing.assert_allclose(back.obsm["X_celllm"], s.embedding, rtol=1e-6)
    assert back.obsm["X_umap"].shape == (300, 2)
    assert (back.obs["manual_label"].astype(str) == "my cluster").sum() == sel.size
    assert set(back.obs["celllm_label"].astype(str)) <= set(CLASSES)
    om = back.uns["omicslab"]
    assert om["gui"]["label_key"] == "cell_type" and om["run"]["config"]["epochs"] == 2
    assert np.asarray(back.layers["counts"]).sum() == np.asarray(ad.read_h5ad(pbmc_small).X).sum()  # counts kept

    # the plots export too (PNG + SVG) and the trained model folder copies
    files = win.export_tab.export_plots(str(tmp_path / "plots"))
    assert {"loss.png", "loss.svg", "cell_map.png"} <= {f.name for f in files}
    win.export_tab.export_model(str(tmp_path / "models"))
    idle(win)
    assert list((tmp_path / "models").glob("celllm-*/model.safetensors"))

    # the run history: the finished run is listed and reopens with its curves and scores
    names = [tt.history.item(i).text() for i in range(tt.history.count())]
    assert any(run_dir.name in n and "[done]" in n for n in names)
    s.metrics = None
    tt.reopen(str(run_dir))
    assert tt.curves.n_points() >= 2 and "Reopened" in tt.status.text()
    assert s.metrics is not None and s.current.path == str(run_dir)
    idle(win)
