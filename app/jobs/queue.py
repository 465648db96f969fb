"""A job queue: at most one GPU job at a time (queued ones start when it ends); CPU jobs start at once.

Poll-driven like ``JobHandle``: every ``QueuedJob.poll`` (or ``JobQueue.update``) checks whether the GPU
is free and starts the next waiting job, so no extra thread touches the handles.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from app.engine.events import Event, Failed, Result
from app.engine.run_dir import RunDir
from app.jobs.process import JobHandle, prepare_run, spawn


def is_gpu_device(name: str | None) -> bool:
    """True when a job on device ``name`` would use the GPU (cuda, cuda:N, mps, or auto with CUDA)."""
    name = (name or "cpu").lower()
    if name.startswith("cuda") or name == "mps":
        return True
    if name == "auto":
        try:
            import torch

            return bool(torch.cuda.is_available())
        except Exception:
            return False
    return False


class QueuedJob:
    """A job submitted to a ``JobQueue``; the same surface as ``JobHandle`` (poll, events, cancel, join,
    result, error, run_dir) whether it is still waiting or already running."""

    def __init__(self, owner: JobQueue, target: str, rd: RunDir, child_cfg: dict[str, Any], gpu: bool) -> None:
        self._owner = owner
        self.target = target
        self.run_folder = rd
        self.config = child_cfg
        self.gpu = gpu
        self.handle: JobHandle | None = None
        self._final: Result | Failed | None = None  # only for a job cancelled while still waiting
        self._pending_final: list[Event] = []
        self.submitted_at = time.time()
        self.started_at: float | None = None

    @property
    def state(self) -> str:
        """queued | running | done."""
        if self.done:
            return "done"
        return "queued" if self.handle is None else "running"

    @property
    def run_dir(self) -> Path:
        return self.run_folder.path

    @property
    def done(self) -> bool:
        return self._final is not None or (self.handle is not None and self.handle.done)

    @property
    def final(self) -> Result | Failed | None:
        return self._final if self._final is not None else (self.handle.final if self.handle else None)

    @property
    def result(self) -> dict[str, Any] | None:
        f = self.final
        return f.value if isinstance(f, Result) else None

    @property
    def error(self) -> Failed | None:
        f = self.final
        return f if isinstance(f, Failed) else None

    def is_alive(self) -> bool:
        return self.handle is not None and self.handle.is_alive()

    def _start(self) -> None:
        self.handle = spawn(self.target, self.run_folder, self.config)
        self.started_at = time.time()

    def poll(self, timeout: float = 0.0, max_events: int | None = None) -> list[Event]:
        """Events since the last call (none while waiting in the queue)."""
        self._owner.update()
        if self._pending_final:
            out, self._pending_final = self._pending_final, []
            return out
        if self.handle is None:
            if timeout > 0:
                time.sleep(min(timeout, 0.05))
                self._owner.update()
            return []
        return self.handle.poll(timeout, max_events)

    def events(self, poll_s: float = 0.1) -> Iterator[Event]:
        while True:
            evs = self.poll(poll_s)
            yield from evs
            if self.done and not self._pending_final and not evs:
                return

    def cancel(self, grace_s: float = 10.0) -> None:
        """Cancel: a waiting job is dropped from the queue (ends cancelled), a running one is cancelled."""
        if self.handle is not None:
            self.handle.cancel(grace_s)
            return
        if self._final is None:
            self._owner._drop(self)
            ev = Result({"cancelled": True, "queued": True, "run_dir": str(self.run_dir)}, cancelled=True)
            self._final = ev
            self._pending_final = [ev]
            self.run_folder.set_status("cancelled", message="cancelled before it started")
            if self.run_folder.lock is not None:
                self.run_folder.lock.release()

    def join(self, timeout: float | None = None) -> bool:
        end = None if timeout is None else time.monotonic() + timeout
        while self.handle is None and self._final is None:
            if end is not None and time.monotonic() >= end:
                return False
            self.poll(0.05)
        if self.handle is None:
            return True
        return self.handle.join(None if end is None else max(0.0, end - time.monotonic()))

    def __repr__(self) -> str:
        return f"QueuedJob({self.target!r}, {self.state}, gpu={self.gpu}, run_dir={str(self.run_dir)!r})"


class JobQueue:
    """Runs submitted jobs: CPU jobs at once, GPU jobs one at a time in submission order."""

    def __init__(self, max_gpu_jobs: int = 1) -> None:
        self.max_gpu_jobs = max(1, int(max_gpu_jobs))
        self.jobs: list[QueuedJob] = []
        self._waiting: deque[QueuedJob] = deque()

    def submit(self, target: str, config: dict[str, Any], run_dir: str | Path | None = None, *,
               device: str = "cpu", resume: bool = False, gpu: bool | None = None) -> QueuedJob:
        """Add a job; it starts now unless it needs the GPU while another GPU job runs.

        ``gpu`` overrides the decision made from the device (``config["device"]`` or ``device``).
        """
        rd, child_cfg, _ = prepare_run(target, config, run_dir, device=device, resume=resume, status="queued")
        uses_gpu = is_gpu_device(str(child_cfg.get("device"))) if gpu is None else bool(gpu)
        job = QueuedJob(self, target, rd, child_cfg, uses_gpu)
        self.jobs.append(job)
        if uses_gpu:
            self._waiting.append(job)
            rd.log("queued: waiting for the GPU")
            self.update()
        else:
            job._start()
        return job

    def gpu_busy(self) -> int:
        """How many GPU jobs have a live process."""
        return sum(1 for j in self.jobs if j.gpu and j.handle is not None and j.handle.is_alive())

    def update(self) -> None:
        """Start waiting GPU jobs while the GPU is free."""
        while self._waiting and self.gpu_busy() < self.max_gpu_jobs:
            self._waiting.popleft()._start()

    def _drop(self, job: QueuedJob) -> None:
        with contextlib.suppress(ValueError):
            self._waiting.remove(job)

    def waiting(self) -> list[QueuedJob]:
        """Jobs still waiting for the GPU, in order."""
        return list(self._waiting)

    def running(self) -> list[QueuedJob]:
        """Jobs whose process is alive."""
        return [j for j in self.jobs if j.is_alive()]

    def cancel_all(self, grace_s: float = 10.0) -> None:
        """Cancel every waiting and running job."""
        for job in list(self._waiting):
            job.cancel(grace_s)
        for job in self.jobs:
            if job.handle is not None and not job.done:
                job.handle.cancel(grace_s)

    def __len__(self) -> int:
        return len(self.jobs)


__all__ = ["JobQueue", "QueuedJob", "is_gpu_device"]
