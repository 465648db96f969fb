"""Run an engine job in a spawned child process and stream its events back.

``start_job`` creates (or reopens) the run folder, starts the child with the ``spawn`` context (CUDA
cannot live in a forked child, and forking a process that has Qt threads is unsafe) and returns a
``JobHandle``. The parent never blocks unless it asks to: ``poll(timeout=0)`` drains what has arrived,
``cancel`` only sets a flag and arms a deadline, and the forceful steps (terminate, then kill) happen on
later polls or from a timer thread. Whatever the child does (raise, ``os._exit``, segfault, get killed),
the handle ends with exactly one final event, a ``Result`` or a ``Failed``, and the parent goes on.
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing as mp
import os
import queue as _queue
import signal
import sys
import threading
import time
import types
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from app.data.errors import DataError, OmicsLabError, os_error_words
from app.engine.events import Event, Failed, Result
from app.engine.registry import by_target
from app.engine.run_dir import (
    RunDir,
    RunLock,
    check_not_foreign,
    default_runs_root,
    is_own_folder,
    move_previous_run,
    new_run_name,
)

_CTX = mp.get_context("spawn")
_KILL_AFTER_TERM_S = 3.0
_EXIT_AFTER_FINAL_S = 15.0  # a child still alive this long after its final event is terminated
_LIVE: weakref.WeakSet[JobHandle] = weakref.WeakSet()

_SIGNAL_WORDS = {"SIGSEGV": "a segmentation fault", "SIGKILL": "killed (out of memory or by the system)",
                 "SIGTERM": "terminated", "SIGABRT": "aborted", "SIGBUS": "a bus error", "SIGFPE": "a math fault",
                 "SIGILL": "an illegal instruction"}


class JobFailed(OmicsLabError):
    """A job ended in an error; ``str(err)`` is the user message, ``.failed`` the full event."""

    def __init__(self, failed: Failed, run_dir: Path | None = None) -> None:
        self.failed = failed
        self.run_dir = run_dir
        msg = failed.message
        if run_dir is not None:
            msg += f"\n  Details: {Path(run_dir) / 'log.txt'}"
        super().__init__(msg)


def target_kind(target: str) -> str:
    """A short run kind from a target: ``app.engine.celllm.finetune:finetune`` -> ``finetune``."""
    return target.rpartition(":")[2] or target.rpartition(".")[2] or "job"


def describe_exit(exitcode: int | None) -> str:
    """Plain words for a process exit code (negative = killed by a signal)."""
    if exitcode is None:
        return "is still running"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        words = _SIGNAL_WORDS.get(name)
        return f"was stopped by {name}" + (f" ({words})" if words else "")
    return f"exited with code {exitcode}"


def _telling_line(tail: list[str]) -> str:
    """The log line that best says why a child died: Python's fatal-error line when faulthandler wrote
    one, else the last line that is not part of a stack dump."""
    for line in reversed(tail):
        if line.startswith("Fatal Python error"):
            return line.strip()
    noise = ("Extension modules:", "  File ", "Thread 0x", "Current thread", "Stack (most recent", "<no Python")
    for line in reversed(tail):
        if line.strip() and not line.startswith(noise):
            return line.strip()
    return ""


FINISHED = ("done",)
# A resume (CLI `runs resume`, the window's Resume) starts only the registry's jobs (and the demo job of the
# jobs tests and benchmarks): run.json is a file anyone can edit, so its "module:function" is never trusted.
RESUMABLE_UNREGISTERED = ("app.engine.demo_job:demo",)


def prepare_run(target: str, config: dict[str, Any], run_dir: str | Path | None = None, *, device: str = "cpu",
                resume: bool = False, status: str = "queued") -> tuple[RunDir, dict[str, Any], bool]:
    """Create or reopen the run folder and build the config the child receives.

    Returns (run folder, child config, resume). ``config["run_dir"]`` is used when ``run_dir`` is None;
    ``config["resume"]`` True also means resume. ``config["device"]`` wins over ``device``.

    The folder is protected: ``rd.lock`` (a ``RunLock``) is held until the job ends, so a second run on it
    is refused; a non-empty folder that is not a run is refused; a new (non-resume) run into a folder that
    holds a run moves that whole run into ``previous-STAMP/`` first; resuming a finished run is refused.
    Every refusal and OS error (full disk, permissions) is a DataError.
    """
    if ":" not in target:
        raise OmicsLabError(f"job target {target!r} must look like 'package.module:function'")
    cfg = dict(config or {})
    resume = bool(resume or cfg.pop("resume", None))
    overrides = dict(cfg)  # what this call asks for, before the run's stored settings are merged in
    if run_dir is None and cfg.get("run_dir"):
        run_dir = cfg["run_dir"]
    cfg.setdefault("device", device)
    entry = by_target(target)
    if entry is not None:  # a registered job: its config is checked before any folder is made
        base: dict[str, Any] = {}
        if resume and run_dir is not None and RunDir.is_run_dir(run_dir):
            with contextlib.suppress(OSError, ValueError):  # resuming: the run's own settings, then the overrides
                base = dict(RunDir(run_dir).read_config() or {})
        probe = {**base, **cfg, "run_dir": str(run_dir) if run_dir is not None else "(new run folder)"}
        probe.pop("resume", None)
        cfg = {**entry.config.from_dict(probe, run_dir).to_dict(), "run_dir": cfg.get("run_dir")}
        cfg.pop("resume", None)
        if cfg["run_dir"] is None:
            cfg.pop("run_dir")
    if run_dir is None:
        run_dir = default_runs_root() / new_run_name(target_kind(target))
    path = Path(run_dir)
    if resume and not RunDir.is_run_dir(path):
        raise DataError("cannot resume: this is not a run folder", path,
                        "Give the folder of an earlier run (see `python -m app runs list`).")
    if resume:
        _check_resumable(RunDir.open(path), target, overrides)  # before the lock: a refusal changes nothing
    else:
        check_not_foreign(path)
    lock = None
    try:
        if path.is_dir():
            lock = RunLock(path).acquire()
        rd, moved = _open_or_create(target, cfg, path, resume, status)
        if lock is None:
            lock = RunLock(rd.path).acquire()
        rd.lock = lock
        if moved is not None:
            rd.log(f"new run in an existing run folder: the whole previous run (model, metrics, config, log, "
                   f"checkpoints) moved to {moved.name}/")
    except (OSError, DataError) as exc:
        if lock is not None:
            lock.release()
        err = exc if isinstance(exc, DataError) else DataError(
            f"cannot prepare the run folder: {os_error_words(exc)[0]}", path, os_error_words(exc)[1])
        if RunDir.is_run_dir(path) and RunDir(path).status in ("queued", "starting"):
            with contextlib.suppress(OSError):  # never left "starting" forever (a full disk may refuse this too)
                RunDir(path).set_status("failed", message=str(err)[:500])
        raise err from exc
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    child_cfg = dict(cfg)
    if resume:
        child_cfg["resume"] = True
    return rd, child_cfg, resume


LENGTH_KEYS = ("epochs", "steps", "max_steps")
"""Settings that say how long a job trains: a resume that raises one of them continues a finished run."""


def _extends(rd: RunDir, overrides: dict[str, Any]) -> bool:
    """True when ``overrides`` ask a finished run to train longer than it did (e.g. --epochs 2 after 1)."""
    try:
        stored = rd.read_config() or {}
    except (OSError, ValueError):
        return False
    for key in LENGTH_KEYS:
        new, old = overrides.get(key), stored.get(key)
        if isinstance(new, int | float) and isinstance(old, int | float) and new > old:
            return True
    return False


def _check_resumable(rd: RunDir, target: str, overrides: dict[str, Any] | None = None) -> None:
    """Refuse to resume a job OmicsLab does not know, or a finished run (unless asked to train it longer)."""
    if by_target(target) is None and target not in RESUMABLE_UNREGISTERED:
        raise DataError(f"run.json names a job that OmicsLab does not know ({target[:120]!r}); it is not run",
                        rd.path / "run.json", "Resume only runs made by OmicsLab; if this one was, its run.json "
                        "was changed: start the run again with its original command.")
    if rd.status in FINISHED and not _extends(rd, overrides or {}):
        raise DataError(f"this run has already finished (status {rd.status}); there is nothing to resume",
                        rd.path, "Its model and metrics are in the folder (`python -m app runs show "
                        f"{rd.path}`). To train it longer, resume with a larger --epochs; to train again, start a "
                        "new run with another --out folder.")


def _open_or_create(target: str, cfg: dict[str, Any], path: Path, resume: bool,
                    status: str) -> tuple[RunDir, Path | None]:
    """The run folder for ``prepare_run`` (called with the folder's lock held when it already exists)."""
    if resume:
        rd = RunDir.open(path)
        _check_resumable(rd, target, cfg)  # again, now that the lock is held
        cfg["run_dir"] = str(rd.path)
        rd.write_config(cfg)
        rd.update_run_info(target=target, status=status, message=None)
        step = rd.rewind_to_checkpoint()
        rd.log(f"resuming from {'step ' + str(step) if step is not None else 'the start (no checkpoint)'}")
        return rd, None
    moved = move_previous_run(path) if path.is_dir() and is_own_folder(path) else None
    rd = RunDir.create(path, target_kind(target), {}, target=target, status=status)
    cfg["run_dir"] = str(rd.path)
    rd.write_config(cfg)
    rd.update_run_info(message=None, created=time.time())
    return rd, moved


class JobHandle:
    """The parent's view of one running job. Not thread-safe: use it from one thread (the GUI thread)."""

    def __init__(self, target: str, rd: RunDir, config: dict[str, Any], process: Any, events_q: Any,
                 stop_event: Any) -> None:
        self.target = target
        self.run_folder = rd
        self.config = config
        self._process = process
        self._q = events_q
        self._stop = stop_event
        self._final: Result | Failed | None = None
        self._cancel_requested_at: float | None = None
        self._term_at: float | None = None
        self._kill_at: float | None = None
        self._forced = False
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self.started_at = time.time()
        self.pid = process.pid
        _LIVE.add(self)

    # -- state -------------------------------------------------------------------------------------
    @property
    def run_dir(self) -> Path:
        """The run folder."""
        return self.run_folder.path

    @property
    def done(self) -> bool:
        """True once the final event (Result or Failed) has been delivered by ``poll``."""
        return self._final is not None

    @property
    def result(self) -> dict[str, Any] | None:
        """The job's result dict once it ended with a ``Result``."""
        return self._final.value if isinstance(self._final, Result) else None

    @property
    def error(self) -> Failed | None:
        """The ``Failed`` event once the job ended in an error."""
        return self._final if isinstance(self._final, Failed) else None

    @property
    def final(self) -> Result | Failed | None:
        """The final event, once delivered."""
        return self._final

    @property
    def cancel_requested(self) -> bool:
        return self._cancel_requested_at is not None

    @property
    def exitcode(self) -> int | None:
        return self._process.exitcode

    def is_alive(self) -> bool:
        """True while the child process runs (it may still be running a moment after its last event)."""
        return self._process.is_alive()

    # -- events ------------------------------------------------------------------------------------
    def poll(self, timeout: float = 0.0, max_events: int | None = None) -> list[Event]:
        """Events that arrived, oldest first; waits up to ``timeout`` s for the first one.

        At most ``max_events`` are returned (the rest stay queued for the next call), so a GUI tick stays
        short. After the final event it returns [].
        """
        self._escalate()
        if self._final is not None:
            return []
        out: list[Event] = []
        deadline = time.monotonic() + max(0.0, timeout)
        while max_events is None or len(out) < max_events:
            try:
                wait = deadline - time.monotonic()
                ev = self._q.get(timeout=wait) if (not out and wait > 0) else self._q.get_nowait()
            except _queue.Empty:
                break
            except (EOFError, OSError):  # the pipe broke: the child is gone
                break
            out.append(ev)
            if isinstance(ev, Result | Failed):
                self._finish(ev)
                return out
        if not out and self._process.exitcode is not None:
            # The child is gone. Anything it wrote is already in the pipe, so an empty read means no
            # final event is coming: make one that says what happened.
            try:
                while max_events is None or len(out) < max_events:
                    ev = self._q.get_nowait()
                    out.append(ev)
                    if isinstance(ev, Result | Failed):
                        self._finish(ev)
                        return out
            except (_queue.Empty, EOFError, OSError):
                pass
            if max_events is None or len(out) < max_events:
                ev = self._synthesise_end()
                out.append(ev)
                self._finish(ev)
        return out

    def events(self, poll_s: float = 0.1) -> Iterator[Event]:
        """Iterate over events until (and including) the final one."""
        while self._final is None:
            yield from self.poll(timeout=poll_s)

    def wait(self, timeout: float | None = None) -> Result | Failed | None:
        """Drain events until the job ends (or ``timeout``); returns the final event (None on timeout)."""
        self.join(timeout)
        return self._final

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the job ended (draining events meanwhile, so the child never blocks on a full pipe),
        then reap the process. Returns True when it ended within ``timeout``."""
        end = None if timeout is None else time.monotonic() + timeout
        while self._final is None:
            left = 0.1 if end is None else min(0.1, end - time.monotonic())
            if left <= 0:
                return False
            self.poll(timeout=left)
        left = 5.0 if end is None else max(0.0, end - time.monotonic())
        self._process.join(left)
        if self._process.exitcode is None:
            return False
        self._cleanup()
        return True

    # -- cancelling --------------------------------------------------------------------------------
    def cancel(self, grace_s: float = 10.0) -> None:
        """Ask the job to stop: it sees ``should_stop()`` at its next step, saves a checkpoint and returns.
        If it is still running ``grace_s`` seconds later it is terminated (then killed). Never blocks."""
        if self._final is not None and not self.is_alive():
            return
        now = time.monotonic()
        self._stop.set()
        if self._cancel_requested_at is None:
            self._cancel_requested_at = now
            with contextlib.suppress(OSError):
                self.run_folder.log(f"cancel requested (forceful stop after {grace_s:g} s)")
        term_at = now + max(0.0, grace_s)
        if self._term_at is None or term_at < self._term_at:
            self._term_at = term_at
            if self._timer is not None:
                self._timer.cancel()
            self._timer = threading.Timer(max(0.0, grace_s) + 0.01, self._escalate)
            self._timer.daemon = True
            self._timer.start()
        self._escalate()

    def _escalate(self) -> None:
        """Terminate, then kill, a child that outlived its cancel deadline (idempotent, thread-safe)."""
        with self._lock:
            if self._term_at is None or self._process.exitcode is not None:
                return
            now = time.monotonic()
            if self._kill_at is None and now >= self._term_at:
                self._forced = True
                with contextlib.suppress(OSError, ValueError):
                    self._process.terminate()
                self._kill_at = now + _KILL_AFTER_TERM_S
                t = threading.Timer(_KILL_AFTER_TERM_S + 0.01, self._escalate)
                t.daemon = True
                t.start()
            elif self._kill_at is not None and now >= self._kill_at:
                with contextlib.suppress(OSError, ValueError):
                    self._process.kill()

    # -- ending ------------------------------------------------------------------------------------
    def _synthesise_end(self) -> Result | Failed:
        code = self._process.exitcode
        tail = self.run_folder.tail_log(40)
        details = f"process {self.pid} {describe_exit(code)}\nLast log lines:\n" + "\n".join(tail)
        if self._forced or (self.cancel_requested and code is not None and code < 0):
            last = self.run_folder.last_checkpoint()
            value = {"cancelled": True, "forced": True, "run_dir": str(self.run_dir),
                     "checkpoint": str(last) if last else None,
                     "message": "the job did not stop in time and was stopped forcefully"}
            with contextlib.suppress(OSError):
                self.run_folder.set_status("cancelled", message=value["message"], exitcode=code)
                self.run_folder.log(f"stopped forcefully: the process {describe_exit(code)}")
            return Result(value, cancelled=True)
        hint = (" Resume it from its last checkpoint once the cause is fixed." if self.run_folder.last_checkpoint()
                else "")
        if not any("started (pid" in line for line in self.run_folder.tail_log(400)):
            hint += " It ended before the job started; the reason is in the terminal's error output."
        msg = f"the job process {describe_exit(code)} without reporting a result.{hint}"
        last_line = _telling_line(tail)
        if last_line:
            msg += f" Last log line: {last_line[:200]}"
        with contextlib.suppress(OSError):
            self.run_folder.set_status("failed", message=msg, exitcode=code)
            self.run_folder.log(f"FAILED: {msg}")
        return Failed(msg, details)

    def _release_lock(self) -> None:
        if self.run_folder.lock is not None:
            self.run_folder.lock.release()

    def _finish(self, ev: Result | Failed) -> None:
        self._final = ev
        self._release_lock()  # the job has reported its end: the folder is free for the next run
        if self._process.exitcode is not None:
            if self._timer is not None:
                self._timer.cancel()
            return
        # The job is over but its process lingers (e.g. a stuck worker process of its own): end it later,
        # so that it cannot hold the GPU slot of a JobQueue forever.
        now = time.monotonic()
        if self._term_at is None or self._term_at > now + _EXIT_AFTER_FINAL_S:
            self._term_at = now + _EXIT_AFTER_FINAL_S
            if self._timer is not None:
                self._timer.cancel()
            self._timer = threading.Timer(_EXIT_AFTER_FINAL_S + 0.01, self._escalate)
            self._timer.daemon = True
            self._timer.start()

    def _cleanup(self) -> None:
        self._release_lock()
        if self._timer is not None:
            self._timer.cancel()
        with contextlib.suppress(Exception):
            self._q.close()
        _LIVE.discard(self)

    def __repr__(self) -> str:
        state = "done" if self.done else ("alive" if self.is_alive() else "ended")
        return f"JobHandle({self.target!r}, run_dir={str(self.run_dir)!r}, pid={self.pid}, {state})"


@contextlib.contextmanager
def _importable_main() -> Iterator[None]:
    """``spawn`` re-runs the parent's main script in the child; when that is no file (code piped on stdin,
    some embedders) the child would die before the job starts. Job targets are importable modules, so
    the child does not need it: hide such a main module while the child is launched."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if main is None or getattr(main, "__spec__", None) is not None or path is None or os.path.isfile(path):
        yield
        return
    stand_in = types.ModuleType("__main__")
    sys.modules["__main__"] = stand_in
    try:
        yield
    finally:
        sys.modules["__main__"] = main


def spawn(target: str, rd: RunDir, child_cfg: dict[str, Any]) -> JobHandle:
    """Start the child for an already prepared run folder."""
    from app.jobs._child import child_main

    events_q = _CTX.Queue()
    stop_event = _CTX.Event()
    proc = _CTX.Process(target=child_main, args=(target, child_cfg, str(rd.path), events_q, stop_event),
                        name=f"omicslab-job-{target_kind(target)}", daemon=False)
    try:
        rd.update_run_info(status="starting")
        with _importable_main():
            proc.start()
    except OSError as exc:  # a full disk or no memory for the child: say so, and never stay "starting"
        problem, hint = os_error_words(exc)
        with contextlib.suppress(OSError):
            rd.set_status("failed", message=f"the job could not start: {problem}")
        if rd.lock is not None:
            rd.lock.release()
        raise DataError(f"the job could not start: {problem}", rd.path, hint) from exc
    return JobHandle(target, rd, child_cfg, proc, events_q, stop_event)


def start_job(target: str, config: dict[str, Any], run_dir: str | Path | None = None, *, device: str = "cpu",
              resume: bool = False) -> JobHandle:
    """Run ``target`` ("package.module:function", called as ``fn(config, reporter)``) in a spawned child.

    ``run_dir`` None: ``config["run_dir"]`` if set, else a new folder under ``default_runs_root()``.
    ``resume=True`` (or ``config["resume"]``) reopens an existing run folder, rewinds its metrics to the
    last checkpoint and passes ``config["resume"] = True`` so the job continues from there.
    """
    rd, child_cfg, _ = prepare_run(target, config, run_dir, device=device, resume=resume, status="starting")
    return spawn(target, rd, child_cfg)


@atexit.register
def _stop_children_at_exit() -> None:
    """At interpreter exit, ask running jobs to stop, then end them: a closed app leaves no orphans
    (multiprocessing would otherwise wait for non-daemon children forever)."""
    live = [h for h in list(_LIVE) if h.is_alive()]
    for h in live:
        h._stop.set()
    end = time.monotonic() + 3.0
    for h in live:
        h._process.join(max(0.0, end - time.monotonic()))
        if h._process.exitcode is None:
            h._process.terminate()
            h._process.join(2.0)
            if h._process.exitcode is None:
                h._process.kill()


__all__ = ["JobFailed", "JobHandle", "describe_exit", "prepare_run", "start_job", "target_kind"]
