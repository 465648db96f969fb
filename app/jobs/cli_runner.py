"""Run a job from the command line: the same spawned child as the GUI, shown as a tqdm bar on stderr.

Ctrl-C asks the job to stop gracefully (it saves a checkpoint and returns a result with
``"cancelled": True``); a second Ctrl-C stops it at once. A failed job raises ``JobFailed`` (an
``OmicsLabError``), which the CLI prints as one message.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from app.engine.events import Artifact, DeviceInfo, Event, Failed, Log, Metrics, Progress, Result
from app.jobs.process import JobFailed, JobHandle, start_job

# Metric names shown in the bar's postfix, in order of preference.
_SHOWN = ("loss", "train_loss", "val_loss", "val_macro_f1", "accuracy", "val_accuracy", "r", "pearson", "lr")


def _fmt(v: float) -> str:
    return f"{v:.4g}"


class _Bar:
    """A tqdm bar fed with events (or silent when ``quiet``)."""

    def __init__(self, quiet: bool, desc: str) -> None:
        self.quiet = quiet
        self.bar = None
        self.desc = desc
        self.postfix: dict[str, str] = {}
        self.last_device: tuple[str, str] | None = None

    def _ensure(self, total: int | None) -> Any:
        if self.quiet:
            return None
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total or None, desc=self.desc, unit="step", file=sys.stderr, dynamic_ncols=True,
                            mininterval=0.2, leave=True)
        return self.bar

    def write(self, text: str) -> None:
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr)

    def handle(self, ev: Event) -> None:
        if isinstance(ev, Progress):
            bar = self._ensure(ev.total)
            if bar is None:
                return
            if ev.total and bar.total != ev.total:
                bar.total = ev.total
            if ev.epoch is not None:
                self.postfix["epoch"] = str(ev.epoch)
            bar.n = ev.step
            bar.set_postfix(self.postfix, refresh=False)
            bar.refresh()
        elif isinstance(ev, Metrics):
            for key in _SHOWN:
                if key in ev.values:
                    shown = key if ev.split == "train" or key.startswith(ev.split) else f"{ev.split}_{key}"
                    self.postfix[shown] = _fmt(ev.values[key])
                    break
            if ev.epoch is not None:
                self.postfix["epoch"] = str(ev.epoch)
            if self.bar is not None:
                self.bar.set_postfix(self.postfix, refresh=False)
        elif isinstance(ev, Log):
            self.write(ev.line if ev.level == "info" else f"{ev.level}: {ev.line}")
        elif isinstance(ev, DeviceInfo):
            key = (ev.device, ev.name)
            if key == self.last_device:  # the runner and the job may both report it
                return
            self.last_device = key
            mem = f", {ev.memory_allocated / 2**20:.0f} MiB in use" if ev.memory_allocated else ""
            self.write(f"device: {ev.device}{' (' + ev.name + ')' if ev.name else ''}{mem}")
        elif isinstance(ev, Artifact) and ev.kind != "checkpoint":
            self.write(f"wrote {ev.kind}: {ev.path}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@contextlib.contextmanager
def _sigint_as_flag() -> Iterator[list[int]]:
    """While driving a job, Ctrl-C only counts (no KeyboardInterrupt in the middle of reading an event
    from the pipe, which could leave half a message behind). Off the main thread: nothing changes."""
    hits: list[int] = []
    try:
        old = signal.signal(signal.SIGINT, lambda *_: hits.append(1))
    except ValueError:  # not the main thread
        yield hits
        return
    try:
        yield hits
    finally:
        signal.signal(signal.SIGINT, old)


def drive(handle: JobHandle, *, quiet: bool = False, desc: str = "", grace_s: float = 10.0) -> Result | Failed:
    """Show a running job's events until it ends; Ctrl-C cancels (twice: at once). Returns the final event."""
    bar = _Bar(quiet, desc)
    seen = 0
    try:
        with _sigint_as_flag() as hits:
            while not handle.done:
                try:
                    for ev in handle.poll(timeout=0.1):
                        bar.handle(ev)
                except KeyboardInterrupt:  # when the flag handler could not be installed
                    hits.append(1)
                if len(hits) > seen:
                    seen = len(hits)
                    if seen == 1:
                        bar.write(f"cancelling: the job saves a checkpoint and stops (Ctrl-C again to stop it "
                                  f"now; forced after {grace_s:g} s)")
                        handle.cancel(grace_s)
                    else:
                        bar.write("stopping the job now")
                        handle.cancel(0.0)
            handle.join(10.0)
    finally:
        bar.close()
    final = handle.final
    assert final is not None
    return final


def run_with_progress(target: str, config: dict[str, Any], run_dir: str | Path | None = None, *,
                      quiet: bool = False, resume: bool = False, device: str = "cpu",
                      grace_s: float = 10.0) -> dict[str, Any]:
    """Run ``target`` in a spawned child with a progress bar on stderr; returns the job's result dict.

    A cancelled run returns its result with ``"cancelled": True``; a failed one raises ``JobFailed``.
    """
    t0 = time.monotonic()
    handle = start_job(target, config, run_dir, device=device, resume=resume)
    if not quiet:
        print(f"run folder: {handle.run_dir}", file=sys.stderr)
    final = drive(handle, quiet=quiet, desc=target.rpartition(":")[2], grace_s=grace_s)
    if isinstance(final, Failed):
        raise JobFailed(final, handle.run_dir)
    value = dict(final.value)
    if final.cancelled:
        value["cancelled"] = True
    if not quiet:
        state = "cancelled" if final.cancelled else "done"
        print(f"{state} in {time.monotonic() - t0:.1f} s", file=sys.stderr)
    return value


__all__ = ["drive", "run_with_progress"]
