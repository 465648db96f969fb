"""Run Python's cyclic garbage collector on the GUI thread only.

Automatic collection runs in whichever thread happens to allocate. When a worker thread's collection frees a
Qt object (a stale window's menus, a plot item) while the GUI thread is deleting widgets, Qt's object mutex and
the GIL wait on each other and the app freezes (seen in CI: a reader thread in ``gc_collect_main`` running
``~QObject`` while the GUI thread ran ``~QMenu``). So while a window is open, automatic collection is off and a
GUI-thread timer collects instead (pyqtgraph's ``GarbageCollector`` does the same, without a way to stop it).
"""

from __future__ import annotations

import gc

from PySide6.QtCore import QObject, QTimer


class MainThreadGC(QObject):
    """Disable automatic GC and collect from a GUI-thread timer; ``stop()`` restores automatic GC."""

    _active = 0  # windows holding a guard (tests open several)

    def __init__(self, interval_ms: int = 500, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._threshold = gc.get_threshold()
        self._timer = QTimer(self)
        self._timer.timeout.connect(self.check)
        self._running = True
        MainThreadGC._active += 1
        gc.disable()
        self._timer.start(interval_ms)

    def check(self) -> None:
        """Collect the generations whose allocation counts passed their thresholds (as automatic GC would)."""
        c0, c1, c2 = gc.get_count()
        t0, t1, t2 = self._threshold
        if c0 > t0:
            gen = 2 if (c1 > t1 and c2 > t2) else 1 if c1 > t1 else 0
            gc.collect(gen)

    def stop(self) -> None:
        """Stop the timer, collect once here, and give collection back to Python when no guard is left."""
        if not self._running:
            return
        self._running = False
        self._timer.stop()
        gc.collect()
        MainThreadGC._active -= 1
        if MainThreadGC._active <= 0:
            MainThreadGC._active = 0
            gc.enable()
