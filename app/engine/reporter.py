"""How an engine function reports events and learns that it should stop.

Engine functions take ``reporter: Reporter | None``; ``None`` means a silent ``Reporter()`` so the same
functions run from a notebook. The jobs layer passes a reporter that sends events to the parent process
and whose ``should_stop()`` turns true when the user asks to cancel.
"""

from __future__ import annotations

from collections.abc import Callable

from app.engine.events import Artifact, DeviceInfo, Event, Log, Metrics, Progress


class Cancelled(Exception):
    """Raised by ``Reporter.check_cancel`` so a job can unwind after saving its checkpoint."""


class Reporter:
    """Collects or forwards events. Subclass or pass ``sink`` to forward them somewhere.

    ``history`` keeps every event when ``keep=True`` (used by tests and notebooks).
    """

    def __init__(self, sink: Callable[[Event], None] | None = None, keep: bool = False) -> None:
        self._sink = sink
        self._keep = keep
        self.history: list[Event] = []
        self._stop = False

    # -- sending -----------------------------------------------------------------------------------
    def emit(self, event: Event) -> None:
        """Send one event."""
        if self._keep:
            self.history.append(event)
        if self._sink is not None:
            self._sink(event)

    def progress(self, step: int, total: int, epoch: int | None = None) -> None:
        self.emit(Progress(step, total, epoch))

    def metrics(self, step: int, values: dict[str, float], split: str = "train",
                epoch: int | None = None) -> None:
        self.emit(Metrics(step, {k: float(v) for k, v in values.items()}, split, epoch))

    def log(self, line: str, level: str = "info") -> None:
        self.emit(Log(line, level))

    def artifact(self, kind: str, path: str) -> None:
        self.emit(Artifact(kind, str(path)))

    def device(self, info: DeviceInfo) -> None:
        self.emit(info)

    # -- cancelling --------------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Ask the job to stop at its next check (used in-process; the jobs layer overrides
        ``should_stop`` to read a cross-process flag)."""
        self._stop = True

    def should_stop(self) -> bool:
        """True once a stop was requested. Jobs call this at every step."""
        return self._stop

    def check_cancel(self) -> None:
        """Raise ``Cancelled`` if a stop was requested."""
        if self.should_stop():
            raise Cancelled()


def ensure_reporter(reporter: Reporter | None) -> Reporter:
    """The given reporter, or a silent one."""
    return reporter if reporter is not None else Reporter()
