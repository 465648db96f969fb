"""The live map's window side: aligned layouts, colourings, and the panel following a run refresh by refresh.

The run folder here is written by hand in the format ``app.engine.celllm.live`` documents (the engine's own
tests check that it writes it); ``test_ui_live_finetune.py`` runs the real thing from the window.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from app.engine.events import Artifact
from app.ui.live_map import LiveMap, live_layout, procrustes_to

CLASSES = ["B", "NK", "T"]


def write_refresh(run: Path, k: int, emb: np.ndarray, probs: np.ndarray | None, quality: dict) -> None:
    """One refresh as the engine writes it: arrays first, then the index that lists it."""
    live = run / "live"
    live.mkdir(parents=True, exist_ok=True)
    np.save(live / f"emb-{k:04d}.npy", emb.astype(np.float32))
    if probs is not None:
        np.save(live / f"probs-{k:04d}.npy", probs.astype(np.float32))
    idx_path = live / "index.json"
    idx = json.loads(idx_path.read_text()) if idx_path.is_file() else {"refreshes": [], "reference": None}
    idx["refreshes"].append({"refresh": k, "epoch": k, "step": 10 * k, "emb": f"emb-{k:04d}.npy",
                             "probs": f"probs-{k:04d}.npy" if probs is not None else None, "seconds": 0.1,
                             "quality": quality})
    idx["reference"] = {"method": "pca_hvg", "file": "reference.npy", "quality": {"silhouette": 0.2,
                                                                                  "knn_accuracy": 0.7}}
    idx_path.write_text(json.dumps(idx))


def synthetic_run(tmp_path: Path, n: int = 300, refreshes: int = 4) -> tuple[Path, list[np.ndarray]]:
    """Cells of three labels whose embedding separates a little more at every refresh."""
    rng = np.random.default_rng(0)
    labels = np.array(CLASSES)[rng.integers(0, 3, n)]
    centres = rng.normal(size=(3, 16)) * 3
    noise = rng.normal(size=(n, 16))
    run = tmp_path / "run"
    (run / "live").mkdir(parents=True)
    (run / "live" / "cells.json").write_text(json.dumps({
        "kind": "finetune", "n_cells": n, "cell_ids": [f"c{i}" for i in range(n)], "labels": labels.tolist(),
        "label_key": "cell_type", "batches": (["b1", "b2"] * n)[:n], "batch_key": "batch", "classes": CLASSES}))
    embs = []
    for k in range(refreshes):
        emb = noise + (0.3 + k) * centres[[CLASSES.index(v) for v in labels]]
        embs.append(emb)
        logits = emb @ centres.T
        probs = np.exp(logits - logits.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        write_refresh(run, k, emb, probs, {"silhouette": 0.1 * k, "knn_accuracy": 0.5 + 0.1 * k,
                                           "ilisi": None})
    return run, embs


def test_procrustes_recovers_a_turned_scaled_shifted_layout() -> None:
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(200, 2))
    a = np.deg2rad(70)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    moved = (ref @ rot) * 3.0 + [5, -2]
    moved[:, 0] *= -1  # and mirrored
    np.testing.assert_allclose(procrustes_to(moved, ref), ref, atol=1e-5)


def test_consecutive_layouts_are_aligned_not_rerandomised(tmp_path: Path) -> None:
    _, embs = synthetic_run(tmp_path)
    prev = live_layout(embs[0])
    for emb in embs[1:]:
        xy = live_layout(emb, prev)
        # the same cells stay where they were, up to what the embedding itself changed
        assert min(np.corrcoef(prev[:, 0], xy[:, 0])[0, 1], np.corrcoef(prev[:, 1], xy[:, 1])[0, 1]) > 0.8
        prev = xy
    flipped = live_layout(-embs[1])  # without the previous layout the sign is the PCA's own
    assert np.corrcoef(live_layout(embs[1], flipped)[:, 0], flipped[:, 0])[0, 1] > 0.9


def test_live_map_reads_refreshes_colourings_and_quality(tmp_path: Path) -> None:
    run, _ = synthetic_run(tmp_path)
    live = LiveMap()
    live.start(str(run))
    assert live.read() and len(live.refreshes) == 4 and not live.read()  # nothing new the second time
    assert live.colour_options() == ["label", "predicted", "confidence", "batch"]
    pred = live.colour_values(3, "predicted")
    conf = live.colour_values(3, "confidence")
    assert set(pred) <= set(CLASSES) and conf.dtype == np.float32 and ((conf > 0) & (conf <= 1)).all()
    q = live.quality_series()
    assert set(q) == {"silhouette", "knn_accuracy"}  # a figure that could not be computed is left out
    np.testing.assert_allclose(q["knn_accuracy"][1], [0.5, 0.6, 0.7, 0.8])
    assert list(q["silhouette"][0]) == [0, 1, 2, 3]  # a fine-tune's refreshes sit at their epochs
    assert live.reference_values() == {"silhouette": 0.2, "knn_accuracy": 0.7}
    assert "epoch 0 (starting model)" in live.describe(0) and "300 cells" in live.describe(0)


def test_panel_follows_each_refresh_off_the_gui_thread_then_replays(qtbot, win, tmp_path: Path) -> None:
    run, _ = synthetic_run(tmp_path, refreshes=1)
    ll, live = win.live_layouts, win.session.live
    panel, quality = win.train_tab.live_map, win.train_tab.quality
    win.tabs.setCurrentWidget(win.train_tab)  # a hidden panel draws only when it is shown
    ll._follow(str(run))
    ll._artifact(Artifact("live_cells", str(run / "live" / "cells.json")))
    ll._artifact(Artifact("live_map", str(run / "live" / "emb-0000.npy")))
    assert ll.busy  # laid out in a worker thread
    qtbot.waitUntil(lambda: panel.states == 1, timeout=20000)
    rng = np.random.default_rng(3)
    for k in (1, 2, 3):  # the refreshes of epochs 1-3 arrive one by one
        emb = np.load(run / "live" / "emb-0000.npy") * (1 + 0.2 * k) + 0.1 * rng.normal(size=(300, 16))
        write_refresh(run, k, emb, None, {"silhouette": 0.2 * k, "knn_accuracy": 0.6})
        ll._artifact(Artifact("live_map", str(run / "live" / f"emb-{k:04d}.npy")))
        qtbot.waitUntil(lambda k=k: panel.states == k + 1, timeout=20000)
    assert panel.drawn_refreshes == [0, 1, 2, 3]
    rt = win.results_tab
    assert rt.live_map.states == 0  # hidden: nothing drawn there yet
    win.tabs.setCurrentWidget(rt)
    rt.stack.setCurrentIndex(1)
    rt.map_tabs.setCurrentWidget(rt.live_map)
    qtbot.waitUntil(lambda: rt.live_map.drawn_refreshes == [3], timeout=20000)  # the newest, once shown
    win.tabs.setCurrentWidget(win.train_tab)
    assert quality.n_points("silhouette") == 4 and set(quality.refs) == {"silhouette", "knn_accuracy"}
    assert len(ll.latencies()) == 4
    for k in (1, 2, 3):
        a, b = live.layouts[k - 1], live.layouts[k]
        assert np.corrcoef(a[:, 0], b[:, 0])[0, 1] > 0.8
    # after the run: the slider replays every refresh
    assert panel.slider.isEnabled() and panel.slider.maximum() == 3
    panel.slider.setValue(1)
    assert live.shown == 1 and not live.follow
    qtbot.waitUntil(lambda: panel.drawn_refreshes[-1] == 1, timeout=20000)
    np.testing.assert_array_equal(panel.view.xy, live.layouts[1])
    panel.colour.setCurrentIndex(panel.colour.findData("confidence"))
    assert live.colour_by == "confidence"
    qtbot.waitUntil(lambda: panel.view.plot.plotItem.titleLabel.text == "confidence", timeout=20000)
    panel.replay()
    qtbot.waitUntil(lambda: live.follow and live.shown == 3, timeout=20000)
    assert {"live_map", "embedding_quality"} <= set(win.train_tab.plots())
