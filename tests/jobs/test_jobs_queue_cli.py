"""JobQueue (one GPU job at a time), the CLI runner (progress bar, Ctrl-C, errors) and `runs` commands."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from app.cli import main as cli_main
from app.engine.events import Progress, Result
from app.engine.run_dir import RunDir
from app.jobs import JobFailed, JobQueue, is_gpu_device, start_job
from app.jobs.cli_runner import run_with_progress

DEMO = "app.engine.demo_job:demo"


pytestmark = pytest.mark.usefixtures("no_child_left_behind")


def test_queue_runs_one_gpu_job_at_a_time_and_cpu_jobs_at_once(tmp_path: Path) -> None:
    q = JobQueue()
    g1 = q.submit(DEMO, {"steps": 6, "step_sleep": 0.02}, tmp_path / "g1", gpu=True)
    g2 = q.submit(DEMO, {"steps": 3}, tmp_path / "g2", gpu=True)
    g3 = q.submit(DEMO, {"steps": 3}, tmp_path / "g3", gpu=True)
    c1 = q.submit(DEMO, {"steps": 3}, tmp_path / "c1", device="cpu")
    assert g1.state == "running" and g2.state == "queued" and g3.state == "queued" and c1.state == "running"
    assert not c1.gpu and q.waiting() == [g2, g3]
    assert RunDir.open(g2.run_dir).status == "queued"
    # a waiting job can be dropped before it starts
    g3.cancel()
    assert g3.done and g3.result["cancelled"] and g3.handle is None and q.waiting() == [g2]
    assert [type(e) for e in g3.poll()] == [Result]
    assert RunDir.open(g3.run_dir).status == "cancelled"
    end = time.monotonic() + 60
    g2_started_while_g1_alive = False
    while not (g1.done and g2.done and c1.done):
        assert time.monotonic() < end
        for job in (g1, g2, c1):
            job.poll(0.02)
        if g2.handle is not None and g1.is_alive():
            g2_started_while_g1_alive = True
    assert not g2_started_while_g1_alive
    assert g2.started_at is not None and g1.started_at is not None and g2.started_at > g1.started_at
    for job in (g1, g2, c1):
        assert job.join(10)
        assert job.result is not None and not job.result["cancelled"]
    q.update()
    assert g3.handle is None  # never started
    assert is_gpu_device("cuda:0") and is_gpu_device("mps") and not is_gpu_device("cpu")


def test_run_with_progress_returns_the_result_and_shows_a_bar(tmp_path: Path, capsys) -> None:
    res = run_with_progress(DEMO, {"steps": 5, "big_array": 100}, tmp_path / "run")
    assert res["steps_done"] == 5 and not res["cancelled"]
    err = capsys.readouterr().err
    assert "5/5" in err and "loss=" in err and "run folder:" in err and "wrote array" in err
    arr = RunDir.open(tmp_path / "run").load_array("demo_array")
    assert arr.shape == (100, 32)


def test_run_with_progress_raises_a_clear_error_on_failure(tmp_path: Path) -> None:
    with pytest.raises(JobFailed) as info:
        run_with_progress(DEMO, {"steps": 5, "fail_at": 2, "fail_how": "data_error"}, tmp_path / "run",
                          quiet=True)
    assert "demo job found bad input at step 2" in str(info.value)
    assert "log.txt" in str(info.value)
    assert "Traceback" in info.value.failed.details


def test_ctrl_c_cancels_gracefully(tmp_path: Path) -> None:
    timer = threading.Timer(2.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        res = run_with_progress(DEMO, {"steps": 100000, "step_sleep": 0.01}, tmp_path / "run", quiet=True)
    finally:
        timer.cancel()
    assert res["cancelled"] is True and not res.get("forced")
    assert RunDir.open(tmp_path / "run").last_checkpoint() is not None


def test_runs_list_show_and_resume(tmp_path: Path, capsys) -> None:
    root = tmp_path / "runs"
    h = start_job(DEMO, {"steps": 30, "step_sleep": 0.02, "ckpt_every": 100}, root / "first")
    while not any(isinstance(e, Progress) and e.step >= 3 for e in h.poll(0.1)):
        assert not h.done
    h.cancel()
    assert h.join(30) and h.result["cancelled"]
    capsys.readouterr()

    assert cli_main(["runs", "list", "--root", str(root), "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    (run,) = listing["runs"]
    assert run["name"] == "first" and run["status"] == "cancelled" and run["kind"] == "demo"
    assert run["last_checkpoint_step"] == h.result["steps_done"]

    assert cli_main(["runs", "list", "--root", str(root)]) == 0
    assert "first" in capsys.readouterr().out

    assert cli_main(["runs", "show", "first", "--root", str(root), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["config"]["steps"] == 30 and shown["status"] == "cancelled"
    assert any("cancel" in line for line in shown["log_tail"])

    assert cli_main(["runs", "resume", str(root / "first"), "--quiet", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["steps_done"] == 30 and not result["cancelled"]
    rd = RunDir.open(root / "first")
    assert [r["step"] for r in rd.read_metrics()] == list(range(1, 31))
    assert rd.status == "done"

    assert cli_main(["runs", "show", "nope", "--root", str(root)]) == 2
    assert "no such run" in capsys.readouterr().err
    rd.set_status("running", pid=os.getpid())  # looks alive: resuming would run it twice
    assert cli_main(["runs", "resume", str(root / "first"), "--quiet"]) == 2
    assert "still running" in capsys.readouterr().err


def test_second_ctrl_c_stops_a_stuck_job_at_once(tmp_path: Path) -> None:
    timers = [threading.Timer(t, os.kill, (os.getpid(), signal.SIGINT)) for t in (2.0, 2.5)]
    for t in timers:
        t.start()
    t0 = time.monotonic()
    try:
        res = run_with_progress(DEMO, {"steps": 100000, "step_sleep": 0.01, "ignore_stop": True}, tmp_path / "run",
                                quiet=True, grace_s=60.0)
    finally:
        for t in timers:
            t.cancel()
    assert res["cancelled"] is True and res["forced"] is True
    assert time.monotonic() - t0 < 30  # far less than the 60 s grace
