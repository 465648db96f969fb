"""GUI test fixtures: an isolated window (settings, runs folder, one thread per job) and leak checks.

Every GUI test fails when it leaves a Python thread, a Qt worker thread, a QThreadPool task or a job
process running (napari's fixtures do the same): a window that leaks workers would pile them up for a user.
"""

from __future__ import annotations

import multiprocessing as mp
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

PBMC_CLASSES = ["CD8+ T-cells", "Monocytes", "CD4+ T-cells", "B-cells", "NK cells"]


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs, cache and settings under tmp_path; jobs on one thread (2 shared cores)."""
    monkeypatch.setenv("OMICSLAB_RUNS_DIR", str(tmp_path / "omicslab" / "runs"))
    monkeypatch.setenv("OMICSLAB_SETTINGS", str(tmp_path / "settings.ini"))
    monkeypatch.setenv("OMICSLAB_THREADS", "1")


# PySide6 6.12's static void calls (QTest.qWait, which qtbot's waits use, QCoreApplication.processEvents,
# QTimer.singleShot) drop a reference to None at every call; a full GUI run makes hundreds of thousands, and the
# interpreter then aborted at exit ("deallocating None") after every test had passed. As Python 3.12 does for
# every interpreter, None is made immortal here: a held pool of references would be released at exit too.
if sys.implementation.name == "cpython" and sys.version_info < (3, 12):
    import ctypes

    ctypes.c_ssize_t.from_address(id(None)).value += 1 << 40


@pytest.fixture(autouse=True)
def _no_leaks(qapp):
    """Fail when a test leaves threads, worker threads or job processes behind."""
    from PySide6.QtCore import QThreadPool

    from app.ui import workers

    before = {t.ident for t in threading.enumerate()}
    yield
    end = time.monotonic() + 15
    pool = QThreadPool.globalInstance()

    def leftovers() -> list[str]:
        qapp.processEvents()
        out = [f"thread {t.name}" for t in threading.enumerate() if t.ident not in before and t.is_alive()]
        out += [f"job process {p.pid}" for p in mp.active_children()]
        out += [f"worker {w!r}" for w in list(workers.LIVE) if w.is_running()]
        if pool.activeThreadCount():
            out.append(f"{pool.activeThreadCount()} QThreadPool task(s)")
        return out

    left = leftovers()
    while left and time.monotonic() < end:
        time.sleep(0.05)
        left = leftovers()
    for p in mp.active_children():
        p.kill()
    assert not left, f"the test left these running: {left}"


@pytest.fixture
def win(qtbot):
    """The real main window (UMAP refinement off: the PCA preview is enough for tests), shown offscreen."""
    from app.ui.main_window import MainWindow

    w = MainWindow(umap_refine=False)
    qtbot.addWidget(w)
    w.resize(1200, 800)
    w.show()
    yield w
    w.close()  # stops jobs, waits for workers


@pytest.fixture
def idle(qtbot):
    """``idle(win)``: wait until no worker thread of the window runs."""

    def wait(w, timeout: int = 60000) -> None:
        qtbot.waitUntil(lambda: not w.workers, timeout=timeout)

    return wait


@pytest.fixture
def pbmc_small(shared_data: Path, tmp_path: Path) -> Path:
    """60 cells of each of five PBMC classes from the shared PBMC 8k data, written as .h5ad (seeded)."""
    import anndata as ad

    a = ad.read_h5ad(shared_data / "singlecell" / "pbmc8k_hvg200_h5ad" / "pbmc.h5ad")
    rng = np.random.default_rng(0)
    ct = a.obs["cell_type"].astype(str).to_numpy()
    idx = np.sort(np.concatenate([rng.choice(np.flatnonzero(ct == c), 60, replace=False) for c in PBMC_CLASSES]))
    out = tmp_path / "pbmc_small.h5ad"
    a[idx].copy().write_h5ad(out)
    return out
