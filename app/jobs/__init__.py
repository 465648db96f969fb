"""Jobs layer: run an engine job in a spawned child process, stream its events back, cancel it.

Public API: ``start_job`` -> ``JobHandle`` (poll / events / cancel / join / result / error), ``JobQueue``
(one GPU job at a time), ``JobFailed`` (the OmicsLabError raised by ``cli_runner.run_with_progress``).
"""

from app.jobs.process import JobFailed, JobHandle, start_job
from app.jobs.pump import EventPump
from app.jobs.queue import JobQueue, QueuedJob, is_gpu_device

__all__ = ["EventPump", "JobFailed", "JobHandle", "JobQueue", "QueuedJob", "is_gpu_device", "start_job"]
