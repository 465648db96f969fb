"""Qt face of the jobs layer: ``QtJob`` re-emits a spawned job's events as signals on the GUI thread.

A ``QTimer`` on the GUI thread drains the job's queue without ever blocking (``poll(timeout=0)``) and
works at most ~4 ms (or ``max_events_per_tick`` events) per tick, so a chatty job can never stall the window.
Progress events within one tick are coalesced (only the newest is emitted); metrics are all emitted
(the GUI keeps the history). ``finished`` is emitted exactly once, always last, from a ``finally`` — with
the ``Result`` or the ``Failed`` — so buttons are re-enabled whatever happened; ``failed`` is emitted just
before it when the job failed.
"""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QTimer, Signal

from app.engine.events import Artifact, DeviceInfo, Event, Failed, Log, Metrics, Progress, Result
from app.jobs.process import JobHandle, start_job
from app.jobs.pump import EventPump


class QtJob(QObject):
    """One background job seen from the GUI.

    Signals carry the event dataclasses of ``app.engine.events``: ``progress(Progress)``,
    ``metrics(Metrics)``, ``log(Log)``, ``artifact(Artifact)``, ``device(DeviceInfo)``,
    ``failed(Failed)`` and ``finished(Result | Failed)`` (always, last).
    """

    progress = Signal(object)
    metrics = Signal(object)
    log = Signal(object)
    artifact = Signal(object)
    device = Signal(object)
    finished = Signal(object)
    failed = Signal(object)

    def __init__(self, parent: QObject | None = None, *, interval_ms: int = 20, max_events_per_tick: int = 500,
                 budget_ms: float = 4.0, grace_s: float = 10.0) -> None:
        super().__init__(parent)
        self.handle: JobHandle | None = None
        self.grace_s = grace_s
        self.max_events_per_tick = max_events_per_tick
        self.budget_s = budget_ms / 1000.0
        self.final: Result | Failed | None = None
        self._pump: EventPump | None = None
        self._timer = QTimer(self)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._tick)
        self._reap_timer = QTimer(self)
        self._reap_timer.setSingleShot(True)
        self._reap_timer.timeout.connect(self._reap)
        self._finishing = False

    # -- control -----------------------------------------------------------------------------------
    def start(self, target: str, config: dict[str, Any], run_dir: str | Path | None = None, *,
              device: str = "cpu", resume: bool = False) -> JobHandle:
        """Start ``target`` in a spawned child and begin relaying its events. Returns the handle."""
        if self.running:
            raise RuntimeError("this QtJob is already running a job; make another QtJob")
        self.final = None
        self._finishing = False
        self.attach(start_job(target, config, run_dir, device=device, resume=resume))
        return self.handle

    def attach(self, handle: JobHandle) -> None:
        """Relay the events of a job started elsewhere (e.g. by a ``JobQueue``)."""
        self.final = None
        self._finishing = False
        self.handle = handle
        self._pump = EventPump(handle, self._emit, max_events=self.max_events_per_tick, budget_s=self.budget_s)
        self._timer.start()

    def cancel(self, grace_s: float | None = None) -> None:
        """Ask the job to stop (graceful; forceful after ``grace_s``). Never blocks the GUI."""
        if self.handle is not None and not self.handle.done:
            self.handle.cancel(self.grace_s if grace_s is None else grace_s)

    @property
    def running(self) -> bool:
        """True between ``start`` and ``finished``."""
        return self.handle is not None and self.final is None

    @property
    def run_dir(self) -> Path | None:
        return self.handle.run_dir if self.handle is not None else None

    # -- relaying ----------------------------------------------------------------------------------
    def _tick(self) -> None:
        handle, pump = self.handle, self._pump
        if handle is None or pump is None or self._finishing:
            self._timer.stop()
            return
        final: Result | Failed | None = None
        try:
            final = pump.tick()
        except Exception as exc:  # a slot that raised must not leave the job without a finished signal
            traceback.print_exc()
            if handle.done or not handle.is_alive():
                final = handle.final or Failed(f"the job's events could not be shown: {exc}")
        finally:
            if final is not None or handle.done:
                self._finish(final or handle.final or Failed("the job ended without a result"))

    def _emit(self, ev: Event) -> None:
        if isinstance(ev, Progress):
            self.progress.emit(ev)
        elif isinstance(ev, Metrics):
            self.metrics.emit(ev)
        elif isinstance(ev, Log):
            self.log.emit(ev)
        elif isinstance(ev, Artifact):
            self.artifact.emit(ev)
        elif isinstance(ev, DeviceInfo):
            self.device.emit(ev)

    def _finish(self, final: Result | Failed) -> None:
        self._finishing = True
        self._timer.stop()
        self.final = final
        try:
            if isinstance(final, Failed):
                self.failed.emit(final)
        finally:
            self.finished.emit(final)
            # reap the process without blocking: a short timer retries until it has exited (a QTimer of this
            # job, not QTimer.singleShot(ms, callable), which drops a reference to None per call in PySide6 6.12)
            self._reap_timer.start(50)

    def _reap(self) -> None:
        h = self.handle
        if h is not None and h.is_alive():
            self._reap_timer.start(200)
        elif h is not None:
            h.join(0)


__all__ = ["QtJob"]
