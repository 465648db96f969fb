"""Failure paths: a job that raises or dies, and a file that cannot be read, end in a clear message (no
raw traceback in the dialog, details in the log), buttons come back and the window keeps working."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.engine.events import Failed, Result

DEMO = "app.engine.demo_job:demo"


@pytest.mark.parametrize("how", ["raise", "exit"])
def test_failing_job_is_a_message_and_the_window_lives_on(qtbot, win, tmp_path: Path, how: str) -> None:
    tt = win.train_tab
    with qtbot.waitSignal(win.errorShown, timeout=60000):
        tt._start(DEMO, {"steps": 10, "fail_at": 3, "fail_how": how, "step_sleep": 0.01},
                  str(tmp_path / "fail"), resume=False, purpose="train")
    assert isinstance(tt.job.final, Failed)
    title, message = win.last_error
    assert title == "The run failed" and message
    box = win._last_box
    assert "Traceback" not in box.text() and box.text() == message
    assert win.state.current.status == "failed"
    assert not tt.running and not tt.stop_btn.isEnabled() and tt.bar.format() == "failed"
    assert "✖" in tt.log.toPlainText()  # the details went to the log pane
    if how == "raise":
        assert "on purpose at step 3" in message and "Traceback" in box.detailedText()
    box.close()
    if how != "raise":
        return
    # still usable: the next job runs to its end
    tt._start(DEMO, {"steps": 5}, str(tmp_path / "ok"), resume=False, purpose="train")
    with qtbot.waitSignal(tt.job.finished, timeout=60000) as done:
        pass
    assert isinstance(done.args[0], Result) and done.args[0].value["steps_done"] == 5
    assert tt.curves.n_points() == 5 and tt.bar.format() == "done"


def test_unreadable_file_is_a_message(qtbot, win, tmp_path: Path) -> None:
    bad = tmp_path / "broken.h5ad"
    bad.write_bytes(b"this is not an HDF5 file")
    with qtbot.waitSignal(win.errorShown, timeout=30000):
        win.open_path(str(bad))
    title, message = win.last_error
    assert "broken.h5ad" in title and "Traceback" not in message
    assert win.data_tab.open_btn.isEnabled() and not win.data_tab.busy.isVisible()
    assert win.state.kind is None
    # the window still opens the next file
    import anndata as ad
    import numpy as np

    good = tmp_path / "small.h5ad"
    rng = np.random.default_rng(0)
    ad.AnnData(rng.poisson(1.0, (40, 12)).astype(np.float32)).write_h5ad(good)
    with qtbot.waitSignal(win.datasetLoaded, timeout=30000):
        win.open_path(str(good))
    assert win.state.kind == "singlecell" and win.state.n_items == 40
    qtbot.waitUntil(lambda: not win.workers, timeout=30000)


def test_train_without_data_and_shortcuts(qtbot, win) -> None:
    """Ctrl+T with nothing open says what to do; the menus carry the shortcuts."""
    keys = {a.text().replace("&", ""): a.shortcut().toString() for m in win.menuBar().actions()
            for a in m.menu().actions()}
    assert keys["Open…"] == "Ctrl+O" and keys["Train"] == "Ctrl+T" and keys["Stop"] == "Ctrl+."
    assert keys["Export annotated data…"] == "Ctrl+E"
    win.train_tab.train()
    assert win.last_error == ("Not ready to train", "Open a dataset on the Data tab first.")
