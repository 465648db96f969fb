"""start_job with a real spawned child: ordered events, cancel, crash isolation, resume."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from app.engine.checkpoint import load_tensors
from app.engine.events import Artifact, DeviceInfo, Failed, Log, Metrics, Progress, Result
from app.engine.rundir import RunDir
from app.jobs import start_job

DEMO = "app.engine.demo_job:demo"


def _collect(handle, timeout: float = 60.0) -> list:
    out = []
    end = time.monotonic() + timeout
    while not handle.done:
        assert time.monotonic() < end, f"job did not end in {timeout} s: {handle}"
        out.extend(handle.poll(timeout=0.1))
    assert handle.join(10)
    return out


def test_events_arrive_in_order_and_end_in_result(tmp_path: Path) -> None:
    h = start_job(DEMO, {"steps": 12, "ckpt_every": 4}, tmp_path / "run")
    events = _collect(h)
    assert isinstance(events[0], DeviceInfo) and events[0].device == "cpu"
    assert isinstance(events[-1], Result) and not events[-1].cancelled
    steps = [e.step for e in events if isinstance(e, Progress)]
    assert steps == list(range(1, 13))
    msteps = [e.step for e in events if isinstance(e, Metrics)]
    assert msteps == list(range(1, 13))
    # metrics of step k arrive before progress of step k, and timestamps never go backwards
    ts = [e.t for e in events]
    assert ts == sorted(ts)
    assert [e for e in events if isinstance(e, Artifact) and e.kind == "checkpoint"]
    assert h.result is not None and h.result["steps_done"] == 12 and h.error is None
    rd = RunDir.open(h.run_dir)
    assert rd.status == "done"
    assert [r["step"] for r in rd.read_metrics()] == list(range(1, 13))
    assert rd.read_result()["steps_done"] == 12
    assert rd.read_config()["steps"] == 12 and "resume" not in rd.read_config()
    assert rd.target == DEMO
    assert any("finished 12 steps" in line for line in rd.tail_log(50))
    assert any(isinstance(e, Log) and "finished" in e.line for e in events)
    assert not h.is_alive()


def test_cancel_stops_soon_and_leaves_a_loadable_checkpoint(tmp_path: Path) -> None:
    h = start_job(DEMO, {"steps": 100000, "step_sleep": 0.01, "ckpt_every": 1000}, tmp_path / "run")
    seen = 0
    end = time.monotonic() + 60
    while seen < 3:
        assert time.monotonic() < end and not h.done
        seen = max([seen] + [e.step for e in h.poll(0.1) if isinstance(e, Progress)])
    t0 = time.monotonic()
    h.cancel(grace_s=10.0)
    events = _collect(h, timeout=30)
    stopped_in = time.monotonic() - t0
    assert stopped_in < 10.0, stopped_in  # graceful: well inside the grace period
    final = events[-1]
    assert isinstance(final, Result) and final.cancelled and not final.value.get("forced")
    rd = RunDir.open(h.run_dir)
    assert rd.status == "cancelled"
    ckpt = rd.last_checkpoint()
    assert ckpt is not None
    tensors, meta = load_tensors(ckpt)
    assert meta["step"] == final.value["steps_done"] >= 3
    assert tensors["w"].shape == (8, 1)
    assert len(rd.read_metrics()) == meta["step"]


def test_cancel_of_a_job_that_ignores_it_is_forceful(tmp_path: Path) -> None:
    h = start_job(DEMO, {"steps": 100000, "step_sleep": 0.01, "ignore_stop": True}, tmp_path / "run")
    while not any(isinstance(e, Progress) for e in h.poll(0.1)):
        assert not h.done
    t0 = time.monotonic()
    h.cancel(grace_s=0.5)
    events = _collect(h, timeout=30)
    assert time.monotonic() - t0 < 6.0
    assert isinstance(events[-1], Result) and events[-1].cancelled and events[-1].value["forced"]
    assert h.exitcode is not None and h.exitcode < 0
    assert RunDir.open(h.run_dir).status == "cancelled"


@pytest.mark.parametrize(
    ("how", "words"),
    [("raise", "RuntimeError: demo job failed on purpose at step 3"),
     ("data_error", "demo.csv: demo job found bad input at step 3"),
     ("exit", "exited with code 3"),
     ("segfault", "SIGSEGV")],
)
def test_a_crashing_child_yields_one_clean_failed(tmp_path: Path, how: str, words: str) -> None:
    h = start_job(DEMO, {"steps": 10, "fail_at": 3, "fail_how": how}, tmp_path / "run")
    events = _collect(h)
    final = events[-1]
    assert isinstance(final, Failed), final
    assert sum(isinstance(e, Result | Failed) for e in events) == 1
    assert words in final.message
    assert h.error is final and h.result is None
    if how in ("raise", "data_error"):
        # the events of the steps before the crash did arrive, in order
        assert [e.step for e in events if isinstance(e, Progress)] == [1, 2]
        assert "Traceback" in final.details
        assert how != "data_error" or "unexpected" not in final.message
    else:
        assert "Last log lines" in final.details and "started" in final.details
    if how == "segfault":
        assert "Segmentation fault" in final.details  # faulthandler's report made it into the log
    rd = RunDir.open(h.run_dir)
    assert rd.status == "failed" and words in (rd.read_run_info().get("message") or "")
    if how in ("raise", "data_error"):
        return
    # the parent goes on after a hard crash: another job runs fine afterwards
    h2 = start_job(DEMO, {"steps": 3}, tmp_path / "run2")
    assert isinstance(_collect(h2)[-1], Result)


def test_resume_continues_with_the_same_history(tmp_path: Path) -> None:
    cfg = {"steps": 12, "ckpt_every": 4}
    ref = start_job(DEMO, cfg, tmp_path / "ref")
    _collect(ref)
    ref_rows = RunDir.open(ref.run_dir).read_metrics()

    # interrupted run: dies at step 7, after the checkpoint of step 4 and the metrics of steps 5 and 6
    h = start_job(DEMO, {**cfg, "fail_at": 7, "fail_how": "exit"}, tmp_path / "run")
    assert isinstance(_collect(h)[-1], Failed)
    rd = RunDir.open(h.run_dir)
    assert len(rd.read_metrics()) == 6 and rd.last_checkpoint_info()["step"] == 4

    h2 = start_job(DEMO, cfg, tmp_path / "run", resume=True)
    events = _collect(h2)
    assert isinstance(events[-1], Result), events[-1]
    assert [e.step for e in events if isinstance(e, Progress)] == list(range(5, 13))
    assert any(isinstance(e, Log) and "resumed from step 4" in e.line for e in events)
    assert rd.read_metrics() == ref_rows
    assert events[-1].value["loss"] == pytest.approx(ref.result["loss"], rel=1e-6)
    assert rd.read_config().get("resume") is None


def test_fresh_start_in_an_old_run_folder_archives_the_old_run(tmp_path: Path) -> None:
    h = start_job(DEMO, {"steps": 4, "ckpt_every": 2}, tmp_path / "run")
    _collect(h)
    h2 = start_job(DEMO, {"steps": 2, "ckpt_every": 0}, tmp_path / "run")
    _collect(h2)
    rd = RunDir.open(tmp_path / "run")
    assert [r["step"] for r in rd.read_metrics()] == [1, 2]
    prev = list(tmp_path.joinpath("run").glob("previous-*"))
    assert len(prev) == 1 and (prev[0] / "checkpoints" / "step-4.safetensors").is_file()


def test_bad_target_and_bad_device_fail_cleanly(tmp_path: Path) -> None:
    h = start_job("app.engine.no_such_module:fn", {}, tmp_path / "a")
    final = _collect(h)[-1]
    assert isinstance(final, Failed) and "cannot import the job module" in final.message
    h = start_job(DEMO, {"steps": 2, "device": "cuda:7"}, tmp_path / "b")
    final = _collect(h)[-1]
    assert isinstance(final, Failed)
    assert "cuda" in final.message.lower()
