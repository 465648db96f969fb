"""Issue #13's Done-when, through the real window: a 3-epoch fine-tune shows 4 map states (epochs 0-3) and 4
points on each quality curve while the job still runs, and consecutive layouts are aligned (correlated), not
re-randomised."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from app.engine.events import Result

pytestmark = pytest.mark.shared_data


def test_live_map_follows_a_finetune_epoch_by_epoch(qtbot, win, idle, pbmc_small: Path) -> None:
    with qtbot.waitSignal(win.datasetLoaded, timeout=60000):
        win.open_path(str(pbmc_small))
    qtbot.waitUntil(lambda: win.state.layout is not None, timeout=60000)
    idle(win)
    win.model_tab.set_task("finetune")
    win.model_tab.set_param("epochs", 3)
    win.model_tab.set_param("patience", 5)
    tt, live = win.train_tab, win.session.live
    seen: dict[str, object] = {}

    def at_end(req, final) -> None:  # the fine-tune's last event
        if req.purpose == "train" and "final" not in seen:
            seen["final"] = final
            tt.stop()  # the embed-all that follows is not what this test is about

    win.runner.finished.connect(at_end)
    tt.train()
    qtbot.waitUntil(lambda: "final" in seen, timeout=300000)
    qtbot.waitUntil(lambda: not tt.running, timeout=120000)
    # each refresh is laid out off the GUI thread after its artifact arrives, so the last epoch's map can
    # still be in a worker when the job's finished signal comes (seen 2 in 7 runs): wait for the view
    qtbot.waitUntil(lambda: tt.live_map.states >= 4, timeout=60000)
    idle(win)
    seen.update(states=tt.live_map.states, drawn=list(tt.live_map.drawn_refreshes),
                quality={k: tt.quality.n_points(k) for k in ("silhouette", "knn_accuracy")},
                refs=set(tt.quality.refs), layouts=[live.layouts[k] for k in sorted(live.layouts)])
    assert isinstance(seen["final"], Result), tt.log.toPlainText()[-2000:]
    assert seen["states"] >= 4 and seen["drawn"][:4] == [0, 1, 2, 3], seen["drawn"]
    assert seen["quality"] == {"silhouette": 4, "knn_accuracy": 4}
    assert {"silhouette", "knn_accuracy"} <= seen["refs"]  # the PCA-of-HVGs reference beside each curve
    layouts = seen["layouts"]
    assert len(layouts) == 4 and all(xy.shape == (300, 2) for xy in layouts)
    for a, b in itertools.pairwise(layouts):
        r = min(np.corrcoef(a[:, 0], b[:, 0])[0, 1], np.corrcoef(a[:, 1], b[:, 1])[0, 1])
        assert r > 0.5, f"consecutive layouts not aligned (r = {r:.2f})"
    assert live.colour_options() == ["label", "predicted", "confidence"]
    assert tt.live_map.slider.maximum() == 3 and tt.live_map.slider.isEnabled()  # replay after the run
