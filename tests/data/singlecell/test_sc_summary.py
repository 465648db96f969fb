"""summarise_singlecell: value kinds, problems in words, block-wise stats; sniff.detect_kind; atomic export."""

from __future__ import annotations

import json
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sc_helpers import GENES, cell_ids, counts, write_dense, write_mtx

from app.data.errors import DataError
from app.data.export import write_csv_atomic, write_h5ad_atomic
from app.data.singlecell import counts_matrix, read_singlecell, summarise_singlecell
from app.data.singlecell.detect import matrix_stats, value_kind
from app.data.sniff import detect_kind


def _adata(X: np.ndarray, genes: list[str] | None = None) -> ad.AnnData:
    genes = genes or [f"G{i}" for i in range(X.shape[1])]
    return ad.AnnData(X=X.astype(np.float32), obs=pd.DataFrame(index=[f"c{i}" for i in range(X.shape[0])]),
                      var=pd.DataFrame(index=genes))


def test_value_kinds() -> None:
    X = counts(30, 8, seed=3)
    norm = X / X.sum(1, keepdims=True) * 1e4
    logn = np.log1p(norm)
    scaled = (logn - logn.mean(0)) / (logn.std(0) + 1e-6)
    assert summarise_singlecell(_adata(X)).value_kind == "counts"
    assert summarise_singlecell(_adata(norm)).value_kind == "normalised"
    assert summarise_singlecell(_adata(logn)).value_kind == "log"
    assert summarise_singlecell(_adata(scaled)).value_kind == "scaled"
    assert summarise_singlecell(_adata(X / 7.3 * 1000)).value_kind == "normalised"  # large non-integers


def test_block_stats_match_whole_matrix_dense_and_sparse() -> None:
    rng = np.random.default_rng(0)
    X = rng.poisson(0.3, size=(103, 17)).astype(np.float32)
    X[5] = 0
    X[:, 3] = 0
    for M in (X, sp.csr_matrix(X), sp.csc_matrix(X)):
        st = matrix_stats(M, block=10)
        np.testing.assert_allclose(st.cell_sums, X.sum(1))
        np.testing.assert_array_equal(st.cell_nnz, (X != 0).sum(1))
        np.testing.assert_allclose(st.gene_sums, X.sum(0))
        np.testing.assert_array_equal(st.gene_nnz, (X != 0).sum(0))
        assert st.nnz == int((X != 0).sum()) and st.max == X.max() and st.min == 0 and value_kind(st) == "counts"
    # sampling: a cap below the cell count scans evenly spread blocks only
    st = matrix_stats(X, max_cells=20, block=10)
    assert st.sampled and st.n_scanned == 20


@pytest.mark.filterwarnings("ignore:(Variable|Observation) names are not unique")
def test_problems_are_stated_with_where_and_what_to_do() -> None:
    X = counts(10, 6)
    X[2] = 0  # an empty cell
    X[:, 4] = 0  # an empty gene
    a = _adata(X, ["CD3E", "LYZ", "CD3E", "NKG7", "GNLY", "MS4A1"])
    a.obs_names = ["c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8", "c0"]
    s = summarise_singlecell(a)
    assert (s.duplicated_genes, s.duplicated_cells, s.empty_cells, s.empty_genes) == (1, 1, 1, 1)
    assert s.examples["empty_cells"] == ["c2"] and s.examples["empty_genes"] == ["GNLY"]
    text = s.to_text()
    assert "1 gene names occur more than once (e.g. CD3E)" in text
    assert "1 cell IDs occur more than once (e.g. c0)" in text
    assert "1 cells have no counts at all (e.g. c2)" in text and "filter_cells" in text
    assert "1 genes are zero in every cell" in text
    d = s.to_dict()
    json.dumps(d)
    assert d["kind"] == "singlecell" and d["value_kind"] == "counts" and d["n_cells"] == 10


def test_unknown_ids_and_normalised_without_counts_are_problems() -> None:
    X = counts(12, 8)
    s = summarise_singlecell(_adata(np.log1p(X), [f"{i}" for i in range(8)]))
    assert s.id_type == "unknown" and s.counts_source is None
    assert any("unrecognised kind" in p for p in s.problems)
    assert any("not raw counts" in p and "layers['counts']" in p for p in s.problems)


def test_normalised_with_counts_layer_is_a_note_not_a_problem() -> None:
    X = counts(12, 8)
    a = _adata(np.log1p(X), GENES)
    a.layers["counts"] = sp.csr_matrix(X)
    s = summarise_singlecell(a)
    assert s.value_kind == "log" and s.counts_source == "layers['counts']"
    assert not any("not raw counts" in p for p in s.problems)
    assert "Raw counts: found in layers['counts']" in s.to_text()


def test_counts_matrix_rejects_negative_and_converts_dense() -> None:
    X = counts(5, 8)
    m = counts_matrix(_adata(X))
    assert sp.isspmatrix_csr(m) and m.dtype == np.float32
    with pytest.raises(DataError, match="raw counts"):
        counts_matrix(_adata(X - 3))


def test_detect_kind_by_name_and_content(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    # genotype: 0/1/2 with marker IDs and sample IDs
    g = pd.DataFrame(rng.integers(0, 3, size=(20, 60)), index=[f"line{i}" for i in range(20)],
                     columns=[f"S1_{1000 + i}" for i in range(60)])
    g.to_csv(tmp_path / "geno.csv")
    assert detect_kind(tmp_path / "geno.csv") == "genotype"
    (g - 1).to_csv(tmp_path / "geno_m101.tsv", sep="\t")
    assert detect_kind(tmp_path / "geno_m101.tsv") == "genotype"
    # single-cell: sparse counts with Ensembl IDs (values 0..2 only: the gene names decide)
    sc_ = pd.DataFrame((rng.random((60, 20)) < 0.1).astype(int), index=[f"ENSG{i:011d}" for i in range(60)],
                       columns=[f"cell{i}" for i in range(20)])
    sc_.to_csv(tmp_path / "sc.csv.gz")
    assert detect_kind(tmp_path / "sc.csv.gz") == "singlecell"
    # single-cell: non-integers with many varied gene names in the header (cells x genes)
    names = ["CD3E", "LYZ", "NKG7", "GNLY", "MS4A1", "CD14", "PPBP", "FCGR3A", "CD8A", "IL7R"] * 6
    names = [f"{n}{'' if k < 10 else chr(65 + k // 10)}" for k, n in enumerate(names)]
    pd.DataFrame(rng.random((30, 60)) * 3, index=cell_ids(30), columns=names).to_csv(tmp_path / "log.tsv", sep="\t")
    assert detect_kind(tmp_path / "log.tsv") == "singlecell"
    # phenotype: a trait table
    pd.DataFrame({"yield": rng.random(30), "height": rng.random(30) * 100},
                 index=[f"line{i}" for i in range(30)]).to_csv(tmp_path / "traits.csv")
    assert detect_kind(tmp_path / "traits.csv") == "phenotype"
    (tmp_path / "lab.txt").write_text("c1\tT cell\nc2\tB cell\n")
    assert detect_kind(tmp_path / "lab.txt") == "phenotype"
    # by name
    for name, kind in (("a.vcf.gz", "genotype"), ("a.bed", "genotype"), ("a.hmp.txt", "genotype"),
                       ("a.h5ad", "singlecell"), ("a.loom", "singlecell")):
        (tmp_path / name).write_bytes(b"x")
        assert detect_kind(tmp_path / name) == kind
    (tmp_path / "p.bed").write_bytes(b"x")
    assert detect_kind(tmp_path / "p") == "genotype"  # a PLINK prefix
    folder = write_mtx(tmp_path / "tenx", counts(), GENES, cell_ids(6), v3=True, gz=True)
    assert detect_kind(folder) == "singlecell"
    for bad, msg in (("nothing.csv", "does not exist"), ("a.xyz", "unknown file type")):
        if bad == "a.xyz":
            (tmp_path / bad).write_text("x")
        with pytest.raises(DataError, match=msg):
            detect_kind(tmp_path / bad)


@pytest.mark.shared_data
def test_detect_kind_shared(shared_data: Path) -> None:
    sc_, g = shared_data / "singlecell", shared_data / "genotype"
    expect = {
        sc_ / "cellbench_lung_3cl" / "sc_dropseq.count.csv.gz": "singlecell",
        sc_ / "crc_tumor_normal_10x" / "counts.small.matrix.gz": "singlecell",
        sc_ / "mouse_immune_actinn" / "train_set.csv.gz": "singlecell",
        sc_ / "mouse_plaque_smc_mtx": "singlecell",
        sc_ / "cellbench_lung_3cl" / "sc_dropseq.metadata.csv.gz": "phenotype",
        g / "wheat599_numeric" / "wheat.X": "genotype",
        g / "wheat599_numeric" / "wheat.Y": "phenotype",
        g / "maize282_hapmap" / "mdp_genotype.hmp.txt": "genotype",
        g / "maize282_hapmap" / "mdp_traits.txt": "phenotype",
        g / "rice44k_plink" / "UNL": "genotype",
        g / "rice44k_plink" / "44kPhenos.csv": "phenotype",
        g / "sorghum_sbdiv_vcf" / "example_genotypes.vcf.gz": "genotype",
        g / "sorghum_sbdiv_vcf" / "example_phenotypes.csv": "phenotype",
    }
    assert {str(p): detect_kind(p) for p in expect} == {str(p): k for p, k in expect.items()}


def test_export_roundtrip_and_atomicity(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = write_dense(tmp_path / "c.csv", counts(), GENES, cell_ids(6), genes_x_cells=False)
    a = read_singlecell(p)
    out = write_h5ad_atomic(a, tmp_path / "out" / "a.h5ad")
    b = read_singlecell(out)
    np.testing.assert_array_equal(b.X.toarray(), a.X.toarray())
    assert list(b.var_names) == GENES
    with pytest.raises(DataError, match=r"\.h5ad"):
        write_h5ad_atomic(a, tmp_path / "a.csv")
    # a crash mid-write leaves the old file intact and no temporary file behind
    before = out.read_bytes()

    def boom(self, path, **kw):
        Path(path).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(ad.AnnData, "write_h5ad", boom)
    with pytest.raises(DataError, match="disk full"):
        write_h5ad_atomic(a, out)
    assert out.read_bytes() == before and sorted(x.name for x in out.parent.iterdir()) == ["a.h5ad"]
    df = pd.DataFrame({"x": [1, 2]}, index=["a", "b"])
    write_csv_atomic(df, tmp_path / "t.tsv.gz")
    assert pd.read_csv(tmp_path / "t.tsv.gz", sep="\t", index_col=0)["x"].tolist() == [1, 2]


def test_counts_only_in_layer(tmp_path: Path) -> None:
    X = counts()
    a = ad.AnnData(X=None, obs=pd.DataFrame(index=cell_ids(6)), var=pd.DataFrame(index=GENES))
    a.layers["counts"] = sp.csr_matrix(X)
    a.write_h5ad(tmp_path / "layer.h5ad")
    b = read_singlecell(tmp_path / "layer.h5ad")
    s = summarise_singlecell(b)
    assert s.value_kind == "counts" and s.counts_source == "layers['counts']"
    assert any("X) is empty" in n for n in s.notes)
    np.testing.assert_array_equal(counts_matrix(b).toarray(), X)
    ad.AnnData(X=None, obs=pd.DataFrame(index=cell_ids(6)),
               var=pd.DataFrame(index=GENES)).write_h5ad(tmp_path / "nothing.h5ad")
    with pytest.raises(DataError, match="no expression matrix"):
        read_singlecell(tmp_path / "nothing.h5ad")


def test_dense_blocks_are_bounded_by_size(monkeypatch: pytest.MonkeyPatch) -> None:
    import app.data.singlecell.detect as det

    seen = []

    class Spy(np.ndarray):
        def __getitem__(self, key):
            if isinstance(key, slice):
                seen.append(key.stop - key.start)
            return np.asarray(self).__getitem__(key)

    monkeypatch.setattr(det, "DENSE_BLOCK_VALUES", 100)
    X = counts(50, 8).view(Spy)
    st = matrix_stats(X)
    assert max(seen) == 12 and sum(seen) == 50  # 100 values / 8 genes -> 12 rows per block
    np.testing.assert_allclose(st.cell_sums, np.asarray(X).sum(1))
