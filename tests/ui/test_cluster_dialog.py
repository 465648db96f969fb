"""The cluster dialog: shows the GPUs, offers a local run only with several, writes the launch script it
previews (Slurm: nodes, GPUs, rendezvous, resume; local: standalone torchrun) and the job config JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")

from app.ui import cluster_dialog as cd


def _config(tmp_path: Path) -> dict:
    data = tmp_path / "cells.h5ad"
    data.write_bytes(b"")
    return {"data": [str(data)], "run_dir": str(tmp_path / "runs" / "big"), "preset": "full", "batch_size": 256,
            "device": "auto", "resume": True}


def test_dialog_writes_a_slurm_script(qtbot, tmp_path: Path) -> None:
    dlg = cd.ClusterDialog(_config(tmp_path), gpus=["cuda:0 Test GPU", "cuda:1 Test GPU"])
    qtbot.addWidget(dlg)
    assert "cuda:1 Test GPU" in dlg.gpu_label.text()
    assert dlg.scheduler.currentData() == cd.LOCAL and dlg.run_button.isEnabled()
    dlg.scheduler.setCurrentIndex(1)
    assert not dlg.run_button.isEnabled()  # a Slurm script is submitted, not run here
    dlg.nodes.setValue(2)
    dlg.gpus_per_node.setValue(4)
    dlg.partition.setText("gpu")
    dlg.script_path.setText(str(tmp_path / "scripts" / "job.sh"))
    assert "#SBATCH --nodes=2" in dlg.preview.toPlainText()
    assert "8 rank(s)" in dlg.note.text() and "(32 per rank)" in dlg.note.text()
    with qtbot.waitSignal(dlg.script_written, timeout=5000) as sig:
        dlg.write_button.click()
    script = Path(sig.args[0])
    text = script.read_text()
    assert script == tmp_path / "scripts" / "job.sh" and text == dlg.preview.toPlainText()
    for want in ("#SBATCH --nodes=2", "#SBATCH --gpus-per-node=4", "#SBATCH --partition=gpu", "--nproc-per-node=4",
                 '"--nnodes=$SLURM_NNODES"', '"--rdzv-endpoint=$HEAD_NODE:29500"', '"--rdzv-id=$SLURM_JOB_ID"',
                 "-m app celllm pretrain --config", 'RESUME="--resume"', "srun "):
        assert want in text, want
    assert "--standalone" not in text
    cfg = json.loads((tmp_path / "scripts" / "job.json").read_text())
    assert cfg["data"] == [str((tmp_path / "cells.h5ad").resolve())] and cfg["batch_size"] == 256
    assert cfg["run_dir"] == str((tmp_path / "runs" / "big").resolve()) and "resume" not in cfg
    assert script.stat().st_mode & 0o100  # executable


def test_local_run_only_with_several_gpus(qtbot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for gpus in ([], ["cuda:0 Only"]):
        one = cd.ClusterDialog(_config(tmp_path), gpus=gpus)
        qtbot.addWidget(one)
        assert not one.run_button.isEnabled() and one.scheduler.currentData() == cd.SLURM
        assert ("none" in one.gpu_label.text()) == (not gpus)
    started: list[Path] = []

    class FakeProcess:
        pid = 4242

    monkeypatch.setattr(cd, "start_local", lambda script: started.append(Path(script)) or FakeProcess())
    dlg = cd.ClusterDialog(_config(tmp_path), gpus=["cuda:0 A", "cuda:1 B", "cuda:2 C"])
    qtbot.addWidget(dlg)
    assert dlg.gpus_per_node.value() == 3 and dlg.gpus_per_node.maximum() == 3
    dlg.script_path.setText(str(tmp_path / "local.sh"))
    with qtbot.waitSignal(dlg.launched, timeout=5000) as sig:
        dlg.run_button.click()
    assert started == [tmp_path / "local.sh"] and sig.args[0] == str((tmp_path / "runs" / "big").resolve())
    text = started[0].read_text()
    assert "--standalone" in text and "--nproc-per-node=3" in text and "#SBATCH" not in text
    assert "4242" in dlg.note.text()
