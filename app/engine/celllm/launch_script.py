"""Ready-to-run launch scripts for CellLM pretraining on several GPUs or nodes (torchrun + the job config).

``write_launch_script(out, config, spec)`` writes two files:

* ``SCRIPT.json``: the pretrain job config (paths made absolute, no ``resume``: the script decides);
* ``SCRIPT.sh``: a bash script that runs ``python -m torch.distributed.run ... -m app celllm pretrain --config
  SCRIPT.json`` and adds ``--resume`` when the run folder already holds a checkpoint, so running (or
  resubmitting) the same script continues an interrupted run.

Two kinds: ``local`` (one machine, ``--standalone`` rendezvous, one rank per GPU) and ``slurm`` (an
``sbatch`` script: one ``srun`` task per node, each starting torchrun with a c10d rendezvous on the first
node of the allocation, ``--rdzv-id`` = the Slurm job id; SIGTERM 120 s before the time limit makes every
rank stop with a checkpoint). The run folder and data must be on storage every node sees.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.data.atomic import write_text_atomic
from app.data.errors import DataError
from app.engine.celllm.distributed import torchrun_command

SCHEDULERS = ("auto", "local", "slurm")
_PATH_KEYS = ("run_dir", "init")


def visible_gpus() -> list[str]:
    """Names of the CUDA GPUs this process sees (``cuda:0 NVIDIA H100 80GB``...); empty without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return []
    return [f"cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count())]


@dataclass
class LaunchSpec:
    """Where and how to run: ``nodes`` x ``gpus_per_node`` ranks (None: the GPUs visible here, at least 1);
    ``scheduler`` auto (Slurm for several nodes, else local), local or slurm; Slurm's ``partition``,
    ``account``, ``time``; ``cpus_per_gpu`` (threads per rank); rendezvous ``port``; ``python`` on the nodes
    (default: this interpreter)."""

    nodes: int = 1
    gpus_per_node: int | None = None
    scheduler: str = "auto"
    partition: str | None = None
    account: str | None = None
    time: str = "24:00:00"
    cpus_per_gpu: int = 8
    port: int = 29500
    python: str | None = None
    job_name: str = "celllm-pretrain"

    def resolved_scheduler(self) -> str:
        """``local`` or ``slurm``."""
        if self.scheduler not in SCHEDULERS:
            raise DataError(f"unknown scheduler {self.scheduler!r}", None, "Use auto, local or slurm.")
        if self.scheduler == "auto":
            return "slurm" if self.nodes > 1 else "local"
        return self.scheduler

    def ranks_per_node(self) -> int:
        """Ranks (GPUs) per node."""
        if self.gpus_per_node is not None:
            return int(self.gpus_per_node)
        return max(1, len(visible_gpus()))


def _package_root() -> str:
    """The folder holding the ``app`` package (so ``python -m app`` works from any working directory)."""
    import app

    return str(Path(app.__file__).resolve().parents[1])


def _sh(arg: str) -> str:
    """Shell-quote one word; words holding ``$VAR`` are double-quoted so the shell expands them."""
    if "$" in arg:
        return '"' + re.sub(r'(["\\`])', r"\\\1", arg) + '"'
    return shlex.quote(arg)


def launch_config(config: dict[str, Any]) -> dict[str, Any]:
    """The job config a script runs: paths absolute (the script may run elsewhere), no ``resume``."""
    cfg = {k: v for k, v in config.items() if k != "resume"}
    data = cfg.get("data")
    if data:
        items = [data] if isinstance(data, (str, Path)) else list(data)
        cfg["data"] = [str(Path(p).expanduser().resolve()) for p in items]
    for key in _PATH_KEYS:
        if cfg.get(key) and (key == "run_dir" or Path(str(cfg[key])).expanduser().exists()):
            cfg[key] = str(Path(str(cfg[key])).expanduser().resolve())
    return cfg


def script_text(config_path: Path, config: dict[str, Any], spec: LaunchSpec) -> str:
    """The bash script for ``spec`` running the job config at ``config_path``."""
    kind = spec.resolved_scheduler()
    nodes, ranks = int(spec.nodes), spec.ranks_per_node()
    if nodes < 1 or ranks < 1:
        raise DataError(f"{nodes} node(s) x {ranks} GPU(s) per node", None, "Use at least one node and one GPU.")
    if kind == "local" and nodes > 1:
        raise DataError("a local script runs on one machine", None,
                        "Use --scheduler slurm for several nodes (or run the torchrun command on each node).")
    python = spec.python or sys.executable
    run_dir = str(config["run_dir"])
    threads = max(1, int(spec.cpus_per_gpu))
    pretrain = ["celllm", "pretrain", "--config", "$CONFIG"]
    lines = ["#!/usr/bin/env bash"]
    if kind == "slurm":
        lines += [f"#SBATCH --job-name={spec.job_name}", f"#SBATCH --nodes={nodes}", "#SBATCH --ntasks-per-node=1",
                  f"#SBATCH --gpus-per-node={ranks}", f"#SBATCH --cpus-per-task={threads * ranks}",
                  f"#SBATCH --time={spec.time}", f"#SBATCH --output={config_path.parent / 'slurm-%x-%j.out'}",
                  "#SBATCH --signal=TERM@120", "#SBATCH --requeue"]
        if spec.partition:
            lines.append(f"#SBATCH --partition={spec.partition}")
        if spec.account:
            lines.append(f"#SBATCH --account={spec.account}")
        cmd = torchrun_command(pretrain, ranks, nnodes="$SLURM_NNODES", rdzv_endpoint=f"$HEAD_NODE:{spec.port}",
                               rdzv_id="$SLURM_JOB_ID", python="$PYTHON")
    else:
        cmd = torchrun_command(pretrain, ranks, python="$PYTHON")
    what = (f"{nodes} nodes x {ranks} GPUs (Slurm; submit with: sbatch {config_path.with_suffix('.sh').name})"
            if kind == "slurm" else f"{ranks} rank(s) on this machine (run with: bash "
                                    f"{config_path.with_suffix('.sh').name})")
    lines += [
        f"# CellLM pretraining on {what}. Written by OmicsLab.",
        "# Global contrastive batch = batch_size in the config, split over all ranks; rank 0 writes the run folder.",
        "# Running the script again resumes from the run folder's last checkpoint.",
        "set -euo pipefail",
        f"PYTHON=\"${{OMICSLAB_PYTHON:-{python}}}\"",
        f"export PYTHONPATH={shlex.quote(_package_root())}\"${{PYTHONPATH:+:$PYTHONPATH}}\"",
        f"CONFIG={shlex.quote(str(config_path))}",
        f"RUN_DIR={shlex.quote(run_dir)}",
        'RESUME=""',
        'if [ -f "$RUN_DIR/checkpoints/last" ]; then RESUME="--resume"; fi',
        f'export OMP_NUM_THREADS="${{OMP_NUM_THREADS:-{threads}}}"',
    ]
    if kind == "slurm":
        lines += ['HEAD_NODE="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"',
                  "srun --kill-on-bad-exit=1 " + " ".join(_sh(a) for a in cmd) + " $RESUME"]
    else:
        lines.append("exec " + " ".join(_sh(a) for a in cmd) + " $RESUME")
    return "\n".join(lines) + "\n"


def write_launch_script(out: str | Path, config: dict[str, Any], spec: LaunchSpec | None = None
                        ) -> tuple[Path, Path]:
    """Write ``out`` (the bash script, executable) and ``out`` with ``.json`` (the job config). Returns both
    paths. ``config`` is a pretrain job config (``data`` and ``run_dir`` required)."""
    spec = spec or LaunchSpec()
    if not config.get("data") or not config.get("run_dir"):
        raise DataError("the launch script needs input data and a run folder", None,
                        "Give data (one or more .h5ad files) and a run folder.")
    script = Path(out).expanduser().resolve()
    if script.suffix != ".sh":
        script = script.with_name(script.name + ".sh")
    cfg_path = script.with_suffix(".json")
    cfg = launch_config(config)
    text = script_text(cfg_path, cfg, spec)
    script.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(cfg_path, json.dumps(cfg, indent=2) + "\n")
    write_text_atomic(script, text)
    script.chmod(0o755)
    return script, cfg_path


def start_local(script: str | Path) -> subprocess.Popen:
    """Start a local launch script in the background (own session, so closing the app does not stop it);
    its output goes to ``SCRIPT.log``. The run folder shows its progress (status, metrics, log)."""
    script = Path(script)
    log = open(script.with_suffix(".log"), "ab")  # noqa: SIM115 - handed to the child, closed below
    try:
        return subprocess.Popen(["bash", str(script)], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, cwd=str(script.parent))
    finally:
        log.close()
