"""start_job with a real spawned child: ordered events, cancel, crash isolation, resume."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from app.engine.checkpoint import load_tensors
from app.engine.events import Artifact, DeviceInfo, Failed, Log, Metrics, Progress, Result
from app.engine.run_dir import RunDir
from app.jobs import start_job

DEMO = "app.engine.demo_job:demo"


pytestmark = pytest.mark.usefixtures("no_child_left_behind")


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


def _wait_for_step(handle, step: int, timeout: float = 60.0) -> list:
    out: list = []
    end = time.monotonic() + timeout
    while not any(isinstance(e, Progress) and e.step >= step for e in out):
        assert time.monotonic() < end and not handle.done, out[-1:] if out else handle
        out.extend(handle.poll(0.05))
    return out


def test_cancel_graceful_leaves_a_checkpoint_and_forceful_ends_a_stuck_job(tmp_path: Path) -> None:
    # both children at once: also shows the parent juggling several jobs
    good = start_job(DEMO, {"steps": 100000, "step_sleep": 0.01, "ckpt_every": 1000}, tmp_path / "good")
    stuck = start_job(DEMO, {"steps": 100000, "step_sleep": 0.01, "ignore_stop": True}, tmp_path / "stuck")
    _wait_for_step(good, 3)
    _wait_for_step(stuck, 1)
    t0 = time.monotonic()
    good.cancel(grace_s=10.0)
    stuck.cancel(grace_s=0.5)
    events = _collect(good, timeout=30)
    assert time.monotonic() - t0 < 10.0  # graceful: well inside the grace period
    final = events[-1]
    assert isinstance(final, Result) and final.cancelled and not final.value.get("forced")
    rd = RunDir.open(good.run_dir)
    assert rd.status == "cancelled"
    ckpt = rd.last_checkpoint()
    assert ckpt is not None
    tensors, meta = load_tensors(ckpt)
    assert meta["step"] == final.value["steps_done"] >= 3
    assert tensors["w"].shape == (8, 1)
    assert len(rd.read_metrics()) == meta["step"]

    sevents = _collect(stuck, timeout=30)
    assert time.monotonic() - t0 < 8.0  # 0.5 s grace, then SIGTERM
    assert isinstance(sevents[-1], Result) and sevents[-1].cancelled and sevents[-1].value["forced"]
    assert stuck.exitcode is not None and stuck.exitcode < 0
    assert RunDir.open(stuck.run_dir).status == "cancelled"


CRASHES = {
    "raise": "RuntimeError: demo job failed on purpose at step 3",
    "data_error": "demo.csv: demo job found bad input at step 3",
    "exit": "exited with code 3",
    "segfault": "SIGSEGV",
}


def test_crashing_children_yield_one_clean_failed_each_and_the_parent_goes_on(tmp_path: Path) -> None:
    handles = {how: start_job(DEMO, {"steps": 10, "fail_at": 3, "fail_how": how}, tmp_path / how)
               for how in CRASHES}
    handles["bad_target"] = start_job("app.engine.no_such_module:fn", {}, tmp_path / "bad_target")
    collected = {how: _collect(h) for how, h in handles.items()}
    for how, words in CRASHES.items():
        events, h = collected[how], handles[how]
        final = events[-1]
        assert isinstance(final, Failed), (how, final)
        assert sum(isinstance(e, Result | Failed) for e in events) == 1
        assert words in final.message, (how, final.message)
        assert h.error is final and h.result is None
        if how in ("raise", "data_error"):
            # the events of the steps before the crash did arrive, in order
            assert [e.step for e in events if isinstance(e, Progress)] == [1, 2]
            assert "Traceback" in final.details
        else:
            assert "Last log lines" in final.details and "started" in final.details
        rd = RunDir.open(h.run_dir)
        assert rd.status == "failed" and words in (rd.read_run_info().get("message") or "")
    assert "unexpected" not in collected["data_error"][-1].message  # OmicsLabError: its own message
    assert "unexpected error: RuntimeError" in collected["raise"][-1].message
    assert "Segmentation fault" in collected["segfault"][-1].details  # faulthandler's report reached the log
    assert handles["exit"].exitcode == 3 and handles["segfault"].exitcode == -11
    bad = collected["bad_target"][-1]
    assert isinstance(bad, Failed) and "cannot import the job module" in bad.message
    # the parent goes on: another job runs fine afterwards
    h2 = start_job(DEMO, {"steps": 3}, tmp_path / "after")
    assert isinstance(_collect(h2)[-1], Result)


def test_resume_continues_with_the_same_history(tmp_path: Path) -> None:
    from app.engine.demo_job import demo

    cfg = {"steps": 12, "ckpt_every": 4}
    # the uninterrupted reference, run in-process (same function, no child needed)
    ref = demo({**cfg, "run_dir": str(tmp_path / "ref")})
    ref_rows = RunDir.open(tmp_path / "ref").read_metrics()
    assert [r["step"] for r in ref_rows] == list(range(1, 13))

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
    assert events[-1].value["loss"] == pytest.approx(ref["loss"], rel=1e-6)
    assert rd.read_config().get("resume") is None and rd.status == "done"


def test_fresh_start_in_an_old_run_folder_archives_the_old_run(tmp_path: Path) -> None:
    from app.jobs.process import prepare_run

    old = RunDir.create(tmp_path / "run", "demo", {"steps": 4})
    old.append_metrics({"step": 1})
    old.save_checkpoint({"w": __import__("torch").zeros(2)}, {}, step=1)
    rd, cfg, resume = prepare_run(DEMO, {"steps": 2}, tmp_path / "run")
    assert not resume and cfg["run_dir"] == str(rd.path) and cfg["device"] == "cpu"
    assert rd.read_metrics() == [] and rd.last_checkpoint() is None
    (prev,) = rd.path.glob("previous-*")
    assert (prev / "checkpoints" / "step-1.safetensors").is_file() and (prev / "metrics.jsonl").is_file()
    # resume=True keeps everything and asks the job to continue (once the first holder freed the folder)
    assert rd.lock is not None and rd.lock.held
    rd.lock.release()
    rd2, cfg2, resume2 = prepare_run(DEMO, {"steps": 2, "device": "auto"}, tmp_path / "run", resume=True)
    assert resume2 and cfg2["resume"] is True and cfg2["device"] == "auto"
    assert "resume" not in rd2.read_config()


def test_resume_needs_a_run_folder(tmp_path: Path) -> None:
    from app.data.errors import DataError

    with pytest.raises(DataError, match="cannot resume"):
        start_job(DEMO, {}, tmp_path / "nothing", resume=True)


def test_a_job_whose_app_was_killed_stops_gracefully(tmp_path: Path) -> None:
    import json
    import os
    import signal
    import subprocess
    import sys

    run = tmp_path / "orphan"
    code = ("import sys, time\n"
            "from app.jobs import start_job\n"
            "if __name__ == '__main__':\n"
            f"    h = start_job({DEMO!r}, {{'steps': 100000, 'step_sleep': 0.01}}, {str(run)!r})\n"
            "    while not any(getattr(e, 'step', 0) >= 2 for e in h.poll(0.05)):\n"
            "        pass\n"
            "    print('running', flush=True)\n"
            "    time.sleep(600)\n")
    app_proc = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2],
                                stdout=subprocess.PIPE, text=True)
    try:
        assert app_proc.stdout.readline().strip() == "running"
        pid = json.loads((run / "run.json").read_text())["pid"]
        app_proc.send_signal(signal.SIGKILL)  # the app dies without any cleanup
        app_proc.wait(10)
        rd = RunDir.open(run)
        end = time.monotonic() + 20
        while rd.status == "running" and time.monotonic() < end:
            time.sleep(0.05)
        assert rd.status == "cancelled"
        _, meta = load_tensors(rd.last_checkpoint())
        assert meta["step"] >= 2
        assert any("app that started this job has ended" in line for line in rd.tail_log(20))
        end = time.monotonic() + 10
        while time.monotonic() < end:  # and the orphan process is gone
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            os.kill(pid, signal.SIGKILL)
            raise AssertionError("the orphaned job process did not end")
    finally:
        if app_proc.poll() is None:
            app_proc.kill()
