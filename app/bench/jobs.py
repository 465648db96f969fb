"""``python -m app bench jobs [--json]``: how fast events get from a job to the parent, and whether the GUI
event loop stays smooth while a CPU-heavy job runs in a child process.

Three phases, each with the demo job (``app.engine.demo_job:demo``) doing torch matmuls on one thread:

1. transport: the parent waits on ``JobHandle.poll(timeout)``; latency = receive time - event time stamp
   (``Event.t``, taken in the child), for every Progress/Metrics event;
2. idle GUI: a 10 ms ``QTimer`` in a ``QCoreApplication`` (offscreen) with no job, to show the machine's
   own timer noise;
3. busy GUI: the same 10 ms timer while a 20 ms ``QTimer`` drives an ``EventPump`` (the polling core of
   ``app.ui.qt_jobs.QtJob``, which the bench layer may not import) on the same thread;
   stall = actual interval - 10 ms. Also the latency as seen by the GUI (includes the 20 ms poll tick);
4. flood: as 3, with a job that emits events as fast as it can (no compute), keys prefixed ``flood_``.

Goal (issue 3): p99 stall < 20 ms, worst < 100 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

DEMO = "app.engine.demo_job:demo"


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 2) if values else None


def _heavy_config(work: int, work_s: float) -> dict[str, Any]:
    return {"steps": 10_000_000, "work": work, "work_s": work_s, "ckpt_every": 0, "threads": 1}


def transport_latency(root: Path, seconds: float, work: int, work_s: float) -> dict[str, Any]:
    """Phase 1: latency child -> parent with a parent that waits on the queue."""
    from app.engine.events import Metrics, Progress
    from app.jobs import start_job

    t_start = time.monotonic()
    h = start_job(DEMO, _heavy_config(work, work_s), root / "transport")
    lat: list[float] = []
    t_first = None
    t_any = None
    end = None
    while not h.done:
        for ev in h.poll(timeout=0.05):
            now = time.time()
            if t_any is None:
                t_any = time.monotonic() - t_start
            if isinstance(ev, Progress | Metrics):
                lat.append((now - ev.t) * 1000.0)
                if t_first is None:
                    t_first = time.monotonic()
                    end = t_first + seconds
        if end is not None and time.monotonic() >= end and not h.cancel_requested:
            h.cancel(grace_s=5.0)
    h.join(10)
    return {"event_latency_ms_p50": _pct(lat, 50), "event_latency_ms_p99": _pct(lat, 99),
            "event_latency_ms_max": round(max(lat), 2) if lat else None, "events": len(lat),
            "spawn_to_first_event_s": round(t_any, 2) if t_any is not None else None}


def _timer_stalls(app: Any, seconds: float, on_start: Any = None, until: Any = None) -> list[float]:
    """Run the event loop with a precise 10 ms timer for ``seconds``; returns the stalls (ms)."""
    from PySide6.QtCore import Qt, QTimer

    stamps: list[float] = []
    timer = QTimer()
    timer.setTimerType(Qt.TimerType.PreciseTimer)
    timer.setInterval(10)
    timer.timeout.connect(lambda: stamps.append(time.perf_counter()))
    t_end: list[float] = []

    def check() -> None:
        if t_end and time.perf_counter() >= t_end[0]:
            timer.stop()
            app.quit()

    timer.timeout.connect(check)

    def begin() -> None:
        t_end.append(time.perf_counter() + seconds)
        timer.start()

    if on_start is not None:
        on_start(begin)
    else:
        begin()
    app.exec()
    iv = np.diff(np.array(stamps)) * 1000.0
    return [float(max(0.0, x - 10.0)) for x in iv]


def _app() -> Any:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QCoreApplication

    return QCoreApplication.instance() or QCoreApplication([])


def gui_busy_phase(root: Path, seconds: float, config: dict[str, Any], name: str) -> dict[str, Any]:
    """GUI timer stalls while a job's events are relayed on the GUI thread (20 ms poll, as QtJob)."""
    from PySide6.QtCore import QTimer

    from app.engine.events import Metrics, Progress
    from app.jobs import start_job
    from app.jobs.pump import EventPump

    app = _app()
    state: dict[str, Any] = {"pump": None}
    poller = QTimer()
    poller.setInterval(20)

    def start_when_events_flow(begin: Any) -> None:
        # measure only once the child has imported torch and events flow
        started: list[bool] = []

        def deliver(ev: Any) -> None:  # what QtJob does: emit a signal per event
            if isinstance(ev, Progress) and not started:
                started.append(True)
                begin()

        handle = start_job(DEMO, config, root / name)
        pump = EventPump(handle, deliver)
        pump.receive_times = []
        state["pump"] = pump

        def tick() -> None:
            if pump.tick() is not None:
                poller.stop()

        poller.timeout.connect(tick)
        poller.start()

    busy = _timer_stalls(app, seconds, on_start=start_when_events_flow)
    poller.stop()
    pump = state["pump"]
    pump.handle.cancel(grace_s=5.0)
    pump.handle.join(30)
    glat = [(t - ev.t) * 1000.0 for t, ev in pump.receive_times or [] if isinstance(ev, Progress | Metrics)]
    return {"stall_ms_p50": _pct(busy, 50), "stall_ms_p99": _pct(busy, 99),
            "stall_ms_max": round(max(busy), 2) if busy else None, "timer_ticks": len(busy),
            "gui_event_latency_ms_p50": _pct(glat, 50), "gui_event_latency_ms_p99": _pct(glat, 99),
            "gui_events": len(glat), "gui_events_per_s": round(len(glat) / seconds, 1)}


def main(argv: list[str]) -> int:
    """Run the benchmark; prints a summary or (``--json``) one JSON object."""
    ap = argparse.ArgumentParser(prog="python -m app bench jobs", description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--seconds", type=float, default=5.0, help="length of each busy phase (default 5)")
    ap.add_argument("--idle-seconds", type=float, default=2.0, help="length of the idle phase (default 2)")
    ap.add_argument("--flood-seconds", type=float, default=3.0,
                    help="length of the phase with an event-flooding job (default 3; 0 skips it)")
    ap.add_argument("--work", type=int, default=256, help="matmul size in the child (default 256)")
    ap.add_argument("--work-s", type=float, default=0.02, help="compute seconds per job step (default 0.02)")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    out: dict[str, Any] = {"bench": "jobs", "cpu_count": os.cpu_count(),
                           "loadavg_before": [round(x, 2) for x in os.getloadavg()],
                           "work": args.work, "work_s_per_step": args.work_s, "seconds": args.seconds}
    with tempfile.TemporaryDirectory(prefix="omicslab-bench-jobs-") as tmp:
        root = Path(tmp)
        out.update(transport_latency(root, args.seconds, args.work, args.work_s))
        idle = _timer_stalls(_app(), args.idle_seconds)
        out["idle_stall_ms_p99"] = _pct(idle, 99)
        out["idle_stall_ms_max"] = round(max(idle), 2) if idle else None
        out.update(gui_busy_phase(root, args.seconds, _heavy_config(args.work, args.work_s), "heavy"))
        if args.flood_seconds > 0:  # a job that emits events as fast as it can (no compute)
            flood = gui_busy_phase(root, args.flood_seconds, _heavy_config(0, 0.0), "flood")
            out.update({f"flood_{k}": v for k, v in flood.items()})
    out["goal_met"] = bool(out["stall_ms_p99"] is not None and out["stall_ms_p99"] < 20
                           and out["stall_ms_max"] is not None and out["stall_ms_max"] < 100)
    if args.json:
        print(json.dumps(out))
    else:
        print(f"spawned child's first event after {out['spawn_to_first_event_s']} s (python + torch import)")
        print(f"event latency child->parent: p50 {out['event_latency_ms_p50']} ms, "
              f"p99 {out['event_latency_ms_p99']} ms ({out['events']} events)")
        print(f"GUI 10 ms timer stall with a heavy job: p50 {out['stall_ms_p50']} ms, p99 {out['stall_ms_p99']} ms, "
              f"worst {out['stall_ms_max']} ms ({out['timer_ticks']} ticks)")
        print(f"  idle (no job): p99 {out['idle_stall_ms_p99']} ms, worst {out['idle_stall_ms_max']} ms")
        print(f"  event latency as seen by the GUI: p50 {out['gui_event_latency_ms_p50']} ms, "
              f"p99 {out['gui_event_latency_ms_p99']} ms")
        if "flood_stall_ms_p99" in out:
            print(f"  with an event-flooding job ({out['flood_gui_events_per_s']} events/s): stall p99 "
                  f"{out['flood_stall_ms_p99']} ms, worst {out['flood_stall_ms_max']} ms")
        print(f"goal (p99 < 20 ms, worst < 100 ms): {'met' if out['goal_met'] else 'NOT met'}")
    return 0
