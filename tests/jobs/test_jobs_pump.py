"""EventPump: bounded, non-blocking, order-keeping delivery (no child process needed)."""

from __future__ import annotations

import time

from app.engine.events import Log, Metrics, Progress, Result
from app.jobs.pump import EventPump


class FakeHandle:
    """Hands out queued events like JobHandle.poll; optionally slow per event."""

    def __init__(self, events: list, cost_s: float = 0.0) -> None:
        self.events = list(events)
        self.cost_s = cost_s
        self.calls: list[float] = []

    def poll(self, timeout: float = 0.0, max_events: int | None = None) -> list:
        self.calls.append(timeout)
        n = len(self.events) if max_events is None else max_events
        out, self.events = self.events[:n], self.events[n:]
        if self.cost_s:
            time.sleep(self.cost_s * len(out))
        return out


def test_pump_keeps_order_coalesces_progress_and_returns_the_final_event() -> None:
    evs = [Progress(1, 4), Progress(2, 4), Metrics(2, {"loss": 1.0}), Progress(3, 4), Log("x"), Progress(4, 4),
           Result({"ok": 1})]
    h = FakeHandle(evs)
    got: list = []
    pump = EventPump(h, got.append, chunk=100)
    final = pump.tick()
    assert isinstance(final, Result) and final.value == {"ok": 1}
    assert [type(e).__name__ for e in got] == ["Progress", "Metrics", "Log", "Progress"]
    assert [e.step for e in got if isinstance(e, Progress)] == [2, 4]
    assert all(t == 0.0 for t in h.calls)  # never blocks


def test_pump_stops_at_its_time_budget_and_event_cap() -> None:
    h = FakeHandle([Metrics(i, {"loss": 0.0}) for i in range(1000)], cost_s=0.0005)
    got: list = []
    pump = EventPump(h, got.append, budget_s=0.004, chunk=4)
    assert pump.tick() is None
    assert 0 < len(got) < 100  # the rest waits for the next tick
    n_first = len(got)
    pump.tick()
    assert [e.step for e in got] == list(range(len(got))) and len(got) > n_first
    capped = EventPump(FakeHandle([Log(str(i)) for i in range(50)]), [].append, max_events=10, budget_s=10)
    capped.tick()
    assert len(capped.handle.events) == 40
