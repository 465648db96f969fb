"""``python -m app celllm finetune --repeats K``: repeated evaluation from the command line (subprocess)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from app_cli import run_app


def _run(args: list[str], runs_root: Path) -> subprocess.CompletedProcess:
    return run_app(args, runs_root, timeout=600)


@pytest.mark.shared_data
def test_cli_finetune_repeats_writes_spread_and_interval(shared_data: Path, tmp_path: Path) -> None:
    d = shared_data / "singlecell" / "cellbench_lung_3cl"
    run = tmp_path / "run"
    p = _run(["celllm", "finetune", "--data", str(d / "sc_dropseq.count.csv.gz"),
              "--labels", str(d / "sc_dropseq.metadata.csv.gz"), "--label-key", "cell_line_demuxlet",
              "--out", str(run), "--epochs", "1", "--max-len", "64", "--threads", "1", "--device", "cpu",
              "--repeats", "2", "--quiet"], tmp_path / "runs")
    assert p.returncode == 0, p.stderr[-3000:]
    m = json.loads((run / "metrics.json").read_text())
    assert m["repeats"] == 2 and m["methods"]["celllm"]["macro_f1"]["n"] == 2
    d_ = m["differences"]["celllm_minus_baseline"]["macro_f1"]
    assert d_["low"] is not None and d_["low"] <= d_["mean"] <= d_["high"]
    assert "2 seeded splits" in p.stdout and "CellLM" in p.stdout and "±" in p.stdout
    assert len({json.dumps(json.loads((run / "runs" / f"r{r}_celllm" / "split.json").read_text())["test"])
                for r in (0, 1)}) == 2  # two different test sets


def test_cli_bad_label_fractions_is_a_clear_message(tmp_path: Path) -> None:
    p = _run(["celllm", "finetune", "--data", str(tmp_path / "x.h5ad"), "--label-key", "y", "--out",
              str(tmp_path / "run"), "--label-fractions", "0.1", "half"], tmp_path / "runs")
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert "label fractions must be numbers" in p.stderr
