"""Prepare the pretraining inputs of the shipped ``celllm-tiny`` model (see README.md in this folder).

For each source dataset: read it with OmicsLab's own reader, take the raw counts, drop ERCC spike-ins, keep
genes detected in at least ``--min-cells`` cells of that dataset (genes never seen cannot be learned and
would only bloat the vocabulary), write gene symbols in upper case (mouse ``Cd3e`` and human ``CD3E`` share
one token: the vocabulary is the union of symbols, so mouse and human data both match it; Ensembl IDs,
for which no offline ID table exists here, stay Ensembl IDs), drop the cells
``app.engine.celllm.heldout.held_out`` marks (CRC-32 of the cell ID even: ``bench annotate`` tests only on
those, so pretraining never sees a test cell of a dataset that is reported on), subsample to at most
``--max-cells`` cells (seeded), and write ``OUT/NAME.h5ad``. ``--extra DIR`` adds the CellBench files of
LuyiTian/sc_mixology that are not in the shared data (``EXTRA_SOURCES``; not reported on, so used whole).
``--celltypist-sample`` adds the 559 raw-count cells
celltypist ships as its demo (``celltypist/data/samples/sample_cell_by_gene.csv``, MIT). scanpy's
``pbmc68k_reduced`` is added with its counts recovered exactly (``make_pbmc68k_counts.py``).
``pretrain`` then builds its vocabulary as the union of these files.

Usage: ``python app/resources/models/prepare_pretrain_data.py SHARED_SINGLECELL_DIR OUT_DIR [--extra DIR]``
"""

from __future__ import annotations

import argparse
from pathlib import Path

import anndata as ad
import numpy as np

SOURCES = {  # name -> path under shared/data/singlecell
    "cellbench_celseq2": "cellbench_lung_3cl/sc_celseq2.count.csv.gz",
    "cellbench_dropseq": "cellbench_lung_3cl/sc_dropseq.count.csv.gz",
    "mouse_immune_actinn": "mouse_immune_actinn/train_set.csv.gz",
    "crc_tumor_normal": "crc_tumor_normal_10x/counts.small.matrix.gz",
    "pbmc8k_hvg200": "pbmc8k_hvg200_h5ad/pbmc.h5ad",
}
# LuyiTian/sc_mixology @7d00ffb, data/csv/ (MIT): CEL-seq2 plates of 5 lung cancer cell lines, and CEL-seq2
# "cell mixtures" (pools of 9 cells of 3 lines). Ensembl IDs, integer UMI counts. Not reported on.
EXTRA_SOURCES = ("sc_celseq2_5cl_p1", "sc_celseq2_5cl_p2", "sc_celseq2_5cl_p3",
                 "cellmix1", "cellmix2", "cellmix3", "cellmix4", "cellmix5")


def prepare(adata: ad.AnnData, min_cells: int, max_cells: int, seed: int, hold_out: bool = True) -> ad.AnnData:
    """Counts-only AnnData with upper-case symbols, no spike-ins, genes seen in >= ``min_cells`` of the kept
    cells; with ``hold_out`` the cells ``held_out`` marks are dropped first."""
    from app.data.singlecell import counts_matrix
    from app.engine.celllm.heldout import held_out

    counts = counts_matrix(adata)
    rows = np.arange(adata.n_obs)
    if hold_out:
        rows = np.flatnonzero(~held_out(adata.obs_names))
    adata, counts = adata[rows], counts[rows]
    names = np.array([str(g).strip() for g in adata.var_names])
    detected = np.asarray((counts > 0).sum(axis=0)).ravel()
    keep = (detected >= min_cells) & ~np.char.startswith(names.astype(str), "ERCC-")
    rows = np.arange(adata.n_obs)
    if adata.n_obs > max_cells:
        rows = np.sort(np.random.default_rng(seed).choice(adata.n_obs, max_cells, replace=False))
    upper = np.char.upper(names[keep].astype(str))
    out = ad.AnnData(counts[rows][:, np.flatnonzero(keep)])
    out.obs_names = np.asarray(adata.obs_names)[rows].astype(str)
    out.var_names = upper
    out.var_names_make_unique()
    return out


def main() -> None:
    from app.data.singlecell import read_singlecell

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("shared_singlecell", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--min-cells", type=int, default=5)
    p.add_argument("--max-cells", type=int, default=4000)
    p.add_argument("--extra", type=Path, default=None, help="folder with the sc_mixology count files")
    p.add_argument("--celltypist-sample", type=Path, default=None,
                   help="celltypist's bundled celltypist/data/samples/sample_cell_by_gene.csv (v1.7.1, MIT)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    for name, rel in SOURCES.items():
        out = prepare(read_singlecell(a.shared_singlecell / rel), a.min_cells, a.max_cells, a.seed)
        out.write_h5ad(a.out / f"{name}.h5ad")
        print(f"{name}: {out.n_obs} cells x {out.n_vars} genes")
    for name in EXTRA_SOURCES if a.extra else ():
        out = prepare(read_singlecell(a.extra / f"{name}.count.csv.gz"), a.min_cells, a.max_cells, a.seed,
                      hold_out=False)
        out.write_h5ad(a.out / f"{name}.h5ad")
        print(f"{name}: {out.n_obs} cells x {out.n_vars} genes")
    if a.celltypist_sample:  # 559 real human immune cells, raw counts; not a dataset that is reported on
        out = prepare(read_singlecell(a.celltypist_sample), a.min_cells, a.max_cells, a.seed, hold_out=False)
        out.write_h5ad(a.out / "celltypist_sample.h5ad")
        print(f"celltypist_sample: {out.n_obs} cells x {out.n_vars} genes")
    from make_pbmc68k_counts import main as pbmc68k  # a sibling script, run from this folder

    tmp = a.out / "pbmc68k_reduced_raw.h5ad"
    pbmc68k(str(tmp))
    out = prepare(ad.read_h5ad(tmp), a.min_cells, a.max_cells, a.seed, hold_out=False)  # not reported on
    tmp.unlink()
    out.write_h5ad(a.out / "pbmc68k_reduced.h5ad")
    print(f"pbmc68k_reduced: {out.n_obs} cells x {out.n_vars} genes")


if __name__ == "__main__":
    main()
