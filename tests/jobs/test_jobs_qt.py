"""QtJob: a spawned job's events as Qt signals on the GUI thread (pytest-qt)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.engine.events import DeviceInfo, Failed, Metrics, Progress, Result
from app.ui.qt_jobs import QtJob

DEMO = "app.engine.demo_job:demo"


pytestmark = pytest.mark.usefixtures("no_child_left_behind")


def test_qtjob_emits_events_then_finished(qtbot, tmp_path: Path) -> None:
    job = QtJob(max_events_per_tick=5)
    got: dict[str, list] = {"progress": [], "metrics": [], "device": [], "failed": [], "log": [], "artifact": []}
    for name, items in got.items():
        getattr(job, name).connect(items.append)
    with qtbot.waitSignal(job.finished, timeout=60000) as blocker:
        job.start(DEMO, {"steps": 30, "ckpt_every": 10}, tmp_path / "run")
        assert job.running
    final = blocker.args[0]
    assert isinstance(final, Result) and final.value["steps_done"] == 30
    assert not job.running and job.final is final
    assert [m.step for m in got["metrics"]] == list(range(1, 31))  # every metric, in order
    steps = [p.step for p in got["progress"]]
    assert steps == sorted(steps) and steps[-1] == 30  # progress may be coalesced, never reordered
    assert all(isinstance(p, Progress) for p in got["progress"])
    assert all(isinstance(m, Metrics) for m in got["metrics"])
    assert isinstance(got["device"][0], DeviceInfo)
    assert len([a for a in got["artifact"] if a.kind == "checkpoint"]) >= 3
    assert got["failed"] == [] and got["log"]
    qtbot.waitUntil(lambda: not job.handle.is_alive(), timeout=10000)


@pytest.mark.qt_no_exception_capture
def test_qtjob_failure_emits_failed_then_finished(qtbot, tmp_path: Path) -> None:
    job = QtJob()
    order: list[str] = []

    def broken_slot(ev: object) -> None:  # a GUI bug must not leave the job without finished
        order.append("progress")
        raise ValueError("slot bug")

    job.progress.connect(broken_slot)
    job.failed.connect(lambda ev: order.append("failed"))
    job.finished.connect(lambda ev: order.append("finished"))
    with qtbot.waitSignals([job.failed, job.finished], timeout=60000, order="strict"):
        # crash late enough that earlier progress has left the child's queue feeder (a segfault drops
        # whatever it had not flushed yet)
        job.start(DEMO, {"steps": 10, "fail_at": 5, "step_sleep": 0.1, "fail_how": "segfault"}, tmp_path / "run")
    assert order[-2:] == ["failed", "finished"] and "progress" in order
    ev = job.final
    assert isinstance(ev, Failed) and "SIGSEGV" in ev.message


def test_qtjob_cancel_does_not_block_and_finishes_cancelled(qtbot, tmp_path: Path) -> None:
    job = QtJob()
    job.start(DEMO, {"steps": 100000, "step_sleep": 0.01}, tmp_path / "run")
    with qtbot.waitSignal(job.progress, timeout=60000):
        pass
    with qtbot.waitSignal(job.finished, timeout=30000) as blocker:
        job.cancel()
    assert isinstance(blocker.args[0], Result) and blocker.args[0].cancelled
