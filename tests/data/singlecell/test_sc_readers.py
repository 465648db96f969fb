"""read_singlecell on every format: synthetic files in tmp_path, scanpy's pbmc68k_reduced and shared data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sc_helpers import GENES, cell_ids, counts, write_10x_h5, write_dense, write_loom, write_mtx

from app.data.errors import DataError
from app.data.singlecell import counts_matrix, read_singlecell, summarise_singlecell

SC = "singlecell"


def _same(adata, X: np.ndarray, genes: list[str], cells: list[str]) -> None:
    assert list(adata.var_names) == genes
    assert list(adata.obs_names) == cells
    assert sp.isspmatrix_csr(adata.X) and adata.X.dtype == np.float32
    np.testing.assert_array_equal(adata.X.toarray(), X)
    assert "counts" not in adata.layers  # the contract: counts in X, not duplicated


@pytest.mark.parametrize(("v3", "gz", "prefix"), [(False, False, ""), (True, True, ""), (True, False, ""),
                                                  (False, True, ""), (True, True, "GSM1_")])
def test_mtx_folder_all_layouts(tmp_path: Path, v3: bool, gz: bool, prefix: str) -> None:
    X, cells = counts(), cell_ids(6)
    folder = write_mtx(tmp_path / "tenx", X, GENES, cells, v3=v3, gz=gz, prefix=prefix)
    a = read_singlecell(folder)
    _same(a, X, GENES, cells)
    assert list(a.var["gene_ids"])[:2] == ["ENSG00000000000", "ENSG00000000001"]
    # the matrix file itself is accepted too
    mtx = next(folder.glob("*matrix.mtx*"))
    assert read_singlecell(mtx).shape == (6, len(GENES))


def test_10x_h5(tmp_path: Path) -> None:
    X, cells = counts(), cell_ids(6)
    a = read_singlecell(write_10x_h5(tmp_path / "filtered_feature_bc_matrix.h5", X, GENES, cells))
    _same(a, X, GENES, cells)
    assert summarise_singlecell(a).value_kind == "counts"


def test_loom(tmp_path: Path) -> None:
    X, cells = counts(), cell_ids(6)
    a = read_singlecell(write_loom(tmp_path / "d.loom", X, GENES, cells))
    _same(a, X, GENES, cells)


@pytest.mark.parametrize("name", ["cells.csv", "cells.tsv.gz", "cells.txt"])
def test_dense_cells_x_genes_detected(tmp_path: Path, name: str) -> None:
    X, cells = counts(), cell_ids(6)
    sep = "," if ".csv" in name else "\t"
    a = read_singlecell(write_dense(tmp_path / name, X, GENES, cells, genes_x_cells=False, sep=sep))
    _same(a, X, GENES, cells)
    assert a.uns["omicslab"]["source"]["orientation"] == "cells_x_genes"


def test_dense_genes_x_cells_detected(tmp_path: Path) -> None:
    X, cells = counts(), cell_ids(6)
    a = read_singlecell(write_dense(tmp_path / "g.csv.gz", X, GENES, cells, genes_x_cells=True))
    _same(a, X, GENES, cells)
    assert a.uns["omicslab"]["source"]["orientation"] == "genes_x_cells"


def test_orientation_override(tmp_path: Path) -> None:
    X, cells = counts(), cell_ids(6)
    p = write_dense(tmp_path / "g.csv", X, GENES, cells, genes_x_cells=True)
    a = read_singlecell(p, orientation="cells_x_genes")  # the user insists: genes become "cells"
    assert list(a.obs_names) == GENES and a.shape == (len(GENES), 6)
    with pytest.raises(DataError, match="orientation"):
        read_singlecell(p, orientation="sideways")


def test_orientation_falls_back_to_shape(tmp_path: Path) -> None:
    # names that look alike on both axes: the longer axis is taken as genes, and the reason is recorded
    df = pd.DataFrame(np.arange(12, dtype=float).reshape(4, 3) % 3, index=[f"r{i}" for i in range(4)],
                      columns=[f"c{i}" for i in range(3)])
    df.to_csv(tmp_path / "m.csv")
    a = read_singlecell(tmp_path / "m.csv")
    assert a.shape == (3, 4)
    assert "shape" in a.uns["omicslab"]["source"]["orientation_reason"]


def test_names_are_stripped(tmp_path: Path) -> None:
    X = counts(3, 3)
    pd.DataFrame(X, index=[" c1", "c2 ", "c3"], columns=["CD3E ", " LYZ", "NKG7"]).to_csv(tmp_path / "s.csv")
    a = read_singlecell(tmp_path / "s.csv", orientation="cells_x_genes")
    assert list(a.var_names) == ["CD3E", "LYZ", "NKG7"] and list(a.obs_names) == ["c1", "c2", "c3"]


@pytest.mark.filterwarnings("ignore:(Variable|Observation) names are not unique")
def test_duplicate_names_survive_reading(tmp_path: Path) -> None:
    (tmp_path / "dup.csv").write_text(",c1,c2,c1\nCD3E,1,2,3\nLYZ,0,1,0\nCD3E,4,0,0\n")
    a = read_singlecell(tmp_path / "dup.csv", orientation="genes_x_cells")
    assert list(a.obs_names) == ["c1", "c2", "c1"] and list(a.var_names) == ["CD3E", "LYZ", "CD3E"]
    s = summarise_singlecell(a)
    assert (s.duplicated_cells, s.duplicated_genes) == (1, 1)


def test_label_column_clash_keeps_existing_annotation(tmp_path: Path) -> None:
    import anndata as ad

    cells = [f"c{i}" for i in range(6)]
    ad.AnnData(X=counts(), obs=pd.DataFrame({"type": list("xxxyyy")}, index=cells),
               var=pd.DataFrame(index=GENES)).write_h5ad(tmp_path / "a.h5ad")
    pd.DataFrame({"cell": cells, "type": list("abcabc")}).to_csv(tmp_path / "lab.csv", index=False)
    a = read_singlecell(tmp_path / "a.h5ad", labels=tmp_path / "lab.csv", label_key="type")
    assert list(a.obs["type"]) == list("xxxyyy") and list(a.obs["type_labels"]) == list("abcabc")
    assert a.uns["omicslab"]["labels"]["label_key"] == "type_labels"


def test_labels_join_reports_both_sides(tmp_path: Path) -> None:
    X, cells = counts(), cell_ids(6)
    p = write_dense(tmp_path / "c.csv", X, GENES, cells, genes_x_cells=False)
    lab = pd.DataFrame({"cell": [*cells[:4], "EXTRA-1"], "cell_type": ["T", "B", "T", "NK", "B"]})
    lab.to_csv(tmp_path / "lab.csv", index=False)
    a = read_singlecell(p, labels=tmp_path / "lab.csv", label_key="cell_type")
    assert list(a.obs["cell_type"].astype(object).iloc[:4]) == ["T", "B", "T", "NK"]
    assert a.obs["cell_type"].isna().sum() == 2
    info = a.uns["omicslab"]["labels"]
    assert info["n_cells_without_label"] == 2 and info["n_labels_without_cell"] == 1
    assert info["id_column"] == "cell" and info["label_key"] == "cell_type"
    s = summarise_singlecell(a)
    text = " ".join(s.problems)
    assert "2 cells have no row in lab.csv" in text and "1 rows of lab.csv" in text
    assert s.label_columns["cell_type"] == {"T": 2, "(missing)": 2, "B": 1, "NK": 1}


def test_labels_headerless_tsv_and_bad_key(tmp_path: Path) -> None:
    X, cells = counts(), cell_ids(6)
    p = write_dense(tmp_path / "c.csv", X, GENES, cells, genes_x_cells=False)
    (tmp_path / "lab.txt").write_text("".join(f"{c}\t{'AB'[i % 2]}\n" for i, c in enumerate(cells)))
    a = read_singlecell(p, labels=tmp_path / "lab.txt")
    assert a.obs["label"].value_counts().to_dict() == {"A": 3, "B": 3}
    with pytest.raises(DataError, match="no column 'celltype'"):
        read_singlecell(p, labels=tmp_path / "lab.txt", label_key="celltype")


def test_backed_h5ad_keeps_x_on_disk(tmp_path: Path) -> None:
    import anndata as ad

    X, cells = counts(50, 8), [f"cell{i}" for i in range(50)]
    ad.AnnData(X=sp.csr_matrix(X), obs=pd.DataFrame({"t": ["a", "b"] * 25}, index=cells),
               var=pd.DataFrame(index=GENES)).write_h5ad(tmp_path / "big.h5ad")
    a = read_singlecell(tmp_path / "big.h5ad", backed=True)
    assert a.isbacked
    s = summarise_singlecell(a)
    assert a.isbacked and not isinstance(a.X, np.ndarray | sp.spmatrix)  # still an on-disk dataset
    assert s.backed and s.value_kind == "counts" and s.n_cells == 50 and s.label_columns["t"] == {"a": 25, "b": 25}
    assert s.median_counts_per_cell == float(np.median(X.sum(1)))
    with pytest.raises(DataError, match="backed"):
        read_singlecell(write_loom(tmp_path / "d.loom", X, GENES, cells), backed=True)
    # a labels table joins into obs while X stays on disk
    pd.DataFrame({"cell": cells[::-1], "batch": ["b1", "b2"] * 25}).to_csv(tmp_path / "lab.csv", index=False)
    a = read_singlecell(tmp_path / "big.h5ad", backed=True, labels=tmp_path / "lab.csv")
    assert a.isbacked and a.obs.loc["cell49", "batch"] == "b1" and a.obs.loc["cell48", "batch"] == "b2"


def test_pbmc68k_reduced_is_scaled_not_counts(tmp_path: Path) -> None:
    import scanpy as sc

    sc.datasets.pbmc68k_reduced().write_h5ad(tmp_path / "p.h5ad")
    a = read_singlecell(tmp_path / "p.h5ad")
    s = summarise_singlecell(a)
    assert (s.n_cells, s.n_genes) == (700, 765)
    assert s.value_kind == "scaled" and s.id_type == "human_symbol"
    assert sum(s.label_columns["bulk_labels"].values()) == 700 and len(s.label_columns["bulk_labels"]) == 10
    assert any("not raw counts" in p for p in s.problems)
    with pytest.raises(DataError, match="raw counts"):
        counts_matrix(a)


def test_counts_matrix_prefers_layer_then_raw(tmp_path: Path) -> None:
    import anndata as ad

    X = counts()
    logx = np.log1p(X / X.sum(1, keepdims=True) * 1e4).astype(np.float32)
    a = ad.AnnData(X=logx.copy(), var=pd.DataFrame(index=GENES))
    a.layers["counts"] = sp.csr_matrix(X)
    np.testing.assert_array_equal(counts_matrix(a).toarray(), X)
    b = ad.AnnData(X=X.copy(), var=pd.DataFrame(index=GENES))
    b.raw = b  # raw counts with the full gene list
    b = b[:, GENES[2:6]].copy()
    b.X = logx[:, 2:6]
    m = counts_matrix(b)
    assert m.dtype == np.float32 and sp.isspmatrix_csr(m)
    np.testing.assert_array_equal(m.toarray(), X[:, 2:6])
    assert summarise_singlecell(b).counts_source == "raw.X"


# ------------------------------------------------------------------------------------------------------
# shared data: shapes and label counts as stated in each README
# ------------------------------------------------------------------------------------------------------
@pytest.mark.shared_data
def test_shared_pbmc8k_h5ad(shared_data: Path) -> None:
    p = shared_data / SC / "pbmc8k_hvg200_h5ad" / "pbmc.h5ad"
    a = read_singlecell(p, label_key="cell_type")
    s = summarise_singlecell(a)
    assert (s.n_cells, s.n_genes, s.value_kind, s.id_type) == (7480, 200, "counts", "human_symbol")
    assert s.label_columns["cell_type"] == {"CD8+ T-cells": 2740, "Monocytes": 1583, "CD4+ T-cells": 1541,
                                            "B-cells": 1167, "NK cells": 408, "NA": 32, "HSC": 8,
                                            "Erythrocytes": 1}
    assert s.value_max == 6060 and s.median_counts_per_cell == 142
    assert counts_matrix(a).shape == (7480, 200)
    b = read_singlecell(p, backed=True)
    assert b.isbacked and summarise_singlecell(b).value_max == 6060


@pytest.mark.shared_data
def test_shared_plaque_mtx_positional_labels_refused(shared_data: Path) -> None:
    d = shared_data / SC / "mouse_plaque_smc_mtx"
    a = read_singlecell(d)
    s = summarise_singlecell(a)
    assert (s.n_cells, s.n_genes, s.value_kind, s.id_type) == (4827, 160, "counts", "mouse_symbol")
    assert a.var_names[0] == "Tyrobp" and a.X.nnz == 339632 and s.value_max == 2555
    # label.csv lists labels in cell order without IDs: joined by ID only, so it is refused, with examples
    with pytest.raises(DataError, match=r"joined by cell ID only .*table, column 'label': minor SMC.*data cell IDs"):
        read_singlecell(d, labels=d / "label.csv")


@pytest.mark.shared_data
def test_shared_actinn_csv(shared_data: Path) -> None:
    d = shared_data / SC / "mouse_immune_actinn"
    a = read_singlecell(d / "train_set.csv.gz", labels=d / "train_label.txt.gz")
    s = summarise_singlecell(a)
    assert (s.n_cells, s.n_genes, s.value_kind, s.id_type) == (1000, 19371, "counts", "mouse_symbol")
    assert s.label_columns["label"] == {"B cell": 477, "T cell": 312, "NK cell": 74, "Monocyte": 69,
                                        "Granulocyte": 68}
    assert s.value_max == 4609 and s.median_counts_per_cell == 3909
    assert a.uns["omicslab"]["labels"]["n_cells_without_label"] == 0


@pytest.mark.shared_data
@pytest.mark.parametrize(("platform", "n_cells", "n_genes", "classes", "n_dbl"), [
    ("celseq2", 274, 28204, {"H1975": 112, "H2228": 81, "HCC827": 81}, 34),
    ("dropseq", 225, 15127, {"H1975": 86, "H2228": 69, "HCC827": 70}, 15),
])
def test_shared_cellbench(shared_data: Path, platform: str, n_cells: int, n_genes: int, classes: dict,
                          n_dbl: int) -> None:
    d = shared_data / SC / "cellbench_lung_3cl"
    a = read_singlecell(d / f"sc_{platform}.count.csv.gz", labels=d / f"sc_{platform}.metadata.csv.gz",
                        label_key="cell_line_demuxlet")
    s = summarise_singlecell(a)
    assert (s.n_cells, s.n_genes, s.value_kind, s.id_type) == (n_cells, n_genes, "counts", "ensembl")
    assert s.label_columns["cell_line_demuxlet"] == classes
    assert s.label_columns["demuxlet_cls"]["DBL"] == n_dbl
    assert a.obs["total_count_per_cell"].dtype.kind in "if"  # numeric metadata stays numeric
    has_ercc = platform == "celseq2"
    assert any("62 ERCC" in n for n in s.notes) == has_ercc


@pytest.mark.shared_data
def test_shared_crc_tsv(shared_data: Path) -> None:
    d = shared_data / SC / "crc_tumor_normal_10x"
    a = read_singlecell(d / "counts.small.matrix.gz", labels=d / "sample_annots.small.txt")
    s = summarise_singlecell(a)
    assert (s.n_cells, s.n_genes, s.value_kind, s.id_type) == (624, 41160, "counts", "human_symbol")
    lab = s.label_columns["label"]
    assert len(lab) == 17 and lab["C121_Normal"] == 143 and lab["C131_Tumor"] == 42
    assert sum(v for k, v in lab.items() if k.endswith("_Normal")) == 323
    assert s.value_max == 3521 and s.median_counts_per_cell == 4781
    assert abs(s.median_genes_per_cell - 1334) <= 0.5  # the README rounds 1333.5


def test_table_without_row_names(tmp_path: Path) -> None:
    X = counts()
    pd.DataFrame(X, columns=GENES).to_csv(tmp_path / "noidx.csv", index=False)
    a = read_singlecell(tmp_path / "noidx.csv")
    assert list(a.var_names) == GENES and list(a.obs_names) == [f"cell{i}" for i in range(1, 7)]
    np.testing.assert_array_equal(a.X.toarray(), X)
    assert "no row names" in a.uns["omicslab"]["source"]["orientation_reason"]
    with pytest.raises(DataError, match="no gene names"):
        read_singlecell(tmp_path / "noidx.csv", orientation="genes_x_cells")


def test_headerless_label_list_refused(tmp_path: Path) -> None:
    X, cells = counts(), cell_ids(6)
    p = write_dense(tmp_path / "c.csv", X, GENES, cells, genes_x_cells=False)
    (tmp_path / "labels.txt").write_text("T\nB\nT\nNK\nB\nT\n")
    with pytest.raises(DataError, match="joined by cell ID only"):
        read_singlecell(p, labels=tmp_path / "labels.txt")


def test_labels_match_despite_barcode_suffix(tmp_path: Path) -> None:
    X, cells = counts(), cell_ids(6)  # data IDs end in '-1'
    p = write_dense(tmp_path / "c.csv", X, GENES, cells, genes_x_cells=False)
    pd.DataFrame({"barcode": [c[:-2] for c in cells[:5]], "type": list("TBTBT")}).to_csv(tmp_path / "l.csv",
                                                                                         index=False)
    a = read_singlecell(p, labels=tmp_path / "l.csv")
    assert list(a.obs["type"].astype(object)[:5]) == list("TBTBT") and a.obs["type"].isna().sum() == 1
    info = a.uns["omicslab"]["labels"]
    assert info["suffix_stripped"] and info["n_cells_without_label"] == 1 and info["n_labels_without_cell"] == 0
    assert any("barcode suffix" in n for n in summarise_singlecell(a).notes)
    (tmp_path / "l.tsv").write_text("".join(f"{c[:-2]}\t{t}\n" for c, t in zip(cells, "TBTBTB")))  # no header
    a = read_singlecell(p, labels=tmp_path / "l.tsv")
    assert list(a.obs["label"].astype(str)) == list("TBTBTB")


def test_mtx_v3_keeps_gene_expression_only(tmp_path: Path) -> None:
    import gzip

    X, cells = counts(), cell_ids(6)
    folder = write_mtx(tmp_path / "tenx", X, GENES, cells, v3=True, gz=True)
    feat = folder / "features.tsv.gz"
    lines = gzip.decompress(feat.read_bytes()).decode().splitlines()
    lines[-1] = lines[-1].replace("Gene Expression", "Antibody Capture")
    feat.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    a = read_singlecell(folder)
    assert list(a.var_names) == GENES[:-1] and sp.isspmatrix_csr(a.X)
    np.testing.assert_array_equal(a.X.toarray(), X[:, :-1])
    assert any("dropped 1 other features" in n for n in summarise_singlecell(a).notes)


def test_10x_h5_legacy_v2(tmp_path: Path) -> None:
    import h5py

    X, cells = counts(), cell_ids(6)
    M = sp.csc_matrix(X.T.astype(np.int32))
    with h5py.File(tmp_path / "v2.h5", "w") as f:
        g = f.create_group("GRCh38")
        for name, arr in (("data", M.data), ("indices", M.indices), ("indptr", M.indptr),
                          ("shape", np.array(M.shape, dtype=np.int32)), ("barcodes", np.array(cells, dtype="S")),
                          ("genes", np.array([f"ENSG{i:011d}" for i in range(len(GENES))], dtype="S")),
                          ("gene_names", np.array(GENES, dtype="S"))):
            g.create_dataset(name, data=arr)
    _same(read_singlecell(tmp_path / "v2.h5"), X, GENES, cells)
