"""GUI responsiveness measured on the real window (run by ``python -m app bench ui``, which starts this module
in its own process because the bench layer may not import the GUI).

    QT_QPA_PLATFORM=offscreen python -m app.ui.benchmark [--json] [--train-s 20] [--interact-s 5]

A 10 ms ``QTimer`` on the GUI thread notes when it fires; stall = actual interval - 10 ms (what a user feels
as a frozen window). Phases:

1. idle: the window open, nothing running (the machine's own timer noise);
2. training: a real CellLM fine-tune (bundled tiny model, scanpy's PBMC demo) started with the Train button's
   code path; the Train tab is shown, its curves, progress bar and log update live;
3. 100k and 1M points: synthetic embeddings (10 clusters) shown in the Results tab's map; while the map is
   shown we pan, zoom and hover (KD-tree picking) every 30 ms. Also reported: the one-off cost of handing
   the points to the view (``set_data_ms_*``) and of a lasso selection on all points;
   ``map_handover_ms_1m``: the longest event-loop stall while a new 1M-cell map is handed to the view the way
   the Results tab does it (``EmbeddingView.set_data_async``: prepared in a worker, drawn in small steps);
4. first UMAP preview for 100k cells: the time from "embeddings arrived" to a drawn preview map (PCA in a
   worker thread, then the view), through ``MainWindow.compute_layout``;
5. live map: a run folder receives a 5,000-cell refresh every ``--live-every-s`` seconds (written as the
   engine writes them, ``app.engine.celllm.live``'s format) and the window follows it through its real code
   path (``LiveLayouts``: layout in a worker, then the Train tab's map and quality curves). ``live_refresh_s_5k``
   is the median time from a refresh's artifact event to its map on screen; ``stall_ms_p99_live`` the
   event-loop p99 meanwhile. (The engine's own time to embed the subsample is in the run's ``live/index.json``,
   ``seconds``, and in ``runs show``.)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from app.ui.launch import process_events

TICK_MS = 10


class StallMeter:
    """Fires every ``TICK_MS`` on the GUI thread and records how late each tick was (and the longest
    garbage-collector pause meanwhile, a usual suspect for a lone long stall)."""

    def __init__(self) -> None:
        import gc

        from PySide6.QtCore import QTimer

        self.t: list[float] = []
        self.timer = QTimer()
        self.timer.setInterval(TICK_MS)
        self.timer.timeout.connect(lambda: self.t.append(time.perf_counter()))
        self.gc_max_ms = 0.0
        self._gc_t0 = 0.0
        gc.callbacks.append(self._gc)

    def _gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_t0 = time.perf_counter()
        elif self.timer.isActive():
            self.gc_max_ms = max(self.gc_max_ms, (time.perf_counter() - self._gc_t0) * 1000)

    def start(self) -> None:
        self.t = []
        self.gc_max_ms = 0.0
        self.timer.start()

    def stop(self) -> dict[str, float | int | None]:
        self.timer.stop()
        gaps = np.diff(np.asarray(self.t)) * 1000.0 - TICK_MS
        gaps = np.maximum(gaps, 0.0)
        if gaps.size == 0:
            return {"p50": None, "p99": None, "worst": None, "ticks": 0}
        return {"p50": round(float(np.percentile(gaps, 50)), 2), "p99": round(float(np.percentile(gaps, 99)), 2),
                "worst": round(float(gaps.max()), 1), "ticks": int(gaps.size), "gc_max_ms": round(self.gc_max_ms, 1)}


def pump(app: Any, seconds: float, each: Callable[[], None] | None = None, every_s: float = 0.03) -> None:
    """Run the event loop for ``seconds`` (optionally calling ``each`` every ``every_s``)."""
    from PySide6.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    t = None
    if each is not None:
        t = QTimer()
        t.setInterval(int(every_s * 1000))
        t.timeout.connect(each)
        t.start()
    QTimer.singleShot(int(seconds * 1000), loop.quit)
    loop.exec()
    if t is not None:
        t.stop()


def wait_for(app: Any, cond: Callable[[], bool], timeout: float) -> bool:
    """Process events until ``cond()`` or ``timeout``."""
    t0 = time.perf_counter()
    while not cond():
        if time.perf_counter() - t0 > timeout:
            return False
        process_events()
        time.sleep(0.002)
    return True


def blobs(n: int, dim: int, seed: int = 0, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points in ``dim`` dimensions around ``k`` centres, and their cluster labels."""
    rng = np.random.default_rng(seed)
    lab = rng.integers(0, k, n)
    centres = rng.normal(0, 6, (k, dim)).astype(np.float32)
    x = centres[lab] + rng.normal(0, 1, (n, dim)).astype(np.float32)
    return x, np.array([f"type {i}" for i in range(k)], dtype=object)[lab]


def phase_training(app: Any, win: Any, seconds: float, meter: StallMeter) -> dict[str, Any]:
    """Stall while a real fine-tune runs (events relayed, curves drawn)."""
    from PySide6.QtCore import QEventLoop, QTimer

    loaded = {"ok": False}
    win.datasetLoaded.connect(lambda _k: loaded.__setitem__("ok", True))
    win.open_demo("singlecell")
    if not wait_for(app, lambda: loaded["ok"] and not win.workers, 180):
        return {"error": "the demo did not load"}
    win.model_tab.set_task("finetune")
    win.model_tab.set_param("epochs", 50)
    win.model_tab.set_param("max_cells", 300)  # short epochs: the curves update while we measure
    win.model_tab.set_param("batch_size", 16)
    win.model_tab.set_param("patience", 50)
    win.tabs.setCurrentWidget(win.train_tab)
    tt = win.train_tab
    tt.train()
    # measure from the first progress event (the child has imported torch and read the data)
    if not wait_for(app, lambda: tt.bar.value() > 0 or tt.curves.n_points() > 0 or not tt.running, 180):
        tt.stop()
        return {"error": "the fine-tune sent no progress"}
    # what the GUI handled around the longest stall (a diagnostic: which signal's slot was slow, if any)
    seen: list[tuple[float, str]] = []
    job = tt.job
    for name in ("progress", "metrics", "log", "artifact", "device"):
        getattr(job, name).connect(lambda _ev, n=name: seen.append((time.perf_counter(), n)))
    meter.start()
    pump(app, seconds)
    ticks = list(meter.t)
    out = meter.stop()
    if len(ticks) > 1:
        k = int(np.argmax(np.diff(ticks)))
        a, b = ticks[k], ticks[k + 1]
        out["worst_window_signals"] = sorted({n for t, n in seen if a - 0.001 <= t <= b + 0.001})
    out["curve_points"] = tt.curves.n_points()
    out["log_lines"] = tt.log.blockCount()
    tt.stop()
    loop = QEventLoop()
    if tt.job is not None and tt.job.running:
        tt.job.finished.connect(loop.quit)
        QTimer.singleShot(60000, loop.quit)
        loop.exec()
    wait_for(app, lambda: tt.job is None or (not tt.job.running and not tt.job.handle.is_alive()), 30)
    import multiprocessing as mp

    out["job_processes_left"] = len(mp.active_children())
    pump(app, 2.0)  # let the stopped job's last events and files settle before the next phase
    return out


def phase_points(app: Any, win: Any, n: int, seconds: float, meter: StallMeter) -> dict[str, Any]:
    """Stall while the map shows ``n`` points and the user pans, zooms and hovers."""
    xy, lab = blobs(n, 2, seed=n)
    view = win.results_tab.view
    win.tabs.setCurrentWidget(win.results_tab)
    win.results_tab.stack.setCurrentIndex(1)
    process_events()
    t0 = time.perf_counter()
    view.set_data(xy, lab, ids=None, hover_cols={"cluster": lab}, title=f"{n:,} synthetic cells")
    process_events()  # includes the first paint
    set_ms = (time.perf_counter() - t0) * 1000
    rng = np.random.default_rng(1)
    state = {"i": 0}

    def interact() -> None:
        i = state["i"] = state["i"] + 1
        if i % 3 == 0:
            view.vb.scaleBy((0.97, 0.97) if (i // 60) % 2 == 0 else (1.03, 1.03))
        elif i % 3 == 1:
            view.vb.translateBy(x=0.05 * (1 if (i // 30) % 2 else -1), y=0.0)
        j = int(rng.integers(0, n))
        view.hover_at(float(xy[j, 0]), float(xy[j, 1]))

    meter.start()
    pump(app, seconds, interact, 0.03)
    out = meter.stop()
    c = xy.mean(0)
    poly = np.array([[c[0] - 3, c[1] - 3], [c[0] + 3, c[1] - 3], [c[0] + 3, c[1] + 3], [c[0] - 3, c[1] + 3]])
    t0 = time.perf_counter()
    sel = view.select_polygon(poly)
    process_events()
    out.update(set_data_ms=round(set_ms, 1), lasso_ms=round((time.perf_counter() - t0) * 1000, 1),
               selected=int(sel.size), drawn_points=len(view.drawn) if view.drawn is not None else n,
               density_image=view.density is not None)
    return out


def phase_handover(app: Any, win: Any, n: int, meter: StallMeter) -> dict[str, Any]:
    """The longest stall while a new ``n``-cell map is handed to the Results map off the GUI thread."""
    import pandas as pd

    xy, lab = blobs(n, 2, seed=n + 1)
    cats = pd.Categorical(lab)  # what an AnnData .obs column gives the Results tab
    view = win.results_tab.view
    win.tabs.setCurrentWidget(win.results_tab)
    win.results_tab.stack.setCurrentIndex(1)
    process_events()
    shown: dict[str, float] = {}
    meter.start()
    t0 = time.perf_counter()
    view.set_data_async(xy, cats, title=f"{n:,} synthetic cells", on_shown=lambda: shown.setdefault(
        "t", time.perf_counter()))
    wait_for(app, lambda: "t" in shown, 120)
    pump(app, 0.3)  # the first paint of the new map
    out = meter.stop()
    out["shown_after_s"] = round(shown["t"] - t0, 3) if "t" in shown else None
    return out


def phase_live(app: Any, win: Any, cells: int, refreshes: int, every_s: float, meter: StallMeter) -> dict[str, Any]:
    """A live map of ``cells`` cells refreshed every ``every_s`` seconds, followed by the window."""
    from app.engine.events import Artifact

    rng = np.random.default_rng(5)
    emb, lab = blobs(cells, 32, seed=11, k=8)
    run = os.path.join(tempfile.mkdtemp(prefix="omicslab-bench-live-"), "run")
    live_dir = os.path.join(run, "live")
    os.makedirs(live_dir)
    classes = sorted(set(lab))
    with open(os.path.join(live_dir, "cells.json"), "w") as f:
        json.dump({"kind": "finetune", "n_cells": cells, "cell_ids": [f"c{i}" for i in range(cells)],
                   "labels": lab.tolist(), "label_key": "cell_type", "batches": None, "batch_key": None,
                   "classes": classes}, f)
    index: dict[str, Any] = {"refreshes": [], "reference": {"method": "pca_hvg", "quality": {"silhouette": 0.3}}}
    win.tabs.setCurrentWidget(win.train_tab)
    win.live_layouts._follow(run)
    state = {"k": 0}

    for k in range(refreshes):  # the arrays beforehand: the engine writes them in its own process
        np.save(os.path.join(live_dir, f"emb-{k:04d}.npy"),
                (emb * (1 + 0.3 * k) + rng.normal(0, 1, emb.shape)).astype(np.float32))
        np.save(os.path.join(live_dir, f"probs-{k:04d}.npy"),
                rng.dirichlet(np.ones(len(classes)), cells).astype(np.float32))

    def refresh() -> None:  # an epoch end: the index lists the new refresh, then the artifact event comes
        k = state["k"]
        if k >= refreshes:
            return
        index["refreshes"].append({"refresh": k, "epoch": k, "step": k, "emb": f"emb-{k:04d}.npy",
                                   "probs": f"probs-{k:04d}.npy", "seconds": 0.0,
                                   "quality": {"silhouette": 0.1 * k, "knn_accuracy": 0.5}})
        with open(os.path.join(live_dir, "index.json"), "w") as f:
            json.dump(index, f)
        state["k"] = k + 1
        win.runner.artifact.emit(Artifact("live_map", os.path.join(live_dir, f"emb-{k:04d}.npy")))

    meter.start()
    pump(app, every_s * refreshes + 1.0, refresh, every_s)
    wait_for(app, lambda: len(win.session.live.layouts) >= refreshes, 60)
    pump(app, 0.2)
    out = meter.stop()
    lat = win.live_layouts.latencies()
    out.update(cells=cells, refreshes=len(lat), every_s=every_s,
               refresh_s_median=round(float(np.median(lat)), 3) if lat else None,
               refresh_s_worst=round(float(np.max(lat)), 3) if lat else None,
               map_states=win.train_tab.live_map.states)
    return out


def phase_first_preview(app: Any, win: Any, n: int, dim: int = 32) -> dict[str, Any]:
    """Seconds from 'embeddings arrived' to a drawn preview map of ``n`` cells (window code path)."""
    import anndata as ad
    import pandas as pd

    emb, lab = blobs(n, dim, seed=7)
    s = win.state
    adata = ad.AnnData(np.zeros((n, 1), np.float32), obs=pd.DataFrame({"cell_type": lab},
                                                                        index=[f"c{i}" for i in range(n)]))
    s.kind, s.adata, s.label_key, s.manual = "singlecell", adata, "cell_type", np.full(n, "", dtype=object)
    s.layout = None
    got: dict[str, float] = {}
    win.layoutReady.connect(lambda kind: got.setdefault(kind, time.perf_counter()))
    t0 = time.perf_counter()
    s.set_embedding(emb)
    win.compute_layout(refine=False)
    ok = wait_for(app, lambda: "PCA preview" in got and len(win.results_tab.view.xy) == n, 120)
    process_events()
    t1 = time.perf_counter()
    wait_for(app, lambda: not win.workers, 60)
    return {"first_preview_s": round(t1 - t0, 3) if ok else None, "cells": n, "dim": dim}


def run(args: argparse.Namespace) -> dict[str, Any]:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ.setdefault("OMICSLAB_RUNS_DIR", tempfile.mkdtemp(prefix="omicslab-bench-ui-"))
    os.environ.setdefault("OMICSLAB_SETTINGS", os.path.join(tempfile.mkdtemp(), "settings.ini"))
    os.environ.setdefault("OMICSLAB_THREADS", "1")
    from app.ui.launch import make_app
    from app.ui.main_window import MainWindow

    app = make_app()
    win = MainWindow(umap_refine=False)
    win.resize(1280, 820)
    win.show()
    meter = StallMeter()
    # warm-up: one-off imports (scipy.spatial, sklearn) would otherwise land in whichever phase came first
    import scipy.spatial  # noqa: F401
    import sklearn.decomposition  # noqa: F401

    win.results_tab.view.set_data(*blobs(1000, 2))
    res: dict[str, Any] = {"platform": os.environ.get("QT_QPA_PLATFORM", ""), "cpus": os.cpu_count(),
                           "tick_ms": TICK_MS}
    meter.start()
    pump(app, 2.0)
    idle = meter.stop()
    res["stall_ms_p99_idle"], res["stall_ms_worst_idle"] = idle["p99"], idle["worst"]
    if not args.skip_training:
        tr = phase_training(app, win, args.train_s, meter)
        res["training"] = tr
        res["stall_ms_p99_training"], res["stall_ms_worst_training"] = tr.get("p99"), tr.get("worst")
    for n, key in ((100_000, "100k"), (1_000_000, "1m")):
        pt = phase_points(app, win, n, args.interact_s, meter)
        res[f"points_{key}"] = pt
        res[f"stall_ms_p99_{key}_points"], res[f"stall_ms_worst_{key}_points"] = pt["p99"], pt["worst"]
        res[f"set_data_ms_{key}"] = pt["set_data_ms"]
    ho = phase_handover(app, win, 1_000_000, meter)
    res["handover_1m"] = ho
    res["map_handover_ms_1m"] = ho["worst"]
    fp = phase_first_preview(app, win, 100_000)
    res["first_umap_preview_s_100k"] = fp["first_preview_s"]
    lv = phase_live(app, win, 5000, args.live_refreshes, args.live_every_s, meter)
    res["live_5k"] = lv
    res["live_refresh_s_5k"], res["stall_ms_p99_live"] = lv["refresh_s_median"], lv["p99"]
    res["goals"] = {"stall_ms_p99": 20, "first_umap_preview_s_100k": 5, "live_refresh_s_5k": 2,
                    "stall_ms_p99_live": 20, "map_handover_ms_1m": 100}
    win.shutdown()
    win.close()
    return res


def main(argv: list[str] | None = None) -> int:
    """Measure and print (one JSON object with --json)."""
    p = argparse.ArgumentParser(prog="python -m app.ui.benchmark", description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true")
    p.add_argument("--train-s", type=float, default=20.0, help="seconds measured while the fine-tune runs")
    p.add_argument("--interact-s", type=float, default=5.0, help="seconds of pan/zoom/hover per point count")
    p.add_argument("--skip-training", action="store_true")
    p.add_argument("--live-refreshes", type=int, default=8, help="refreshes of the 5,000-cell live map")
    p.add_argument("--live-every-s", type=float, default=1.5, help="seconds between live-map refreshes")
    args = p.parse_args(argv)
    res = run(args)
    if args.json:
        print(json.dumps(res), flush=True)
    else:
        for k, v in res.items():
            print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
