"""``python -m app celllm annotate``: a cross-platform transfer of three cell lines (CellBench CEL-seq2 ->
Drop-seq), run in subprocesses as a user would."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from app_cli import run_app

from app.resources import CELLLM_TINY

CELLBENCH = "singlecell/cellbench_lung_3cl"


def _run(args: list[str], runs_root: Path) -> subprocess.CompletedProcess:
    return run_app(args, runs_root, timeout=600)


@pytest.fixture(scope="module")
def celseq2_run(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """CellLM fine-tuned on the CEL-seq2 platform (274 cells, 3 lung cancer cell lines)."""
    d = shared_data / CELLBENCH
    root = tmp_path_factory.mktemp("annotate")
    run = root / "celseq2"
    p = _run(["celllm", "finetune", "--data", str(d / "sc_celseq2.count.csv.gz"),
              "--labels", str(d / "sc_celseq2.metadata.csv.gz"), "--label-key", "cell_line_demuxlet",
              "--out", str(run), "--epochs", "4", "--threads", "1", "--device", "cpu", "--quiet"], root / "runs")
    assert p.returncode == 0, p.stderr[-3000:]
    return run


@pytest.mark.shared_data
def test_annotate_dropseq_with_the_celseq2_model(celseq2_run: Path, shared_data: Path, tmp_path: Path) -> None:
    d = shared_data / CELLBENCH
    out = tmp_path / "dropseq_annotated.h5ad"
    p = _run(["celllm", "annotate", "--model", str(celseq2_run), "--data", str(d / "sc_dropseq.count.csv.gz"),
              "--labels", str(d / "sc_dropseq.metadata.csv.gz"), "--label-key", "cell_line_demuxlet",
              "--out", str(out), "--min-confidence", "0.6", "--map", "pca", "--threads", "1", "--device", "cpu",
              "--quiet"], tmp_path / "runs")
    assert p.returncode == 0, p.stderr[-3000:]
    printed = re.search(r"transfer accuracy (\d\.\d{3})\s+macro-F1 (\d\.\d{3})", p.stdout)
    assert printed, p.stdout
    assert re.search(r"baseline accuracy \d\.\d{3}", p.stdout), p.stdout

    report = json.loads((tmp_path / "dropseq_annotated_annotate.json").read_text())
    sc = report["scores"]
    assert float(printed.group(1)) == pytest.approx(sc["accuracy"], abs=5e-4)
    assert float(printed.group(2)) == pytest.approx(sc["macro_f1"], abs=5e-4)
    assert sc["n_scored"] == 225 and sc["unknown_classes"] == []
    assert np.array(sc["confusion"]["matrix"]).sum() == 225
    assert sc["accuracy"] > 1 / 3  # better than guessing among three cell lines
    assert 0.0 <= report["baseline"]["accuracy"] <= 1.0 and report["baseline"]["n_shared_genes"] > 10_000
    assert report["gene_match"]["match_rate"] > 0.9
    assert report["reference"]["n_cells"] == 274  # the run's own data is the reference on the map

    a = ad.read_h5ad(out)
    assert a.n_obs == 225 and a.obsm["X_celllm"].shape[0] == 225 and a.obsm["X_joint_map"].shape == (225, 2)
    conf = a.obs["celllm_confidence"].to_numpy()
    unassigned = (a.obs["celllm_label"].astype(str) == "Unassigned").to_numpy()
    assert np.array_equal(unassigned, conf < 0.6)
    ann = a.uns["omicslab"]["celllm_annotate"]
    assert ann["min_confidence"] == pytest.approx(0.6) and ann["n_unassigned"] == int(unassigned.sum())
    assert ann["scores"]["accuracy"] == pytest.approx(sc["accuracy"])
    kept = ~unassigned
    assert np.array_equal(a.obs["celllm_label"].astype(str).to_numpy()[kept],
                          a.obs["celllm_best_label"].astype(str).to_numpy()[kept])

    labels = pd.read_csv(tmp_path / "dropseq_annotated_labels.csv", index_col=0)
    assert list(labels.index[:3]) == list(a.obs_names[:3]) and (labels["celllm_label"] == "Unassigned").sum() == \
        unassigned.sum()
    jm = pd.read_csv(tmp_path / "dropseq_annotated_joint_map.csv")
    assert (jm["dataset"] == "reference").sum() == 274 and (jm["dataset"] == "query").sum() == 225
    assert np.isfinite(jm[["x", "y"]].to_numpy()).all()
    assert (tmp_path / "dropseq_annotated_joint_map.png").stat().st_size > 10_000


@pytest.mark.shared_data
def test_annotate_refuses_a_query_with_too_few_known_genes(celseq2_run: Path, tmp_path: Path) -> None:
    genes = [f"gene_{i}" for i in range(40)] + ["ENSG00000111640"]  # one known gene in 41
    counts = pd.DataFrame(np.random.default_rng(0).poisson(3, (len(genes), 12)), index=genes,
                          columns=[f"cell{j}" for j in range(12)])
    query = tmp_path / "query.csv"
    counts.to_csv(query)
    out = tmp_path / "q.h5ad"
    p = _run(["celllm", "annotate", "--model", str(celseq2_run), "--data", str(query), "--out", str(out),
              "--quiet"], tmp_path / "runs")
    assert p.returncode == 2, p.stderr[-2000:]
    assert "vocabulary" in p.stderr and "--gene-map" in p.stderr and "Traceback" not in p.stderr
    assert not out.exists()


def test_annotate_needs_a_fine_tuned_model(tmp_path: Path) -> None:
    p = _run(["celllm", "annotate", "--model", str(CELLLM_TINY),
              "--data", str(tmp_path / "whatever.h5ad"), "--out", str(tmp_path / "o.h5ad"), "--quiet"],
             tmp_path / "runs")
    assert p.returncode == 2 and "not fine-tuned" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.shared_data
def test_query_labels_table_wins_over_a_same_named_obs_column(celseq2_run: Path, shared_data: Path,
                                                              tmp_path: Path) -> None:
    d = shared_data / CELLBENCH
    q = ad.read_h5ad(_h5ad_from_csv(d / "sc_dropseq.count.csv.gz", tmp_path / "dropseq.h5ad"))
    q.obs["cell_line_demuxlet"] = "wrong"  # a stale annotation in the file; the table holds the truth
    q.write_h5ad(tmp_path / "dropseq.h5ad")
    out = tmp_path / "o.h5ad"
    p = _run(["celllm", "annotate", "--model", str(celseq2_run), "--data", str(tmp_path / "dropseq.h5ad"),
              "--labels", str(d / "sc_dropseq.metadata.csv.gz"), "--label-key", "cell_line_demuxlet",
              "--out", str(out), "--map", "pca", "--threads", "1", "--device", "cpu", "--quiet"], tmp_path / "runs")
    assert p.returncode == 0, p.stderr[-3000:]
    report = json.loads((tmp_path / "o_annotate.json").read_text())
    assert report["label_key"] == "cell_line_demuxlet_labels"
    assert set(report["scores"]["confusion"]["labels"]) >= {"H1975", "H2228", "HCC827"}
    assert "wrong" not in report["scores"]["confusion"]["labels"]


def _h5ad_from_csv(csv: Path, out: Path) -> Path:
    from app.data.singlecell import read_singlecell

    read_singlecell(csv).write_h5ad(out)
    return out
