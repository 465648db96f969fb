"""`python -m app celllm pretrain` under a real `torchrun --nproc-per-node 2` (gloo, CPU, tiny preset): each rank
runs the job in-process with DDP, rank 0 alone writes the run folder, the batch is global, and a second launch
resumes from the checkpoint (streaming the same files this time)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from app.engine.celllm.model_io import load_model
from app.engine.run_dir import RunDir

REPO = Path(__file__).resolve().parents[2]
WORLD = 2


def _h5ad(path: Path, n_cells: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    x = rng.poisson(rng.gamma(0.6, 2.0, size=(n_cells, 30))).astype(np.float32)
    x[:, 0] += 1  # every cell expresses a gene
    ad.AnnData(sp.csr_matrix(x), obs=pd.DataFrame(index=[f"{path.stem}{i}" for i in range(n_cells)]),
               var=pd.DataFrame(index=[f"G{i}" for i in range(30)])).write_h5ad(path)
    return path


def _torchrun(args: list[str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), CUDA_VISIBLE_DEVICES="")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={WORLD}",
           "-m", "app", "celllm", "pretrain", *args]
    return subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=240)


def _steps(run: Path) -> list[int]:
    return [r["step"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "kind" not in r]


def test_cli_pretrain_under_torchrun_then_resume(tmp_path: Path) -> None:
    a, b = _h5ad(tmp_path / "a.h5ad", 40, 1), _h5ad(tmp_path / "b.h5ad", 24, 2)
    run = tmp_path / "run"
    common = ["--out", str(run), "--batch-size", "16", "--chunk-size", "4", "--device", "cpu", "--threads", "1",
              "--max-len", "12", "--seed", "5", "--json"]
    first = _torchrun(["--data", str(a), str(b), "--epochs", "1", "--no-stream", *common])
    assert first.returncode == 0, first.stderr[-4000:]
    printed = [json.loads(line) for line in first.stdout.splitlines() if line.startswith("{")]
    assert len(printed) == 1  # rank 0 reports; rank 1 prints nothing
    res = printed[0]
    # 64 cells, global batch 16 = 2 ranks x 8 -> 4 steps per epoch
    assert res["world_size"] == WORLD and res["batch_size"] == 16 and res["batch_per_rank"] == 8
    assert res["backend"] == "gloo" and res["steps"] == 4 and res["n_cells"] == 64
    assert _steps(run) == [1, 2, 3, 4]  # one row per step: only rank 0 writes metrics
    rd = RunDir.open(run)
    assert rd.status == "done" and rd.read_result()["steps"] == 4
    assert rd.read_config()["data"] == [str(a), str(b)]
    assert [p.name for p in rd.checkpoints()] == ["step-4.safetensors"]
    m1, _cfg, vocab, extra = load_model(run)
    assert vocab == [f"G{i}" for i in range(30)] and extra["pretrain"]["world_size"] == WORLD
    assert extra["pretrain"]["batch_size"] == 16 and not extra["pretrain"]["streamed"]
    assert "resuming" not in (run / "log.txt").read_text()

    # resume the same run for a second epoch, now streaming the backed files in blocks of 8 rows
    second = _torchrun(["--data", str(a), str(b), "--epochs", "2", "--resume", "--stream", "--block-cells", "8",
                        "--shuffle-buffer", "16", *common])
    assert second.returncode == 0, second.stderr[-4000:]
    res2 = json.loads([line for line in second.stdout.splitlines() if line.startswith("{")][-1])
    assert res2["steps"] == 8 and res2["world_size"] == WORLD
    st = res2["stream"]  # rank 0's reads for its half of epoch 2: block-bounded
    assert st["max_rows_per_read"] <= 8 and st["values_read"] > 0
    assert _steps(run) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert "resuming from step-4.safetensors" in (run / "log.txt").read_text()
    assert [p.name for p in RunDir.open(run).checkpoints()] == ["step-4.safetensors", "step-8.safetensors"]
    m2, *_ = load_model(run)
    changed = [not torch.equal(x, y) for x, y in zip(m1.state_dict().values(), m2.state_dict().values())]
    assert any(changed)
