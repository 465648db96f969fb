"""`celllm launch-script` and `celllm pretrain --config`: the script runs the job config it was written with,
local scripts are standalone torchrun on one machine, Slurm scripts rendezvous on the first node, and every
script resumes by itself once the run folder holds a checkpoint."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from app.cli import build_parser, main
from app.cli.celllm_cmd import pretrain_config
from app.data.errors import DataError
from app.engine.celllm.launch_script import LaunchSpec, script_text, write_launch_script


def test_cli_writes_a_slurm_script_from_pretrain_options(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "s" / "run.sh"
    rc = main(["celllm", "launch-script", "--nodes", "3", "--gpus-per-node", "8", "--partition", "big",
               "--account", "lab", "--port", "29600", "--out", str(out), "--",
               "--data", "a.h5ad", "b.h5ad", "--out", str(tmp_path / "RUN"), "--preset", "full",
               "--batch-size", "2048", "--stream", "--epochs", "2"])
    assert rc == 0 and "sbatch" in capsys.readouterr().out
    text = out.read_text()
    for want in ("#SBATCH --nodes=3", "#SBATCH --gpus-per-node=8", "#SBATCH --cpus-per-task=64",
                 "#SBATCH --account=lab", "#SBATCH --partition=big", '"--rdzv-endpoint=$HEAD_NODE:29600"',
                 "--nproc-per-node=8", f"CONFIG={out.with_suffix('.json')}", f"RUN_DIR={tmp_path / 'RUN'}"):
        assert want in text, want
    assert subprocess.run(["bash", "-n", str(out)]).returncode == 0  # valid shell
    cfg = json.loads(out.with_suffix(".json").read_text())
    assert cfg["data"] == [str(Path("a.h5ad").resolve()), str(Path("b.h5ad").resolve())]
    assert cfg["stream"] == "on" and cfg["batch_size"] == 2048 and cfg["epochs"] == 2 and cfg["preset"] == "full"
    # the script's own command line gives the job exactly this config
    args = build_parser().parse_args(["celllm", "pretrain", "--config", str(out.with_suffix(".json"))])
    assert pretrain_config(args) == cfg
    over = build_parser().parse_args(["celllm", "pretrain", "--config", str(out.with_suffix(".json")),
                                      "--epochs", "5", "--resume"])
    assert pretrain_config(over) == {**cfg, "epochs": 5, "resume": True}


def test_local_script_resumes_itself(tmp_path: Path) -> None:
    run = tmp_path / "run"
    script, cfg_path = write_launch_script(tmp_path / "loc", {"data": ["x.h5ad"], "run_dir": str(run)},
                                           LaunchSpec(gpus_per_node=2, python="/bin/echo"))
    assert script.name == "loc.sh" and cfg_path.name == "loc.json"
    text = script.read_text()
    assert "--standalone" in text and "--nproc-per-node=2" in text and "#SBATCH" not in text
    # run it with a Python that only echoes: the command line it would start, with and without a checkpoint
    fresh = subprocess.run(["bash", str(script)], capture_output=True, text=True, check=True).stdout
    assert "-m torch.distributed.run --nproc-per-node=2 --standalone -m app celllm pretrain --config" in fresh
    assert str(cfg_path) in fresh and "--resume" not in fresh
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last").write_text("{}")
    again = subprocess.run(["bash", str(script)], capture_output=True, text=True, check=True).stdout
    assert again.strip().endswith("--resume")


def test_bad_launch_requests_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="one machine"):
        script_text(tmp_path / "x.json", {"run_dir": "r"}, LaunchSpec(nodes=2, scheduler="local", gpus_per_node=1))
    with pytest.raises(DataError, match="input data and a run folder"):
        write_launch_script(tmp_path / "x.sh", {"run_dir": "r"})
    with pytest.raises(DataError, match="unknown scheduler"):
        LaunchSpec(scheduler="pbs").resolved_scheduler()
    args = build_parser().parse_args(["celllm", "pretrain", "--preset", "tiny"])
    with pytest.raises(DataError, match=r"needs a value(.|\n)*Pass --"):
        pretrain_config(args)
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(DataError, match="not a JSON object"):
        pretrain_config(build_parser().parse_args(["celllm", "pretrain", "--config", str(bad)]))
