"""Reliability campaign, run folders: a lock, never over the user's files, a finished run moved aside whole,
``runs resume`` only for registered jobs, unfinished runs and checkpoints inside the folder; a full disk
is said in words."""

from __future__ import annotations

import errno
import json
import time
from pathlib import Path

import pytest
from campaign import assert_refused, cli, geno_csv, pheno_csv, snapshot

from app.data.errors import DataError
from app.engine.events import Progress, Result
from app.engine.run_dir import RunDir, RunLock
from app.jobs.process import _check_resumable, prepare_run, start_job

DEMO = "app.engine.demo_job:demo"


@pytest.fixture
def gp_data(tmp_path: Path) -> tuple[Path, Path]:
    g, calls, lines = geno_csv(tmp_path / "geno.csv")
    return g, pheno_csv(tmp_path / "pheno.csv", lines, calls)


def _cv(gp_data: tuple[Path, Path], out: Path) -> list[str]:
    g, ph = gp_data
    return ["gp", "cv", "--geno", str(g), "--pheno", str(ph), "--trait", "yield", "--model", "gblup",
            "--folds", "3", "--out", str(out), "--inline", "--quiet"]


def test_a_folder_with_the_users_own_files_is_refused_and_left_untouched(tmp_path: Path, gp_data) -> None:
    mine = tmp_path / "my_results"
    mine.mkdir()
    (mine / "metrics.json").write_text('{"my": "precious numbers"}')
    (mine / "notes.txt").write_text("lab notebook")
    before = snapshot(mine)
    p = cli(_cv(gp_data, mine), tmp_path)
    assert_refused(p, "not an OmicsLab run", "metrics.json", "new or empty folder")
    assert snapshot(mine) == before


def test_a_second_run_on_a_locked_folder_is_refused(tmp_path: Path, gp_data) -> None:
    run = tmp_path / "run"
    assert cli(_cv(gp_data, run), tmp_path).returncode == 0
    before = snapshot(run)
    lock = RunLock(run).acquire()  # a run in progress (here: this process) holds the folder
    try:
        p = cli(_cv(gp_data, run), tmp_path)
        assert_refused(p, "another run is using this folder", "choose another --out folder")
        with pytest.raises(DataError, match="another run is using this folder"):
            prepare_run(DEMO, {"steps": 2}, run)
    finally:
        lock.release()
    after = snapshot(run)
    assert {k: v for k, v in after.items() if k != ".lock"} == {k: v for k, v in before.items() if k != ".lock"}


def test_two_concurrent_runs_never_interleave(tmp_path: Path) -> None:
    h = start_job(DEMO, {"steps": 30, "step_sleep": 0.05, "ckpt_every": 10}, tmp_path / "run")
    try:
        seen: list = []
        while not any(isinstance(e, Progress) for e in seen):
            seen.extend(h.poll(0.1))
        with pytest.raises(DataError, match="another run is using this folder"):
            start_job(DEMO, {"steps": 5}, tmp_path / "run")
        final = h.wait(120)
    finally:
        h.cancel(0.0) if not h.done else None
    assert isinstance(final, Result)
    rd = RunDir.open(tmp_path / "run")
    assert [r["step"] for r in rd.read_metrics()] == list(range(1, 31))
    assert rd.read_config()["steps"] == 30 and rd.read_result()["steps_done"] == 30
    h2 = start_job(DEMO, {"steps": 3}, tmp_path / "run")  # the first run ended: the folder is free again
    assert isinstance(h2.wait(120), Result)


def test_rerunning_into_a_finished_run_moves_the_whole_previous_run_aside(tmp_path: Path, gp_data) -> None:
    run = tmp_path / "run"
    assert cli(_cv(gp_data, run), tmp_path).returncode == 0
    first = snapshot(run)
    assert {"metrics.json", "config.json", "run.json", "predictions.csv"} <= set(first)
    time.sleep(0.01)
    p = cli(_cv(gp_data, run), tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    (prev,) = run.glob("previous-*")
    moved = snapshot(prev)
    for name in ("metrics.json", "config.json", "run.json", "predictions.csv", "log.txt"):
        assert moved[name] == first[name], name  # the old run, whole and unchanged
    log = (run / "log.txt").read_text()
    assert f"the whole previous run (model, metrics, config, log, checkpoints) moved to {prev.name}/" in log
    assert json.loads((run / "run.json").read_text())["status"] == "done"


def test_resume_of_a_finished_run_says_it_is_finished_and_changes_nothing(tmp_path: Path, gp_data) -> None:
    run = tmp_path / "run"
    assert cli(_cv(gp_data, run), tmp_path).returncode == 0
    before = snapshot(run)
    p = cli(["runs", "resume", str(run), "--quiet"], tmp_path)
    assert_refused(p, "already finished", "nothing to resume", "runs show")
    assert snapshot(run) == before
    with pytest.raises(DataError, match="already finished"):
        prepare_run("app.engine.gp.jobs:cv", {}, run, resume=True)


def test_resume_runs_only_registered_jobs(tmp_path: Path) -> None:
    rd = RunDir.create(tmp_path / "run", "demo", {"steps": 2}, target="os:system", status="cancelled")
    marker = tmp_path / "pwned"
    rd.write_config({"command": f"touch {marker}"})
    p = cli(["runs", "resume", str(rd.path), "--quiet"], tmp_path)
    assert_refused(p, "names a job that OmicsLab does not know", "'os:system'")
    assert not marker.exists() and rd.status == "cancelled"
    with pytest.raises(DataError, match="does not know"):  # the window's Resume goes through the same door
        prepare_run("os:system", rd.read_config(), rd.path, resume=True)
    assert rd.read_config() == {"command": f"touch {marker}"}


def test_a_checkpoint_pointer_outside_the_run_folder_is_not_followed(tmp_path: Path) -> None:
    import torch

    outside = RunDir.create(tmp_path / "elsewhere", "demo", {})
    evil = outside.save_checkpoint({"w": torch.ones(2)}, {}, step=99)
    rd = RunDir.create(tmp_path / "run", "demo", {})
    own = rd.save_checkpoint({"w": torch.zeros(2)}, {}, step=3)
    (rd.checkpoint_dir / "last").write_text(json.dumps({"file": f"../../elsewhere/checkpoints/{evil.name}",
                                                        "step": 99}))
    assert rd.last_checkpoint() == own
    (rd.checkpoint_dir / own.name).unlink()
    (rd.checkpoint_dir / "step-7.safetensors").symlink_to(evil)  # a link leading out is no checkpoint either
    assert rd.last_checkpoint() is None


def test_a_full_disk_when_the_run_folder_is_made_is_one_message_and_no_starting_run(tmp_path: Path,
                                                                                  monkeypatch) -> None:
    import app.engine.run_dir as run_dir_mod

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(run_dir_mod, "write_text_atomic", full)
    with pytest.raises(DataError) as ei:
        prepare_run(DEMO, {"steps": 2}, tmp_path / "run", status="starting")
    assert "the disk is full" in str(ei.value) and "Free some space" in ei.value.hint
    monkeypatch.undo()
    assert RunDir(tmp_path / "run").status != "starting"
    assert prepare_run(DEMO, {"steps": 2}, tmp_path / "run")[0].lock.held  # nothing stale is left behind


def test_a_full_disk_during_a_run_is_said_in_words() -> None:
    from app.jobs._child import failure_from_exception

    class SafetensorError(Exception):
        pass

    f = failure_from_exception(SafetensorError("Error while serializing: IoError(Os { code: 28, kind: "
                                               "StorageFull, message: \"No space left on device\" }) os error 28"), [])
    assert f.message.startswith("the disk is full") and "resume" in f.message
    assert "unexpected error" not in f.message


def test_a_forced_stop_does_not_claim_a_checkpoint_was_saved() -> None:
    from app.cli.celllm_cmd import cancelled_words

    none = cancelled_words({"cancelled": True, "forced": True, "checkpoint": None})
    assert "no checkpoint" in none and "saved" not in none
    old = cancelled_words({"cancelled": True, "forced": True, "checkpoint": "RUN/checkpoints/step-4.safetensors"})
    assert "no new checkpoint" in old and "step-4" in old
    assert "kept" in cancelled_words({"cancelled": True, "checkpoint": "RUN/checkpoints/step-9.safetensors"})


def test_a_finished_run_may_be_resumed_only_to_train_longer(tmp_path: Path) -> None:
    """Continuing a finished pretraining run for more epochs is a real use (torchrun test); a bare resume is not."""
    target = "app.engine.celllm.pretrain:pretrain"
    rd = RunDir.create(tmp_path / "run", "pretrain", {}, target=target, status="done")
    rd.write_config({"epochs": 1.0, "seed": 0})
    _check_resumable(rd, target, {"epochs": 2.0})  # longer: allowed
    for overrides in ({}, {"epochs": 1.0}, {"epochs": 0.5}, {"seed": 3}):
        with pytest.raises(DataError, match="already finished"):
            _check_resumable(rd, target, overrides)
