"""The window's one job slot: starts the session's ``JobRequest`` as a spawned ``QtJob`` and relays its events.

Views (the Train tab's progress bar, curves and log; later the live map) bind to the runner's signals; the
runner tells the ``Session`` when a job started and how it ended, and the session decides what follows.
``finished`` is emitted before the session hears of the end, so views re-enable their buttons first and a
follow-up job (the fine-tune's embed-all) disables them again through ``started``.
"""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal

from app.engine.events import Failed, Result
from app.ui.qt_jobs import QtJob
from app.ui.session import JobRequest, Session


class JobRunner(QObject):
    """Runs one job at a time for a ``Session``.

    Signals: ``started(JobRequest)``, ``progress(Progress)``, ``metrics(Metrics)``, ``log(Log)``,
    ``artifact(Artifact)``, ``device(DeviceInfo)``, ``finished(JobRequest, Result | Failed)``.
    """

    started = Signal(object)
    progress = Signal(object)
    metrics = Signal(object)
    log = Signal(object)
    artifact = Signal(object)
    device = Signal(object)
    finished = Signal(object, object)

    def __init__(self, session: Session, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.job: QtJob | None = None  # the current (or last) job
        self.req: JobRequest | None = None
        self.jobs_started = 0
        session.events.job_requested.connect(self.start)

    @property
    def running(self) -> bool:
        """A job is running."""
        return self.job is not None and self.job.running

    def start(self, req: JobRequest) -> bool:
        """Start ``req`` unless a job runs already; a start failure becomes a message, not a crash."""
        if self.running:
            self.session.log(f"a job is running; {req.target} was not started", "warning")
            return False
        from app.ui.loaders import env_threads

        if env_threads() and not req.config.get("threads"):
            req.config["threads"] = env_threads()
        job = QtJob(self)
        job.progress.connect(self.progress)
        job.metrics.connect(self.metrics)
        job.log.connect(self.log)
        job.artifact.connect(self.artifact)
        job.device.connect(self.device)
        job.finished.connect(lambda final, job=job, req=req: self._finished(job, req, final))
        self.session.log(f"starting {req.target} in {req.run_dir}" + (" (resume)" if req.resume else ""))
        try:
            job.start(req.target, req.config, req.run_dir, device=req.device, resume=req.resume)
        except Exception as exc:  # a bad folder, a spawn error
            job.deleteLater()
            self.session.events.problem.emit("The job could not start", str(exc), "")
            return False
        self.job, self.req = job, req
        self.jobs_started += 1
        self.session.job_started(req)
        self.started.emit(req)
        return True

    def stop(self) -> None:
        """Ask the job to stop; it saves a checkpoint (Resume continues from it)."""
        if self.running:
            self.session.log("stop requested: the job saves a checkpoint and ends")
            self.job.cancel()

    def shutdown(self, grace_s: float = 2.0, wait_s: float = 8.0) -> None:
        """Stop a running job and wait (bounded) for its process: the window is closing."""
        job = self.job
        if job is not None and job.handle is not None and not job.handle.done:
            job.cancel(grace_s=grace_s)
            job.handle.join(timeout=wait_s)

    def _finished(self, job: QtJob, req: JobRequest, final: Result | Failed) -> None:
        try:
            self.finished.emit(req, final)
        finally:  # whatever a view did, the session hears the end (and may start the next job)
            self.session.job_finished(req, final)
            if isinstance(final, Failed):
                self.session.events.problem.emit("The run failed", final.message, final.details)


__all__ = ["JobRunner"]
