"""The event types an engine job reports, defined once for engine, jobs, GUI and CLI.

Events are small, picklable dataclasses: they cross a process boundary through a queue. Large arrays
never travel as events: a job writes them to a file in its run folder and reports an ``Artifact``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Progress:
    """``step`` of ``total`` done (total 0 when unknown); ``epoch`` when the job has epochs."""

    step: int
    total: int
    epoch: int | None = None
    t: float = field(default_factory=time.time)


@dataclass(frozen=True)
class Metrics:
    """Scalar metrics at ``step``, e.g. ``{"loss": 0.3, "lr": 1e-4}``; ``split`` is train/val/test."""

    step: int
    values: dict[str, float]
    split: str = "train"
    epoch: int | None = None
    t: float = field(default_factory=time.time)


@dataclass(frozen=True)
class Log:
    """One human-readable log line."""

    line: str
    level: str = "info"
    t: float = field(default_factory=time.time)


@dataclass(frozen=True)
class Artifact:
    """A file the job wrote: ``kind`` is e.g. "checkpoint", "embedding", "predictions", "metrics"."""

    kind: str
    path: str
    t: float = field(default_factory=time.time)


@dataclass(frozen=True)
class DeviceInfo:
    """The device the job got, and on CUDA the memory in use (bytes)."""

    device: str
    name: str = ""
    memory_allocated: int | None = None
    memory_total: int | None = None
    t: float = field(default_factory=time.time)


@dataclass(frozen=True)
class Result:
    """The job's final, JSON-serialisable result. Always the last event of a successful job."""

    value: dict[str, Any]
    cancelled: bool = False
    t: float = field(default_factory=time.time)


@dataclass(frozen=True)
class Failed:
    """The job ended in an error. ``message`` is for the user; ``details`` (traceback, last log lines)
    go to the log pane only."""

    message: str
    details: str = ""
    t: float = field(default_factory=time.time)


Event = Progress | Metrics | Log | Artifact | DeviceInfo | Result | Failed
