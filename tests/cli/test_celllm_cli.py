"""``python -m app celllm finetune`` and ``embed`` end to end in a subprocess (the user's path)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import anndata as ad
import pytest
from app_cli import run_app


def _run(args: list[str], runs_root: Path) -> subprocess.CompletedProcess:
    return run_app(args, runs_root, timeout=300)


@pytest.mark.shared_data
def test_cli_finetune_then_embed(shared_data: Path, tmp_path: Path) -> None:
    d = shared_data / "singlecell" / "cellbench_lung_3cl"
    run = tmp_path / "run"
    p = _run(["celllm", "finetune", "--data", str(d / "sc_dropseq.count.csv.gz"),
              "--labels", str(d / "sc_dropseq.metadata.csv.gz"), "--label-key", "cell_line_demuxlet",
              "--out", str(run), "--epochs", "1", "--max-cells", "60", "--max-len", "64", "--threads", "1",
              "--device", "cpu", "--quiet", "--json"], tmp_path / "runs")
    assert p.returncode == 0, p.stderr[-3000:]
    m = json.loads((run / "metrics.json").read_text())
    assert set(m["classes"]) == {"H1975", "H2228", "HCC827"}
    assert {"accuracy", "macro_f1"} <= set(m["test"]) and {"accuracy", "macro_f1"} <= set(m["baseline"])
    assert m["n_train"] > m["n_test"] > 0
    printed = json.loads(p.stdout.strip().splitlines()[-1])
    assert printed["test"]["macro_f1"] == m["test"]["macro_f1"]

    out = tmp_path / "emb.h5ad"
    p = _run(["celllm", "embed", "--data", str(d / "sc_dropseq.count.csv.gz"), "--model", str(run),
              "--out", str(out), "--max-len", "64", "--threads", "1", "--device", "cpu", "--quiet"],
           tmp_path / "runs")
    assert p.returncode == 0, p.stderr[-3000:]
    a = ad.read_h5ad(out)
    assert a.obsm["X_celllm"].shape[0] == 225 and "celllm_label" in a.obs


@pytest.mark.shared_data
def test_cli_finetune_bad_label_key_is_one_clear_error(tmp_path: Path, shared_data: Path) -> None:
    p = _run(["celllm", "finetune", "--data", str(shared_data / "singlecell" / "pbmc8k_hvg200_h5ad" / "pbmc.h5ad"),
              "--label-key", "no_such_column", "--out", str(tmp_path / "r"), "--quiet"], tmp_path / "runs")
    assert p.returncode == 2
    assert "no_such_column" in p.stderr and "Traceback" not in p.stderr


def test_pretrain_options_map_to_the_pretrain_job_config() -> None:
    from app.cli import build_parser
    from app.cli.celllm_cmd import pretrain_config
    from app.engine.celllm.job_configs import PretrainConfig

    args = build_parser().parse_args([
        "celllm", "pretrain", "--data", "a.h5ad", "--data", "b.h5ad", "--out", "RUN", "--preset", "small",
        "--batch-size", "128", "--chunk-size", "16", "--epochs", "3", "--device", "cpu", "--seed", "7",
        "--max-len", "300", "--supervised-key", "tissue", "--init", "M"])
    cfg = pretrain_config(args)
    assert cfg["data"] == ["a.h5ad", "b.h5ad"] and cfg["run_dir"] == "RUN"
    assert cfg["batch_size"] == 128 and cfg["chunk_size"] == 16 and cfg["epochs"] == 3 and cfg["seed"] == 7
    assert cfg["max_len"] == 300 and cfg["supervised_key"] == "tissue" and cfg["init"] == "M"
    assert PretrainConfig.from_dict(cfg).to_dict() == cfg  # every key is a setting of the job
