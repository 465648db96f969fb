"""What runs inside the spawned child process: set up logging, device and threads, call the job function,
and send every event (and finally a ``Result`` or ``Failed``) to the parent.

Kept free of Qt and light to import: the child pays the import cost of torch once, and nothing else.
"""

from __future__ import annotations

import contextlib
import faulthandler
import importlib
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from app.data.jsonsafe import json_safe
from app.engine.events import Event, Failed, Log, Progress, Result
from app.engine.reporter import Cancelled, Reporter

LOG_TAIL = 20
JOB_NICE = 5  # CPU priority drop of job processes (Unix nice); env OMICSLAB_JOB_NICE overrides
MEMORY_REPORT_S = 2.0  # how often a CUDA job re-reports the GPU memory in use


class QueueReporter(Reporter):
    """A reporter whose events go to the parent through a multiprocessing queue, whose log lines also
    go to the run folder's log, and whose ``should_stop`` reads a cross-process flag."""

    def __init__(self, queue: Any, stop_event: Any, log_fn: Callable[[str], None] | None = None) -> None:
        super().__init__(sink=self._send)
        self._queue = queue
        self._stop_event = stop_event
        self._log_fn = log_fn
        self.cuda_device: Any = None  # set on CUDA: memory in use is then re-reported with progress
        self._last_mem = 0.0

    def _send(self, event: Event) -> None:
        if self.cuda_device is not None and isinstance(event, Progress):
            now = time.monotonic()
            if now - self._last_mem >= MEMORY_REPORT_S:
                self._last_mem = now
                with contextlib.suppress(Exception):
                    from app.engine.device import device_info

                    self._queue.put(device_info(self.cuda_device))
        if isinstance(event, Log) and self._log_fn is not None:
            with contextlib.suppress(OSError):  # a full disk must not kill the run over a log line
                self._log_fn(event.line if event.level == "info" else f"{event.level.upper()}: {event.line}")
        self._queue.put(event)

    def should_stop(self) -> bool:
        return self._stop or self._stop_event.is_set()


def load_target(target: str) -> Callable[..., Any]:
    """Import ``"package.module:function"``."""
    from app.data.errors import OmicsLabError

    mod_name, _, fn_name = target.partition(":")
    if not mod_name or not fn_name:
        raise OmicsLabError(f"job target {target!r} must look like 'package.module:function'")
    try:
        module = importlib.import_module(mod_name)
    except ImportError as exc:
        raise OmicsLabError(f"cannot import the job module {mod_name!r}: {exc}") from exc
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise OmicsLabError(f"the job module {mod_name!r} has no function {fn_name!r}")
    return fn


def _redirect_output(log_path: str) -> Any:
    """Send this process's stdout/stderr (fd level, so native code and faulthandler too) to the log."""
    fh = open(log_path, "a", buffering=1, encoding="utf-8", errors="replace")  # noqa: SIM115 (lives on)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:
        pass
    os.dup2(fh.fileno(), 1)
    os.dup2(fh.fileno(), 2)
    sys.stdout = fh
    sys.stderr = fh
    faulthandler.enable(file=fh, all_threads=False)
    return fh


def _disk_full(exc: BaseException) -> bool:
    """A full disk, however the library reported it (OSError ENOSPC, safetensors' "os error 28", ...)."""
    import errno

    for _ in range(8):  # the exception and its causes (bounded: a context chain can loop)
        if exc is None:
            break
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(exc) or "os error 28" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return False


def failure_from_exception(exc: BaseException, log_tail: list[str]) -> Failed:
    """A user-facing ``Failed`` for an exception raised by a job."""
    from app.data.errors import OmicsLabError

    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    details = tb + ("\nLast log lines:\n" + "\n".join(log_tail) if log_tail else "")
    if isinstance(exc, OmicsLabError):
        return Failed(str(exc), details)
    name = type(exc).__name__
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if "OutOfMemoryError" in name or "out of memory" in text.lower():
        msg = (f"the device ran out of memory ({text[:200]}). Use a smaller batch size, a shorter max length "
               "or the CPU, then resume from the last checkpoint.")
    elif _disk_full(exc):
        msg = ("the disk is full: the run could not write its files (checkpoint, metrics or model). Free some space "
               "on that disk, then resume from the last checkpoint (`python -m app runs resume RUN`).")
    elif isinstance(exc, PermissionError):
        msg = (f"permission denied while the job read or wrote a file ({text[:200]}). Change the permissions or "
               "choose a folder of yours, then start again.")
    elif isinstance(exc, MemoryError):
        msg = "the computer ran out of memory. Use a smaller batch size or fewer cells, then resume."
    else:
        msg = f"the job stopped with an unexpected error: {name}: {text[:300]}".rstrip(": ")
    return Failed(msg, details)


def child_main(target: str, config: dict[str, Any], run_dir: str, queue: Any, stop_event: Any) -> None:
    """Entry point of the job process (top-level so that ``spawn`` can pickle it)."""
    # Ctrl-C in a terminal reaches the whole process group; the parent turns it into a graceful cancel.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A background job yields the CPU to the window: measured on 2 busy cores, a chatty job's GUI stall
    # p99 went from ~18 ms to ~8 ms at nice 5. Set OMICSLAB_JOB_NICE=0 to turn off.
    with contextlib.suppress(OSError, AttributeError, ValueError):
        nice = int(os.environ.get("OMICSLAB_JOB_NICE", JOB_NICE))
        if nice > 0:
            os.nice(nice)
    from app.engine.run_dir import RunDir

    rd = RunDir(run_dir)
    with contextlib.suppress(OSError):
        _redirect_output(str(rd.path / "log.txt"))
    reporter = QueueReporter(queue, stop_event, rd.log)
    parent_gone = _watch_parent(reporter, queue, rd)
    final: Event
    try:
        from app.engine.device import resolve_threads
        from app.engine.registry import by_target

        entry = by_target(target)
        job_config: Any = entry.config.coerce(config) if entry is not None else config  # typed when registered
        threads = resolve_threads(getattr(job_config, "threads", None) if entry else config.get("threads"))
        device = str(getattr(job_config, "device", None) if entry else config.get("device", "cpu"))
        # before torch loads, so its OpenMP pool is sized too (the job sets torch's threads the same way)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        os.environ["MKL_NUM_THREADS"] = str(threads)
        from app.engine.device import device_info, resolve_compute

        dev, threads = resolve_compute(device, threads)
        if dev.type == "cuda":
            reporter.cuda_device = dev
            reporter._last_mem = time.monotonic()
        reporter.device(device_info(dev))
        reporter.log(f"job {target} started (pid {os.getpid()}, device {dev}, {threads} thread(s))")
        rd.set_status("running", pid=os.getpid(), device=str(dev))
        fn = load_target(target)
        value = fn(job_config, reporter)
        if value is None:
            value = {}
        value = json_safe(value)  # typed results and dicts alike: always JSON-safe when it crosses over
        if not isinstance(value, dict):
            value = {"value": value}
        cancelled = bool(value.get("cancelled"))
        final = Result(value, cancelled=cancelled)
    except Cancelled:
        last = rd.last_checkpoint()
        final = Result({"cancelled": True, "run_dir": run_dir, "checkpoint": str(last) if last else None},
                       cancelled=True)
    except BaseException as exc:  # the parent must hear about every failure, even SystemExit
        final = failure_from_exception(exc, rd.tail_log(LOG_TAIL))
    try:
        if isinstance(final, Result):
            rd.write_result(final.value)
            rd.set_status("cancelled" if final.cancelled else "done")
            rd.log("cancelled" if final.cancelled else "done")
        else:
            rd.set_status("failed", message=final.message)
            rd.log(f"FAILED: {final.message}")
            rd.log(final.details)
    except OSError:
        pass
    queue.put(final)
    queue.close()
    if not parent_gone.is_set():
        queue.join_thread()  # make sure the final event reached the pipe before the process ends


def _watch_parent(reporter: QueueReporter, queue: Any, rd: Any) -> threading.Event:
    """If the app that started this job dies (killed, crashed), stop the job as if cancelled: it saves a
    checkpoint at its next step and ends, instead of running on unseen with nobody to read its events
    (and then blocking forever on a full pipe at exit)."""
    gone = threading.Event()
    parent = mp.parent_process()
    if parent is None:
        return gone

    def watch() -> None:
        parent.join()  # returns when the parent process has ended
        gone.set()
        queue.cancel_join_thread()
        reporter.request_stop()
        with contextlib.suppress(OSError):
            rd.log("the app that started this job has ended: stopping at the next step (a checkpoint is saved)")

    threading.Thread(target=watch, name="omicslab-parent-watch", daemon=True).start()
    return gone
