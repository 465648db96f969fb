"""Drain a job's events in small, bounded batches: the GUI-independent core of a polling adapter.

A GUI timer calls ``EventPump.tick()``; it never blocks (``poll(timeout=0)``), works for at most
``budget_s`` (default 4 ms) or ``max_events`` events per tick, and coalesces Progress events within a
chunk (only the newest is delivered, always before a later Metrics event, so order is kept).
``app.ui.qt_jobs.QtJob`` turns the callbacks into Qt signals; the jobs benchmark uses the same pump with
a bare QTimer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from app.engine.events import Event, Failed, Metrics, Progress, Result


class EventPump:
    """Deliver a handle's events to ``deliver(event)``; ``tick()`` returns the final event once reached."""

    def __init__(self, handle: Any, deliver: Callable[[Event], None], *, max_events: int = 500,
                 budget_s: float = 0.004, chunk: int = 16, coalesce_progress: bool = True) -> None:
        self.handle = handle
        self.deliver = deliver
        self.max_events = max_events
        self.budget_s = budget_s
        self.chunk = max(1, chunk)
        self.coalesce_progress = coalesce_progress
        self.receive_times: list[tuple[float, Event]] | None = None  # set to [] to record (benchmarks)

    def tick(self) -> Result | Failed | None:
        """Drain events for at most ``budget_s`` seconds / ``max_events`` events, in chunks; returns the
        final event when it arrived (else None). What is left waits for the next tick."""
        t_end = time.perf_counter() + self.budget_s
        done = 0
        while done < self.max_events:
            events = self.handle.poll(0.0, min(self.chunk, self.max_events - done))
            if not events:
                return None
            done += len(events)
            final = self._dispatch(events)
            if final is not None:
                return final
            if time.perf_counter() >= t_end:
                return None
        return None

    def _dispatch(self, events: list[Event]) -> Result | Failed | None:
        if self.receive_times is not None:
            now = time.time()
            self.receive_times.extend((now, ev) for ev in events)
        final: Result | Failed | None = None
        pending: Progress | None = None
        for ev in events:
            if isinstance(ev, Result | Failed):
                final = ev
                continue
            if isinstance(ev, Progress) and self.coalesce_progress:
                pending = ev
                continue
            if pending is not None and isinstance(ev, Metrics):
                self.deliver(pending)
                pending = None
            self.deliver(ev)
        if pending is not None:
            self.deliver(pending)
        return final


__all__ = ["EventPump"]
