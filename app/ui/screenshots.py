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

REPO = Path(__file__).resolve().parents[2]


def wait_until(app: object, cond: Callable[[], bool], timeout: float = 300.0, what: str = "") -> None:
    """Process events until ``cond()`` (raises TimeoutError)."""
    t0 = time.time()
    while not cond():
        app.processEvents()
        time.sleep(0.01)
        if time.time() - t0 > timeout:
            raise TimeoutError(f"timed out waiting for {what}")


def settle(app: object, s: float = 0.3) -> None:
    t0 = time.time()
    while time.time() - t0 < s:
        app.processEvents()
        time.sleep(0.01)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default=str(REPO / "docs" / "screenshots"))
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--gp-epochs", type=int, default=30, help="epochs of the deep GP models")
    p.add_argument("--only", choices=["singlecell", "genotype"], default=None)
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

    if args.only in (None, "singlecell"):
        win = MainWindow()
        win.resize(1360, 860)
        win.show()
        win.open_demo("singlecell")
        wait_until(app, lambda: win.state.layout is not None and not win.workers, 120, "the demo")
        shot(win, win.data_tab, "1-data-singlecell.png")
        win.model_tab.set_task("finetune")
        win.model_tab.advanced.expand(animate=False)
        win.model_tab.set_param("epochs", args.epochs)
        shot(win, win.model_tab, "2-model-singlecell.png")
        win.tabs.setCurrentWidget(win.train_tab)
        win.train_tab.train()
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
    if args.only in (None, "genotype"):
        win = MainWindow()
        win.resize(1360, 860)
        win.show()
        win.open_demo("genotype")
        wait_until(app, lambda: win.state.join is not None and not win.workers, 120, "the genotype demo")
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


if __name__ == "__main__":
    raise SystemExit(main())
