"""RunDir: the run folder layout, atomic checkpoints, metrics rewind, listing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from app.data.errors import DataError
from app.engine.checkpoint import load_tensors
from app.engine.run_dir import RunDir, default_runs_root, find_run, list_runs


def test_create_write_read_and_reopen(tmp_path: Path) -> None:
    rd = RunDir.create(tmp_path / "r1", "finetune", {"lr": 0.1, "path": tmp_path}, target="m:f")
    assert json.loads((rd.path / "config.json").read_text())["lr"] == 0.1
    assert rd.status == "created" and rd.kind == "finetune" and rd.target == "m:f"
    rd.append_metrics({"step": 1, "loss": np.float32(0.5)})
    rd.append_metrics({"step": 2, "loss": 0.25})
    assert rd.read_metrics() == [{"step": 1, "loss": 0.5}, {"step": 2, "loss": 0.25}]
    rd.log("hello\nworld")
    assert [line.split("] ", 1)[1] for line in rd.tail_log(2)] == ["hello", "world"]
    rd.status = "running"
    again = RunDir.open(tmp_path / "r1")
    assert again.status == "running" and again.read_config()["path"] == str(tmp_path)
    with pytest.raises(ValueError):
        rd.status = "bogus"
    rd.write_result({"acc": 0.9})
    assert again.read_result() == {"acc": 0.9}


def test_checkpoints_are_atomic_pointed_and_loadable(tmp_path: Path) -> None:
    rd = RunDir.create(tmp_path / "r", "demo", {})
    assert rd.last_checkpoint() is None
    rd.append_metrics({"step": 1})
    p1 = rd.save_checkpoint({"w": torch.ones(3)}, {"note": "a"}, step=1)
    rd.append_metrics({"step": 2})
    rd.append_metrics({"step": 3})
    p3 = rd.save_checkpoint({"w": torch.full((3,), 3.0)}, {"note": "b"}, step=3)
    assert p1.name == "step-1.safetensors" and rd.last_checkpoint() == p3
    assert rd.checkpoints() == [p1, p3]
    tensors, meta = load_tensors(p3)
    assert meta == {"note": "b", "step": 3} and torch.equal(tensors["w"], torch.full((3,), 3.0))
    assert not [p for p in rd.checkpoint_dir.iterdir() if p.name.startswith(".")]  # no temp leftovers
    rd.append_metrics({"step": 4})
    rd.append_metrics({"step": 5})
    assert rd.rewind_to_checkpoint() == 3
    assert [r["step"] for r in rd.read_metrics()] == [1, 2, 3]
    # a lost pointer falls back to the highest step file
    (rd.checkpoint_dir / "last").unlink()
    assert rd.last_checkpoint() == p3
    (rd.checkpoint_dir / "last").write_text("{broken")
    assert rd.last_checkpoint() == p3


def test_torn_metrics_line_is_skipped(tmp_path: Path) -> None:
    rd = RunDir.create(tmp_path / "r", "demo", {})
    rd.append_metrics({"step": 1})
    with open(rd.path / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 2, "lo')
    assert rd.read_metrics() == [{"step": 1}]


def test_arrays_are_npy_and_memory_mappable(tmp_path: Path) -> None:
    rd = RunDir.create(tmp_path / "r", "embed", {})
    arr = np.arange(12, dtype=np.float32).reshape(4, 3)
    p = rd.save_array("X_celllm", arr)
    assert p.name == "X_celllm.npy"
    loaded = rd.load_array("X_celllm")
    assert isinstance(loaded, np.memmap) and np.array_equal(loaded, arr)


def test_open_errors_and_listing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DataError, match="run folder not found"):
        RunDir.open(tmp_path / "missing")
    (tmp_path / "plain").mkdir()
    with pytest.raises(DataError, match="not a run folder"):
        RunDir.open(tmp_path / "plain")
    monkeypatch.setenv("OMICSLAB_RUNS_DIR", str(tmp_path / "root"))
    assert default_runs_root() == tmp_path / "root"
    a = RunDir.create(None, "pretrain", {})
    b = RunDir.create(None, "finetune", {})
    assert a.path.parent == tmp_path / "root" and "pretrain" in a.path.name
    assert [r.path for r in list_runs()] == [b.path, a.path]
    assert find_run(a.path.name).path == a.path
    with pytest.raises(DataError, match="no such run"):
        find_run("nope")
    monkeypatch.delenv("OMICSLAB_RUNS_DIR")
    assert default_runs_root().name == "runs"


def test_a_running_run_whose_process_is_gone_shows_as_interrupted(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    rd = RunDir.create(tmp_path / "r", "demo", {})
    rd.set_status("running", pid=os.getpid())
    assert rd.summary()["status"] == "running" and rd.process_alive()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    rd.set_status("running", pid=dead.pid)
    assert rd.process_alive() is False and rd.summary()["status"] == "interrupted"
    assert rd.status == "running"  # the stored status is left alone
