"""Regenerate docs/screenshots/*.png: drive the real window headless through both workflows and grab each
step with ``widget.grab().save(...)``.

    QT_QPA_PLATFORM=offscreen python -m app.ui.screenshots [--out docs/screenshots] [--epochs 3]

Runs go to a temporary runs folder (OMICSLAB_RUNS_DIR) unless one is set.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from app.ui.launch import process_events

REPO = Path(__file__).resolve().parents[2]


def wait_until(app: object, cond: Callable[[], bool], timeout: float = 300.0, what: str = "") -> None:
    """Process events until ``cond()`` (raises TimeoutError)."""
    t0 = time.time()
    while not cond():
        process_events()
        time.sleep(0.01)
        if time.time() - t0 > timeout:
            raise TimeoutError(f"timed out waiting for {what}")


def settle(app: object, s: float = 0.3) -> None:
    t0 = time.time()
    while time.time() - t0 < s:
        process_events()
        time.sleep(0.01)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default=str(REPO / "docs" / "screenshots"))
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--gp-epochs", type=int, default=30, help="epochs of the deep GP models")
    p.add_argument("--only", choices=["singlecell", "genotype", "annotate", "live", "evaluate"], default=None,
                   help="one workflow; live: only the live map and quality curves mid-training; evaluate: "
                        "'Evaluate (3 repeats)' with the from-scratch control and a label-efficiency curve")
    p.add_argument("--shared-data", default=str(REPO.parent / "shared" / "data"),
                   help="the shared data folder (the labels / annotate pictures use CellBench from it)")
    args = p.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ.setdefault("OMICSLAB_RUNS_DIR", tempfile.mkdtemp(prefix="omicslab-shots-"))
    os.environ.setdefault("OMICSLAB_SETTINGS", str(Path(tempfile.mkdtemp()) / "settings.ini"))
    from app.ui.launch import make_app
    from app.ui.main_window import MainWindow

    app = make_app()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def shot(win: MainWindow, tab: object, name: str) -> None:
        win.tabs.setCurrentWidget(tab)
        settle(app, 0.4)
        win.grab().save(str(out / name))
        print("wrote", out / name, flush=True)

    def live_shots(win: MainWindow, refreshes: int = 3) -> None:
        """The live map and quality curves while the fine-tune still runs (issue #13)."""
        live = win.session.live
        panel = win.train_tab.live_map
        wait_until(app, lambda: (len(live.layouts) >= refreshes and panel.states >= refreshes
                                 and not panel.view.busy) or not win.train_tab.running, 900, "live-map refreshes")
        shot(win, win.train_tab, "3-train-live-singlecell.png")
        rt = win.results_tab
        rt.map_tabs.setCurrentWidget(rt.live_map)
        win.tabs.setCurrentWidget(rt)
        wait_until(app, lambda: rt.live_map.states > 0 and not rt.live_map.view.busy, 60, "the Results live map")
        shot(win, rt, "4-results-live-singlecell.png")
        rt.map_tabs.setCurrentIndex(0)

    def fresh_window(demo: str) -> MainWindow:
        """A new window of the pictures' size with a bundled demo open ("singlecell" or "genotype")."""
        win = MainWindow()
        win.resize(1360, 860)
        win.show()
        win.open_demo(demo)
        ready = (lambda: win.state.layout is not None) if demo == "singlecell" else (lambda: win.state.join is not None)
        wait_until(app, lambda: ready() and not win.workers, 120, f"the {demo} demo")
        return win

    def model_shot(win: MainWindow) -> None:
        """The Model tab: fine-tune with its Advanced form open (and the repeated-evaluation settings)."""
        win.model_tab.set_task("finetune")
        win.model_tab.advanced.expand(animate=False)
        win.model_tab.set_param("epochs", args.epochs)
        shot(win, win.model_tab, "2-model-singlecell.png")

    if args.only == "evaluate":
        win = fresh_window("singlecell")
        win.model_tab.set_eval_param("scratch", True)
        win.model_tab.set_eval_param("label_fractions", ["0.05", "0.25"])
        model_shot(win)
        win.train_tab.evaluate()
        wait_until(app, lambda: "[2/" in win.train_tab.log.toPlainText() and win.train_tab.curves.n_points() >= 4,
                   900, "the second fine-tune's curves")
        shot(win, win.train_tab, "3-train-evaluate-singlecell.png")
        wait_until(app, lambda: not win.train_tab.running, 3600, "the evaluation")
        shot(win, win.results_tab, "8-evaluate-singlecell.png")
        win.close()
        return 0

    if args.only == "live":
        win = fresh_window("singlecell")
        win.model_tab.set_task("finetune")
        win.model_tab.set_param("epochs", max(args.epochs, 5))
        win.train_tab.train()
        live_shots(win)
        win.train_tab.stop()
        wait_until(app, lambda: not win.train_tab.running, 120, "the stop")
        win.close()
        return 0

    if args.only in (None, "singlecell"):
        win = fresh_window("singlecell")
        shot(win, win.data_tab, "1-data-singlecell.png")
        model_shot(win)
        win.tabs.setCurrentWidget(win.train_tab)
        win.train_tab.train()
        live_shots(win)
        wait_until(app, lambda: win.state.embedding is not None and win.state.layout_kind == "UMAP"
                   and not win.workers and not win.train_tab.running, 900, "fine-tune + embed + UMAP")
        shot(win, win.train_tab, "3-train-singlecell.png")
        v = win.results_tab.view
        xy = win.state.layout
        c = xy.mean(0)
        r = xy.std(0) * 0.5
        v.select_polygon([[c[0] - r[0], c[1] - r[1]], [c[0] + r[0], c[1] - r[1]], [c[0] + r[0], c[1] + r[1]],
                          [c[0] - r[0], c[1] + r[1]]])
        win.results_tab.label_edit.setText("my cluster")
        settle(app, 0.2)
        i = int(v.selection[0]) if v.selection.size else 0
        v.hover_at(float(xy[i, 0]), float(xy[i, 1]))
        shot(win, win.results_tab, "4-results-singlecell.png")
        tmp = Path(tempfile.mkdtemp(prefix="omicslab-export-"))
        win.export_tab.export_h5ad(str(tmp / "annotated.h5ad"))
        wait_until(app, lambda: not win.workers, 120, "the export")
        shot(win, win.export_tab, "5-export-singlecell.png")
        win.close()
    cellbench = Path(args.shared_data) / "singlecell" / "cellbench_lung_3cl"
    if args.only in (None, "annotate") and cellbench.is_dir():
        annotate_shots(app, out, cellbench, args.epochs, shot, MainWindow)
    if args.only in (None, "genotype"):
        win = fresh_window("genotype")
        shot(win, win.data_tab, "1-data-genotype.png")
        win.model_tab.set_task("compare")
        win.model_tab.advanced.expand(animate=False)
        for k, v in {"folds": 3, "epochs": args.gp_epochs}.items():  # a quick run for the pictures
            win.model_tab.set_param(k, v)
        shot(win, win.model_tab, "2-model-genotype.png")
        win.train_tab.train()
        try:
            wait_until(app, lambda: not win.train_tab.running and win.train_tab.jobs_started > 0, 900, "GP CV")
            settle(app, 1.0)
            shot(win, win.train_tab, "3-train-genotype.png")
            shot(win, win.results_tab, "4-results-genotype.png")
            win.results_tab.fold_combo.setCurrentText("GBLUP")  # the final model on all lines (fast)
            win.results_tab.final_btn.click()
            wait_until(app, lambda: win.state.gp_final is not None and not win.train_tab.running, 600,
                       "the final model")
            tmp = Path(tempfile.mkdtemp(prefix="omicslab-export-"))
            win.export_tab.export_gebv_all(str(tmp / "gebv_all_lines.csv"))
            wait_until(app, lambda: not win.workers, 120, "the export")
            shot(win, win.export_tab, "5-export-genotype.png")
        except TimeoutError as exc:
            print(exc, file=sys.stderr)
        win.close()
    return 0


def annotate_shots(app: object, out: Path, cellbench: Path, epochs: int, shot: Callable[..., None],
                   window: Callable[[], object]) -> None:
    """A CSV count matrix plus its labels table (Data tab), then "Annotate another dataset…" with the other
    CellBench platform (the dialog after the threshold moved)."""
    win = window()
    win.resize(1360, 860)
    win.show()
    win.open_path(str(cellbench / "sc_celseq2.count.csv.gz"))
    wait_until(app, lambda: win.state.adata is not None and not win.workers, 300, "the CEL-seq2 counts")
    win.data_tab.labels_panel.add_table(str(cellbench / "sc_celseq2.metadata.csv.gz"))
    wait_until(app, lambda: win.data_tab.labels_panel.join is not None and not win.workers, 120, "the labels")
    win.data_tab.label_combo.setCurrentText("cell_line_demuxlet")
    shot(win, win.data_tab, "6-labels-singlecell.png")
    win.model_tab.set_task("finetune")
    win.model_tab.set_param("epochs", epochs)
    win.train_tab.train()
    wait_until(app, lambda: win.state.embedding is not None and not win.workers and not win.train_tab.running,
               900, "fine-tune + embed")
    win.tabs.setCurrentWidget(win.results_tab)
    dlg = win.open_annotate(win.results_tab.finetuned_run())
    dlg.set_query(str(cellbench / "sc_dropseq.count.csv.gz"), str(cellbench / "sc_dropseq.metadata.csv.gz"),
                  "cell_line_demuxlet")
    dlg.run()
    wait_until(app, lambda: dlg.ann.adata is not None or win.last_error is not None, 900, "the annotation")
    dlg.slider.setValue(70)
    dlg.colour_combo.setCurrentText("Label (query: predicted)")
    settle(app, 0.6)
    dlg.grab().save(str(out / "7-annotate-singlecell.png"))
    print("wrote", out / "7-annotate-singlecell.png", flush=True)
    dlg.close()
    win.close()


if __name__ == "__main__":
    raise SystemExit(main())
