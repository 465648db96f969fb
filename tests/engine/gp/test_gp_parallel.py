"""Fits on worker threads (app.engine.gp.parallel): a network trained beside others, on any thread, is the
network a fit of it alone gives; a failing fit stops the others and its error reaches the caller."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from test_gp_stacked import _toy  # the same toy panel (with missing calls)

from app.engine.device import set_threads
from app.engine.gp.cv import make_folds
from app.engine.gp.deep import fit_folds
from app.engine.gp.parallel import plan_workers, run_fits
from app.engine.reporter import Cancelled, Reporter


@pytest.mark.parametrize(("kind", "precision"), [("deepgs", "fp32"), ("dnngp", "fp32"), ("dlgwas", "fp32"),
                                                 ("dnngp", "bf16")])
def test_members_on_two_threads_match_fits_alone(kind: str, precision: str) -> None:
    geno, y = _toy(n=90, m=40, seed=3)
    folds = make_folds(len(y), folds=3, repeats=1, seed=1)
    trains = [geno.subset(samples=[geno.samples[j] for j in f.train]) for f in folds]
    tests = [geno.subset(samples=[geno.samples[j] for j in f.test]) for f in folds]
    ys = [y[f.train] for f in folds]
    seeds = [40 + i for i in range(len(folds))]
    params = {"epochs": 6, "patience": 2, "ensemble": 2, "trainer": "sequential", "precision": precision}
    before = torch.get_num_threads()
    try:
        set_threads(2)
        together = fit_folds(kind, trains, ys, seeds, params=params)
        assert torch.get_num_threads() == 2  # restored after the workers
        set_threads(1)
        for i in range(len(folds)):
            alone = fit_folds(kind, [trains[i]], [ys[i]], [seeds[i]], params=params)[0]
            assert together[i].notes.info["best_epoch"] == alone.notes.info["best_epoch"]
            # one intra-op thread each way: the very same arithmetic
            np.testing.assert_array_equal(together[i].predict(tests[i]), alone.predict(tests[i]))
    finally:
        torch.set_num_threads(before)
    # dropout was on (the members' own generators drew the masks): two seeds give two networks
    other = fit_folds(kind, [trains[0]], [ys[0]], [seeds[0] + 1], params=params)[0]
    assert not np.allclose(other.predict(tests[0]), together[0].predict(tests[0]))


def test_plan_uses_one_worker_per_thread_while_there_are_fits() -> None:
    cpu = torch.device("cpu")
    assert plan_workers(15, 2, cpu) == (2, 1)
    assert plan_workers(1, 2, cpu) == (1, 2)  # a single fit gets the threads for its operators
    assert plan_workers(3, 8, cpu) == (3, 2)
    assert plan_workers(15, 2, torch.device("meta")) == (1, 2)  # off the CPU: one stream


def test_first_error_reaches_the_caller_and_stops_the_others() -> None:
    ran: list[int] = []

    def good(i: int) -> Callable[[Reporter], int]:
        def fit(rep: Reporter) -> int:
            for _ in range(200):
                rep.check_cancel()
                torch.ones(1000).sum()
            ran.append(i)
            return i
        return fit

    def bad(rep: Reporter) -> int:
        raise ValueError("broken fit")

    with pytest.raises(ValueError, match="broken fit"):
        run_fits([good(0), bad, *[good(i) for i in range(2, 12)]], Reporter(), 1, threads=2,
                 device=torch.device("cpu"))
    assert len(ran) < 11  # the fits still queued did not run to the end
    assert run_fits([good(0), good(1)], Reporter(), 1, threads=2, device=torch.device("cpu")) == [0, 1]
    rep = Reporter()
    rep.request_stop()
    with pytest.raises(Cancelled):
        run_fits([good(0), good(1)], rep, 1, threads=2, device=torch.device("cpu"))
