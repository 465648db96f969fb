"""Reliability campaign, arguments: values out of range are refused by the job's config before any run
folder is made, with a message naming the option (never "unexpected error: ZeroDivisionError", never an
untrained model reported as a result)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from campaign import assert_refused, cli, geno_csv, pheno_csv, sc_counts, write_h5ad


@pytest.mark.parametrize(("args", "word"), [(["--batch-size", "0"], "batch"), (["--threads", "-3"], "thread"),
                                            (["--epochs", "0"], "epoch")])
def test_finetune_arguments_out_of_range(tmp_path: Path, args: list[str], word: str) -> None:
    X, cells, genes = sc_counts(30)
    data = write_h5ad(tmp_path / "d.h5ad", X, cells, genes, obs={"cell_type": np.array(["T", "B", "NK"] * 10)})
    p = cli(["celllm", "finetune", "--data", str(data), "--label-key", "cell_type", "--out", str(tmp_path / "run"),
             *args, "--quiet"], tmp_path)
    err = assert_refused(p, word)
    assert args[1] in err  # the value given is quoted back
    assert not (tmp_path / "run").exists()  # nothing was started


@pytest.mark.parametrize(("args", "word"), [(["--batch-size", "0"], "batch"), (["--threads", "-3"], "thread"),
                                            (["--epochs", "0"], "epoch")])
def test_gp_arguments_out_of_range(tmp_path: Path, args: list[str], word: str) -> None:
    g, calls, lines = geno_csv(tmp_path / "geno.csv")
    ph = pheno_csv(tmp_path / "pheno.csv", lines, calls)
    p = cli(["gp", "cv", "--geno", str(g), "--pheno", str(ph), "--trait", "yield", "--model", "deepgs",
             "--out", str(tmp_path / "run"), "--quiet", *args], tmp_path)
    assert_refused(p, word)
    assert not (tmp_path / "run").exists()
