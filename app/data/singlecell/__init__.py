"""Single-cell RNA-seq readers (h5ad, 10x MTX/h5, loom, CSV/TSV), value/ID detection, gene harmonisation."""
