"""How busy the machine was while a benchmark ran: the load average (sampled through the run) and the cores.

A figure measured at load 6 on 2 cores overstates costs several-fold, so every ``python -m app bench`` carries
this beside its figures (the runner adds it; no benchmark has to remember to).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Any

SAMPLE_S = 5.0


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask; ``os.cpu_count`` where there is none)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def load_average() -> tuple[float, float, float] | None:
    """The 1/5/15-minute load averages, or None where the OS has none (Windows)."""
    try:
        return tuple(round(v, 2) for v in os.getloadavg())  # type: ignore[return-value]
    except (AttributeError, OSError):
        return None


@dataclass
class LoadMonitor:
    """Samples the 1-minute load average every ``SAMPLE_S`` seconds in a daemon thread between
    :meth:`start` and :meth:`stop`; :meth:`summary` says how busy the machine was."""

    interval_s: float = SAMPLE_S
    cores: int = field(default_factory=usable_cores)
    start_load: tuple[float, float, float] | None = None
    end_load: tuple[float, float, float] | None = None
    samples: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> LoadMonitor:
        """Record the load now and begin sampling."""
        self.start_load = load_average()
        if self.start_load is not None:
            self.samples.append(self.start_load[0])
            self._thread = threading.Thread(target=self._run, name="bench-load", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            la = load_average()
            if la is not None:
                self.samples.append(la[0])

    def stop(self) -> LoadMonitor:
        """Stop sampling and record the load at the end."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        self.end_load = load_average()
        if self.end_load is not None:
            self.samples.append(self.end_load[0])
        return self

    def summary(self) -> dict[str, Any]:
        """JSON-ready: cores, load at start and end (1/5/15 min), mean and max of the 1-minute load during
        the run, ``busy`` (max above the core count) and a warning sentence when busy."""
        mean = round(sum(self.samples) / len(self.samples), 2) if self.samples else None
        peak = max(self.samples) if self.samples else None
        busy = peak is not None and peak > self.cores
        return {
            "cores": self.cores, "load_start": list(self.start_load) if self.start_load else None,
            "load_end": list(self.end_load) if self.end_load else None, "load_1m_mean": mean,
            "load_1m_max": peak, "busy": busy,
            "warning": (f"the load average reached {peak:.1f} on {self.cores} cores: other work shared the CPU, "
                        "so times here overstate the cost on a quiet machine") if busy else None,
        }

    def text(self) -> str:
        """One line for a table's footer, e.g. ``machine: 2 cores, load average 1.2 mean / 2.3 max during
        the run (1-min)``, plus the warning when busy."""
        s = self.summary()
        if s["load_1m_mean"] is None:
            return f"machine: {self.cores} cores, load average not available on this OS"
        line = (f"machine: {self.cores} cores, load average {s['load_1m_mean']:.2f} mean / {s['load_1m_max']:.2f} max "
                f"during the run (1-min; at start {s['load_start'][0]:.2f})")
        return line + (f"\nWARNING: {s['warning']}" if s["warning"] else "")


__all__ = ["LoadMonitor", "load_average", "usable_cores"]
