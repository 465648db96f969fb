"""harmonise_genes, detect_id_type and gene_likeness: each rule, the report, and properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.data.genes import detect_id_type, gene_likeness, read_gene_map, strip_version
from app.data.singlecell import GeneMatch, harmonise_genes


def test_each_rule_is_applied_and_counted() -> None:
    vocab = ["CD3E", "LYZ", "ENSG00000111640", "MS4A1", "NKG7"]
    data = ["CD3E", " LYZ ", "ENSG00000111640.14", "ms4a1", "NOPE"]
    m = harmonise_genes(data, vocab)
    assert isinstance(m, GeneMatch)
    assert m.data_to_vocab.dtype == np.int64
    assert m.data_to_vocab.tolist() == [0, 1, 2, 3, -1]
    assert m.how == {"exact": 1, "whitespace": 1, "version": 1, "case": 1, "map": 0, "table": 0}
    assert m.n_matched == 4 and m.match_rate == pytest.approx(0.8) and m.vocab_coverage == pytest.approx(0.8)
    assert m.unmatched == ["NOPE"]
    assert "4 of 5 genes" in m.to_text() and "NOPE" in m.to_text()


def test_version_in_vocab_not_in_data() -> None:
    m = harmonise_genes(["ENSMUSG00000051951"], ["ENSMUSG00000051951.5"])
    assert m.data_to_vocab.tolist() == [0] and m.how["version"] == 1


def test_exact_beats_case_and_collisions_are_reported() -> None:
    # 'cd3e' comes first but only matches by case; 'CD3E' matches exactly and must win the entry
    m = harmonise_genes(["cd3e", "CD3E", "LYZ", "LYZ"], ["CD3E", "LYZ"])
    assert m.data_to_vocab.tolist() == [-1, 0, 1, -1]
    assert m.collisions == {"cd3e": "CD3E", "LYZ": "LYZ"}
    assert "duplicates" in m.to_text()


def test_ambiguous_case_match_is_reported() -> None:
    m = harmonise_genes(["mt-co1"], ["MT-CO1", "mt-Co1"])
    assert m.data_to_vocab.tolist() == [0]
    assert m.ambiguous == {"mt-co1": ["MT-CO1", "mt-Co1"]}
    assert "differ only in case" in m.to_text()


def test_id_map_bridges_ensembl_to_symbols(tmp_path) -> None:
    (tmp_path / "map.tsv").write_text("ENSG00000198851\tCD3E\nENSG00000090382\tLYZ\n")
    idmap = read_gene_map(tmp_path / "map.tsv")
    m = harmonise_genes(["ENSG00000198851.9", "ENSG00000090382", "ENSG00000000003"], ["LYZ", "CD3E"],
                        id_map=idmap)
    assert m.data_to_vocab.tolist() == [1, 0, -1] and m.how["map"] == 2


def test_advice_when_id_kinds_differ() -> None:
    m = harmonise_genes([f"ENSG{i:011d}" for i in range(20)], ["CD3E", "LYZ", "NKG7"])
    assert m.match_rate == 0 and m.id_type_data == "ensembl" and m.id_type_vocab == "human_symbol"
    assert "Ensembl gene IDs but the model uses human gene symbols" in m.to_text()
    d = m.to_dict()
    assert d["n_unmatched"] == 20 and len(d["unmatched_examples"]) == 20


def test_empty_inputs() -> None:
    m = harmonise_genes([], ["A"])
    assert m.match_rate == 0.0 and m.data_to_vocab.shape == (0,)
    m = harmonise_genes(["A"], [])
    assert m.data_to_vocab.tolist() == [-1] and m.vocab_coverage == 0.0


@pytest.mark.parametrize(("names", "kind"), [
    (["CD3E", "LYZ", "RP11-34P13.3", "MT-CO1", "HLA-DRA"], "human_symbol"),
    (["Cd3e", "Lyz2", "Xkr4", "mt-Co1", "Gm12345", "1700001C19Rik"], "mouse_symbol"),
    (["ENSG00000111640", "ENSG00000198851"], "ensembl"),
    (["ENSG00000111640.14", "ENSMUSG00000051951.5"], "ensembl_versioned"),
    (["1", "2", "3"], "unknown"),
    ([], "unknown"),
])
def test_detect_id_type(names: list[str], kind: str) -> None:
    assert detect_id_type(names) == kind


def test_gene_likeness_separates_genes_from_cells() -> None:
    genes = ["Xkr4", "Sox17", "Mrpl15", "Lypla1", "Tcea1", "Rgs20", "Atp6v1h", "Oprk1"]
    for cells in (["CELL_000001", "CELL_000002", "CELL_000003"], [f"tma_mfd_{i}" for i in range(50)],
                  ["AAACCTGAGCATCATC-1", "AAACCTGCAGTAACGG-1"], [str(i) for i in range(100)]):
        assert gene_likeness(genes) - gene_likeness(cells) >= 0.5
    assert gene_likeness(["ENSG00000111640"]) == 1.0


def test_strip_version() -> None:
    assert strip_version("ENSG00000111640.14") == "ENSG00000111640"
    assert strip_version("RP11-34P13.3") == "RP11-34P13.3"  # a symbol with a dot is not a version


SYMBOL = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-", min_size=1,
                 max_size=8)


@settings(max_examples=150, deadline=None)
@given(vocab=st.lists(SYMBOL, min_size=1, max_size=30, unique=True), data=st.lists(SYMBOL, max_size=30),
       pad=st.booleans())
def test_properties(vocab: list[str], data: list[str], pad: bool) -> None:
    if pad:
        data = [f" {g}\t" for g in data]
    m = harmonise_genes(data, vocab)
    d2v = m.data_to_vocab
    assert d2v.shape == (len(data),) and d2v.dtype == np.int64
    assert ((d2v >= -1) & (d2v < len(vocab))).all()
    hit = d2v[d2v >= 0]
    assert len(set(hit.tolist())) == len(hit)  # each vocab entry used at most once
    assert m.n_matched == len(hit) == sum(m.how.values())
    assert len(m.unmatched) == len(data) - m.n_matched
    assert 0.0 <= m.match_rate <= 1.0 and 0.0 <= m.vocab_coverage <= 1.0
    for j in np.flatnonzero(d2v >= 0):  # every match is the same gene up to case/whitespace/version
        assert strip_version(data[j].strip()).upper() == strip_version(vocab[d2v[j]].strip()).upper()


@settings(max_examples=100, deadline=None)
@given(vocab=st.lists(SYMBOL, min_size=1, max_size=30, unique=True), data=st.data())
def test_subset_of_vocab_matches_fully_and_exactly(vocab: list[str], data: st.DataObject) -> None:
    picked = data.draw(st.permutations(vocab))[: data.draw(st.integers(0, len(vocab)))]
    m = harmonise_genes(picked, vocab)
    assert m.match_rate == (1.0 if picked else 0.0) and m.how["exact"] == len(picked)
    assert [vocab[i] for i in m.data_to_vocab] == picked


def test_small_vocab_well_covered_needs_no_fix() -> None:
    data = [f"GENE{i}" for i in range(1000)]
    m = harmonise_genes(data, [*data[:20], "OTHER"])
    assert m.match_rate == pytest.approx(0.02) and m.vocab_coverage == pytest.approx(20 / 21)
    assert "nothing to fix" in m.to_text() and "same species" not in m.to_text()


def test_gene_id_map_uses_the_datasets_second_id_column() -> None:
    import anndata as ad
    import pandas as pd

    from app.data.singlecell import gene_id_map

    var = pd.DataFrame({"gene_ids": ["ENSG00000198851", "ENSG00000090382", "ENSG00000000003"]},
                       index=["CD3E", "LYZ", "TSPAN6"])
    a = ad.AnnData(X=np.zeros((2, 3), np.float32), var=var)
    idmap = gene_id_map(a)
    assert idmap == {"CD3E": "ENSG00000198851", "LYZ": "ENSG00000090382", "TSPAN6": "ENSG00000000003"}
    m = harmonise_genes(list(a.var_names), ["ENSG00000090382.3", "ENSG00000198851.9"], id_map=idmap)
    assert m.data_to_vocab.tolist() == [1, 0, -1] and m.how["map"] == 2
    assert gene_id_map(ad.AnnData(X=np.zeros((2, 3), np.float32))) is None
