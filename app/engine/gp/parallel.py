"""Run independent network fits on several CPU cores: worker threads, one torch thread each.

The deep GP networks are small: one fit keeps one core busy at best (a second intra-op thread gave the
per-fold path ~1.7x on a quiet 2-core box, and made it slower under load). A CV has dozens of independent
fits (folds x repeats x ensemble members), so here each worker thread takes the next fit and trains it on
one intra-op thread: both cores do useful work all the time. Torch releases the GIL inside its operators and
runs CPU autograd on the calling thread, so the fits do not wait for each other.

A fit's result does not depend on the thread that ran it or on what ran beside it: the caller gives every
fit its own network, data, batch-order generator and dropout generator (``app.models.gp.set_dropout_generator``);
nothing reads torch's global RNG while the workers run.

Events from the workers reach the caller's reporter one at a time (a lock); progress counts finished epochs
of every fit together; the first failure (or a cancel) stops the other workers at their next epoch.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import TypeVar

import torch

from app.engine.events import Event, Progress
from app.engine.reporter import Reporter

T = TypeVar("T")


class SharedReporter(Reporter):
    """What each worker's fit reports to: forwards events under a lock; ``progress`` calls of the fits are
    replaced by one count of finished epochs over all fits (a fit that stops early is counted in full by
    :meth:`fit_done`)."""

    def __init__(self, parent: Reporter, epochs_per_fit: int, n_fits: int) -> None:
        super().__init__()
        self._parent = parent
        self._lock = threading.Lock()
        self._epochs = int(epochs_per_fit)
        self._total = int(epochs_per_fit) * int(n_fits)
        self._done = 0
        self.abort = threading.Event()
        self.first_error: BaseException | None = None

    def failed(self, exc: BaseException) -> None:
        """A fit raised: keep the first error (the others then stop with ``Cancelled``) and stop the rest."""
        with self._lock:
            if self.first_error is None:
                self.first_error = exc
        self.abort.set()

    def emit(self, event: Event) -> None:
        with self._lock:
            if isinstance(event, Progress):
                self._done += 1
                event = Progress(min(self._done, self._total), self._total, event.epoch)
            self._parent.emit(event)

    def fit_done(self, epochs_run: int) -> None:
        """A fit ended after ``epochs_run`` epochs: count the epochs it skipped as done."""
        skipped = self._epochs - int(epochs_run)
        if skipped <= 0:
            return
        with self._lock:
            self._done += skipped
            self._parent.emit(Progress(min(self._done, self._total), self._total))

    def should_stop(self) -> bool:
        return self.abort.is_set() or self._parent.should_stop()


def plan_workers(n_fits: int, threads: int, device: torch.device) -> tuple[int, int]:
    """(worker threads, intra-op threads per worker) for ``n_fits`` fits on ``threads`` CPU threads: one
    worker per thread while there are fits for them (cores are best used by whole fits), the spare threads
    given to the workers' operators. Off the CPU one worker (the GPU runs one stream)."""
    threads = max(1, int(threads))
    if device.type != "cpu" or n_fits <= 1:
        return 1, threads
    workers = min(threads, n_fits)
    return workers, max(1, threads // workers)


def run_fits(fits: Sequence[Callable[[SharedReporter], T]], reporter: Reporter, epochs_per_fit: int, *,
             threads: int, device: torch.device) -> list[T]:
    """Call every ``fit(shared_reporter)`` (on worker threads when ``threads`` > 1 on a CPU) and return
    their results in order. The intra-op thread count is restored afterwards.

    Raises:
        whatever the first failing fit raised (``Cancelled`` on a cancel), after the others stopped.
    """
    shared = SharedReporter(reporter, epochs_per_fit, len(fits))
    workers, intra = plan_workers(len(fits), threads, device)
    before = torch.get_num_threads()

    def call(fit: Callable[[SharedReporter], T]) -> T:
        torch.set_num_threads(intra)  # per thread: OpenMP keeps the count in each thread's own settings
        try:
            return fit(shared)
        except BaseException as exc:
            shared.failed(exc)
            raise

    try:
        if workers == 1:
            return [call(f) for f in fits]
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gp-fit") as pool:
            futures = [pool.submit(call, f) for f in fits]
            wait(futures, return_when=FIRST_EXCEPTION)
            if shared.first_error is not None:
                for fu in futures:
                    fu.cancel()
                wait(futures)
                raise shared.first_error
            return [fu.result() for fu in futures]
    finally:
        torch.set_num_threads(before)


__all__ = ["SharedReporter", "plan_workers", "run_fits"]
