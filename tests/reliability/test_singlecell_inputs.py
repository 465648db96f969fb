"""Reliability campaign, single-cell side: labels join by ID only, the table wins over .obs, and each bad
input gets its own clear message (never "unexpected error", never a wrong answer with exit 0)."""

from __future__ import annotations

import builtins
import errno
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from campaign import assert_refused, cli, sc_counts, snapshot, write_h5ad

from app.cli import main
from app.data.errors import DataError
from app.data.singlecell import harmonise_genes, read_singlecell, summarise_singlecell
from app.resources import CELLLM_TINY


def _csv(path: Path, X: np.ndarray, cells: list[str], genes: list[str]) -> Path:
    pd.DataFrame(X, index=pd.Index(cells, name="cell"), columns=genes).to_csv(path)
    return path


# -- 1. labels: by ID only; the table wins over .obs -----------------------------------------------
def test_labels_with_the_right_row_count_but_no_matching_id_are_refused(tmp_path: Path, capsys) -> None:
    X, cells, genes = sc_counts(40)
    data = _csv(tmp_path / "counts.csv", X, cells, genes)
    # one row per cell (same count!) but other IDs: joining by position would train on shuffled labels
    pd.DataFrame({"barcode": [f"other{i}" for i in range(40)], "type": ["T", "B"] * 20}).to_csv(
        tmp_path / "labels.csv", index=False)
    before = snapshot(tmp_path)
    assert main(["inspect", str(data), "--labels", str(tmp_path / "labels.csv")]) == 2
    err = capsys.readouterr().err
    assert "joined by cell ID only" in err and "labels.csv" in err and "What to do:" in err
    assert "other0" in err and "cell000" in err  # examples from both sides
    assert "has no cell-ID column" not in err
    p = cli(["celllm", "finetune", "--data", str(data), "--labels", str(tmp_path / "labels.csv"),
             "--label-key", "type", "--out", str(tmp_path / "run"), "--epochs", "1", "--quiet"], tmp_path)
    assert_refused(p, "joined by cell ID only", "other0")
    assert not (tmp_path / "run" / "metrics.json").exists()
    assert {k: v for k, v in snapshot(tmp_path).items() if not k.startswith(("run", "runs"))} == before


def test_labels_table_column_wins_over_the_same_obs_column_and_the_report_says_so(tmp_path: Path) -> None:
    from app.engine.celllm.finetune import load_labelled
    from app.engine.celllm.job_configs import FinetuneConfig
    from app.engine.reporter import Reporter

    X, cells, genes = sc_counts(40)
    wrong = np.array(["obsA", "obsB"] * 20)
    data = write_h5ad(tmp_path / "d.h5ad", X, cells, genes, obs={"cell_type": wrong})
    right = np.array(["T"] * 20 + ["B"] * 20)
    pd.DataFrame({"cell": cells, "cell_type": right}).to_csv(tmp_path / "labels.csv", index=False)
    lines: list[str] = []
    rep = Reporter(lambda ev: lines.append(getattr(ev, "line", "")))
    cfg = FinetuneConfig.from_dict({"data": str(data), "labels": str(tmp_path / "labels.csv"),
                                    "label_key": "cell_type", "run_dir": str(tmp_path / "run")})
    adata, labels, _, key = load_labelled(cfg, rep)
    assert key == "cell_type_labels" and list(labels) == list(right)
    assert list(adata.obs["cell_type"].astype(str)) == list(wrong)  # .obs kept, not overwritten
    assert any("the table's was used" in line and "labels.csv" in line for line in lines), lines
    s = summarise_singlecell(read_singlecell(data, labels=tmp_path / "labels.csv", label_key="cell_type"))
    assert any("'cell_type' is both in labels.csv and in the data's .obs" in n for n in s.notes)


# -- 6. one clear message per bad input ----------------------------------------------------------
def test_all_zero_cells_are_refused_before_any_training(tmp_path: Path) -> None:
    X, cells, genes = sc_counts(30)
    data = write_h5ad(tmp_path / "zero.h5ad", np.zeros_like(X), cells, genes)
    p = cli(["celllm", "embed", "--data", str(data), "--out", str(tmp_path / "out.h5ad"), "--quiet"], tmp_path)
    assert_refused(p, "zero counts", "nothing to learn or embed")
    assert not (tmp_path / "out.h5ad").exists()


def test_non_utf8_csv_is_read_as_latin1_like_the_phenotype_reader(tmp_path: Path) -> None:
    from app.data.genotype import read_phenotypes

    X, cells, genes = sc_counts(20)
    cells[3] = "cellé3"
    p = tmp_path / "latin1.csv"
    text = pd.DataFrame(X, index=pd.Index(cells, name="cell"), columns=genes).to_csv()
    p.write_bytes(text.encode("latin-1"))
    a = read_singlecell(p)
    assert "cellé3" in list(a.obs_names)
    assert any("not UTF-8" in n and "Latin-1" in n for n in a.uns["omicslab"]["source"]["notes"])
    assert "cellé3" in list(read_phenotypes(p).index)  # the phenotype reader reads the same names


def test_a_file_the_user_may_not_read_says_permission_not_layout(tmp_path: Path, monkeypatch, capsys) -> None:
    X, cells, genes = sc_counts(20)
    p = _csv(tmp_path / "locked.csv", X, cells, genes)
    real_open = builtins.open

    def guarded(file, *a, **k):  # the test runs as root, which chmod cannot lock out: deny like the OS does
        if str(file) == str(p):
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, *a, **k)

    monkeypatch.setattr(builtins, "open", guarded)
    with pytest.raises(DataError) as ei:
        read_singlecell(p)
    msg = str(ei.value)
    assert "permission denied" in msg and "locked.csv" in msg and "header" not in msg.lower()
    assert "permissions" in ei.value.hint
    assert main(["inspect", str(p)]) == 2  # the command line (and the window's reader) say the same
    err = capsys.readouterr().err
    assert "permission denied" in err and "What to do:" in err and "Traceback" not in err


def test_infinite_counts_are_named_with_their_cell_and_gene(tmp_path: Path, capsys) -> None:
    X, cells, genes = sc_counts(20)
    X[4, 7] = np.inf
    data = write_h5ad(tmp_path / "inf.h5ad", X, cells, genes)
    with pytest.raises(DataError, match="infinite"):
        read_singlecell(data)  # read into memory: refused
    assert main(["inspect", str(data)]) == 0  # inspect opens .h5ad backed: it reports, it does not guess
    out = capsys.readouterr().out
    assert f"1 infinite (Inf) values, the first for cell '{cells[4]}' and gene '{genes[7]}'" in out
    assert "log-transformed" not in out


def test_duplicated_gene_names_are_duplicates_not_also_not_found() -> None:
    vocab = ["CD3E", "MS4A1", "LYZ"]
    gm = harmonise_genes(["CD3E", "CD3E", "LYZ", "NOPE"], vocab)
    assert gm.collisions == {"CD3E": "CD3E"}
    assert gm.unmatched == ["NOPE"]
    text = gm.to_text()
    assert "1 genes were not found (e.g. NOPE)" in text and "duplicates of an earlier gene" in text


def test_placeholder_var_names_match_through_var_gene_ids_everywhere(tmp_path: Path, capsys) -> None:
    from app.engine.celllm.embed import match_genes

    X, cells, genes = sc_counts(20)
    placeholders = [f"gene{i}" for i in range(len(genes))]
    data = write_h5ad(tmp_path / "ph.h5ad", X, cells, placeholders, var={"gene_ids": genes})
    vocab_dir = CELLLM_TINY
    assert main(["inspect", str(data), "--vocab", str(vocab_dir), "--json"]) == 0
    import json

    shown = json.loads(capsys.readouterr().out)
    adata = ad.read_h5ad(data)
    vocab = (vocab_dir / "vocab.txt").read_text().split()
    gm = match_genes(adata.var_names, vocab, None, adata)  # what fine-tune and embed use
    assert gm.match_rate == 1.0
    assert shown["gene_match"]["match_rate"] == pytest.approx(gm.match_rate)


def test_an_obs_column_anndata_cannot_write_is_found_before_embedding(tmp_path: Path) -> None:
    X, cells, genes = sc_counts(30)
    data = write_h5ad(tmp_path / "d.h5ad", X, cells, genes)
    pd.DataFrame({"cell": cells, "_index": ["a"] * 30}).to_csv(tmp_path / "lab.csv", index=False)
    p = cli(["celllm", "embed", "--data", str(data), "--labels", str(tmp_path / "lab.csv"),
             "--out", str(tmp_path / "out.h5ad"), "--quiet"], tmp_path)
    assert_refused(p, "obs column '_index'", "Nothing was computed yet")
    (log,) = (tmp_path / "runs").glob("*/log.txt")
    assert "gene match" not in log.read_text()  # refused before the model ran
    assert not (tmp_path / "out.h5ad").exists()
