"""Short background work (reading a file, QC, a UMAP) in a ``QThread``, results back on the GUI thread.

Training never runs here (it goes through ``app.ui.qt_jobs.QtJob``, a spawned process). Every worker is
kept in ``LIVE`` until its thread has finished, so the window can wait for them on close and tests can
assert that none leaked. ``done``/``failed`` are delivered via queued signals; ``finished`` is always
emitted (from a ``finally``), the DeepLabCut lesson.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QThread, Signal

LIVE: set[Worker] = set()


class _Runner(QThread):
    done = Signal(object)
    failed = Signal(object, str)

    def __init__(self, fn: Callable[..., Any], args: tuple, kwargs: dict) -> None:
        super().__init__()
        self.fn, self.args, self.kwargs = fn, args, kwargs

    def run(self) -> None:
        try:
            out = self.fn(*self.args, **self.kwargs)
        except BaseException as exc:
            self.failed.emit(exc, traceback.format_exc())
        else:
            self.done.emit(out)


class Worker(QObject):
    """``Worker(fn, *args).start(on_done, on_error)``; ``on_error(exc, tb)`` gets the exception."""

    finished = Signal()

    def __init__(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self._thread = _Runner(fn, args, kwargs)
        self.cancelled = False

    def start(self, on_done: Callable[[Any], None] | None = None,
              on_error: Callable[[BaseException, str], None] | None = None) -> Worker:
        """Run in the background; callbacks run on the GUI thread unless ``cancel()`` was called."""
        def done(out: Any) -> None:
            if on_done is not None and not self.cancelled:
                on_done(out)

        def failed(exc: BaseException, tb: str) -> None:
            if on_error is not None and not self.cancelled:
                on_error(exc, tb)

        self._thread.done.connect(done)
        self._thread.failed.connect(failed)
        self._thread.finished.connect(self._finished)
        LIVE.add(self)
        self._thread.start()
        return self

    def _finished(self) -> None:
        LIVE.discard(self)
        self.finished.emit()

    def cancel(self) -> None:
        """Drop the result when it comes (the thread runs to its end; work here is short)."""
        self.cancelled = True

    def wait(self, ms: int = 30000) -> bool:
        """Block until the thread ends (used on close and in tests)."""
        ok = self._thread.wait(ms)
        if ok:
            LIVE.discard(self)
        return bool(ok)

    def is_running(self) -> bool:
        return self._thread.isRunning()


def wait_all(ms: int = 30000) -> bool:
    """Wait for every live worker thread (window close)."""
    ok = True
    for w in list(LIVE):
        w.cancel()
        ok = w.wait(ms) and ok
    return ok
