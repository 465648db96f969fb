"""Bring your own labels, annotate new cells, through the real window:
open a CSV count matrix (CellBench CEL-seq2, Ensembl IDs, no labels) -> add its labels table on the Data tab
-> choose the label column -> fine-tune -> "Annotate another dataset…" with the Drop-seq platform and its
own labels -> move the confidence threshold (live counts and scores) -> export -> read the export back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

CELLBENCH = "singlecell/cellbench_lung_3cl"
LABEL = "cell_line_demuxlet"


@pytest.mark.shared_data
def test_labels_table_finetune_annotate_threshold_export(qtbot, win, idle, shared_data: Path,
                                                         tmp_path: Path) -> None:
    import anndata as ad

    d = shared_data / CELLBENCH
    s = win.state
    # 1 Data: a CSV count matrix without labels; the Train button's check says what is missing
    with qtbot.waitSignal(win.datasetLoaded, timeout=120000):
        win.open_path(str(d / "sc_celseq2.count.csv.gz"))
    assert s.kind == "singlecell" and s.n_items == 274 and not s.label_key
    assert "labels table" in win.session.check_ready()
    idle(win)

    # add the labels table through the Data tab (R write.csv layout: IDs in an unnamed first column)
    panel = win.data_tab.labels_panel
    with qtbot.waitSignal(panel.joined, timeout=60000):
        panel.add_table(str(d / "sc_celseq2.metadata.csv.gz"))
    report = panel.report.toPlainText()
    assert "274 of 274 cells matched" in report and LABEL in report
    assert LABEL in [win.data_tab.label_combo.itemText(i) for i in range(win.data_tab.label_combo.count())]
    win.data_tab.label_combo.setCurrentText(LABEL)  # the label-column choice
    assert s.label_key == LABEL and win.data_tab.info()["classes"] == 3
    written = pd.read_csv(s.labels_path, index_col=0)
    assert list(written.columns) == [LABEL] and len(written) == 274  # what the fine-tune job will join
    assert win.session.check_ready() is None
    idle(win)

    # 2-3 fine-tune (2 short epochs); the finished model embeds every cell
    win.model_tab.set_task("finetune")
    win.model_tab.set_param("epochs", 2)
    win.train_tab.train()
    with qtbot.waitSignal(win.embeddingLoaded, timeout=400000):
        pass
    assert s.current.status == "done" and s.metrics["classes"] == ["H1975", "H2228", "HCC827"]
    idle(win)

    # 4 Results: "Annotate another dataset…" with the fine-tuned run
    rt = win.results_tab
    qtbot.waitUntil(lambda: rt.annotate_btn.isEnabled(), timeout=10000)
    rt.annotate_btn.click()
    dlg = win.annotate_dialog
    assert dlg.isVisible() and dlg.ann.model == s.current.path
    dlg.set_query(str(d / "sc_dropseq.count.csv.gz"), str(d / "sc_dropseq.metadata.csv.gz"), LABEL)
    assert dlg.run() is not None
    qtbot.waitUntil(lambda: dlg.ann.adata is not None or win.last_error is not None, timeout=400000)
    assert win.last_error is None, win.last_error
    ann = dlg.ann
    assert ann.adata.n_obs == 225 and ann.joint is not None and len(ann.joint) == 274 + 225
    assert "accuracy" in dlg.scores_label.text()

    # move the threshold: the Unassigned count follows at once
    dlg.slider.setValue(80)
    assert ann.threshold == pytest.approx(0.80)
    conf = ann.adata.obs["celllm_confidence"].to_numpy()
    expected = int((conf < 0.80).sum())
    rows = {dlg.counts.item(i, 0).text(): int(dlg.counts.item(i, 1).text().replace(",", ""))
            for i in range(dlg.counts.rowCount())}
    assert rows["Unassigned"] == expected and sum(rows.values()) == 225
    dlg.colour_combo.setCurrentText("Confidence")
    dlg.colour_combo.setCurrentText("Label (query: predicted)")

    # export and read back
    out = tmp_path / "dropseq_annotated.h5ad"
    with qtbot.waitSignal(dlg.exported, timeout=60000) as sig:
        dlg.export_to(str(out))
    files = sig.args[0]
    a = ad.read_h5ad(out)
    assert {"celllm_label", "celllm_confidence", "celllm_best_label", LABEL} <= set(a.obs.columns)
    assert int((a.obs["celllm_label"].astype(str) == "Unassigned").sum()) == expected
    np.testing.assert_allclose(a.obs["celllm_confidence"].to_numpy(), conf)
    meta = a.uns["omicslab"]["celllm_annotate"]
    assert meta["min_confidence"] == pytest.approx(0.80) and meta["n_unassigned"] == expected
    labels = pd.read_csv(files["labels_csv"], index_col=0)
    assert (labels["celllm_label"] == "Unassigned").sum() == expected
    assert Path(files["joint_map_png"]).stat().st_size > 10_000
    dlg.close()
    idle(win)


def test_small_classes_are_named_and_merged_in_one_click(qtbot, win, idle, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    cells = [f"cell{i}" for i in range(30)]
    genes = ["".join(rng.choice(list("ABCDEFGHIKLMNPRSTVWXYZ"), 5)) + str(i % 10) for i in range(80)]  # symbols
    pd.DataFrame(rng.poisson(0.7, (80, 30)), index=genes, columns=cells).to_csv(tmp_path / "counts.csv")
    types = ["T"] * 14 + ["B"] * 13 + ["NK", "NK", "DC"]
    (tmp_path / "types.txt").write_text("\n".join(f"{c}\t{t}" for c, t in zip(cells, types, strict=True)) + "\n")
    with qtbot.waitSignal(win.datasetLoaded, timeout=60000):
        win.open_path(str(tmp_path / "counts.csv"))
    idle(win)
    panel = win.data_tab.labels_panel
    with qtbot.waitSignal(panel.joined, timeout=60000):
        _drop(panel, tmp_path / "types.txt")  # dragged onto the Cell labels box; no header, tab-separated
    assert win.state.label_key == "label"
    assert panel.merge_btn.isVisibleTo(panel) and "DC (1)" in panel.small_label.text() \
        and "NK (2)" in panel.small_label.text()
    with qtbot.waitSignal(panel.fixed, timeout=5000):
        panel.merge_btn.click()
    counts = win.state.summary.label_columns["label"]
    assert counts["other"] == 3 and "NK" not in counts and not panel.merge_btn.isVisibleTo(panel)
    assert (pd.read_csv(win.state.labels_path, index_col=0)["label"] == "other").sum() == 3
    idle(win)
    # dropped anywhere on the window, a table that is no count matrix joins the open cells too
    (tmp_path / "batches.csv").write_text("cell,batch\n" + "".join(f"{c},b{i % 2}\n" for i, c in enumerate(cells)))
    with qtbot.waitSignal(panel.joined, timeout=60000):
        _drop(win, tmp_path / "batches.csv")
    assert "30 of 30 cells matched" in panel.report.toPlainText() and "batch" in win.state.adata.obs
    idle(win)


def _drop(widget, path: Path) -> None:
    """Drag ``path`` from a file manager and drop it on ``widget``."""
    from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
    from PySide6.QtGui import QDragEnterEvent, QDropEvent

    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    pos = QPointF(widget.rect().center())
    enter = QDragEnterEvent(pos.toPoint(), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                            Qt.KeyboardModifier.NoModifier)
    widget.dragEnterEvent(enter)
    assert enter.isAccepted()
    widget.dropEvent(QDropEvent(pos, Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                                Qt.KeyboardModifier.NoModifier))
