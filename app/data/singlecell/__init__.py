"""Single-cell RNA-seq readers (h5ad, 10x MTX/h5, loom, CSV/TSV), value/ID detection, gene harmonisation."""

from app.data.genes import GeneMatch, detect_id_type, harmonise_genes, read_gene_map
from app.data.singlecell.read import decide_orientation, join_labels, read_labels_table, read_singlecell
from app.data.singlecell.summary import (
    SingleCellSummary,
    counts_matrix,
    gene_id_map,
    label_columns,
    summarise_singlecell,
)

__all__ = [
    "GeneMatch",
    "SingleCellSummary",
    "counts_matrix",
    "decide_orientation",
    "detect_id_type",
    "gene_id_map",
    "harmonise_genes",
    "join_labels",
    "label_columns",
    "read_gene_map",
    "read_labels_table",
    "read_singlecell",
    "summarise_singlecell",
]
