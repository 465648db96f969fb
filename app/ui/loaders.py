"""What the Data tab runs in a worker thread: read a dataset and summarise it. No Qt here.

Each function returns a plain dict the GUI thread hands to ``AppState``; errors are ``DataError`` with the
file, what is wrong and what to do (shown in a message box).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from app.data.errors import DataError


def cache_dir() -> Path:
    """Where the GUI writes files jobs need (the demo as .h5ad): beside the runs folder."""
    from app.engine.run_dir import default_runs_root

    d = default_runs_root().parent / "cache"
    d.mkdir(parents=True, exist_ok=True)
    return d


def read_vocab(model_dir: str | Path) -> list[str]:
    """Gene vocabulary of a CellLM model folder (vocab.txt), or a run folder's model/ sub-folder."""
    p = Path(model_dir)
    for cand in (p / "vocab.txt", p / "model" / "vocab.txt"):
        if cand.is_file():
            return [g.strip() for g in cand.read_text(encoding="utf-8").splitlines() if g.strip()]
    raise DataError("this folder holds no CellLM model (vocab.txt missing)", p,
                    "Choose a model folder (the shipped celllm-tiny or a finished fine-tune run).")


def gene_match(adata: Any, model_dir: str | Path) -> Any:
    """Harmonise the dataset's genes with a model's vocabulary (a second gene-ID column is used when the
    dataset has one)."""
    from app.data.singlecell import harmonise_genes

    vocab = read_vocab(model_dir)
    genes = [str(g) for g in adata.var_names]
    try:
        from app.data.singlecell.summary import gene_id_map

        mapping = gene_id_map(adata)
    except Exception:  # an optional helper; plain matching still works
        mapping = None
    return harmonise_genes(genes, vocab, id_map=mapping or None)


def qc_arrays(adata: Any) -> dict[str, np.ndarray]:
    """Per-cell total counts and detected genes (for the Data tab's QC histograms); {} when the matrix is
    not in memory (backed) or holds no counts."""
    if getattr(adata, "isbacked", False):
        return {}
    try:
        from app.data.singlecell import counts_matrix

        X = counts_matrix(adata)
    except DataError:
        import scipy.sparse as sp

        X = sp.csr_matrix(adata.X)
    return {"counts_per_cell": np.asarray(X.sum(1)).ravel(), "genes_per_cell": np.diff(X.indptr)}


def load_singlecell(path: str | Path, model_dir: str | Path | None = None) -> dict[str, Any]:
    """Read and summarise a single-cell dataset (+ gene match against ``model_dir``)."""
    from app.data.singlecell import read_singlecell, summarise_singlecell

    adata = read_singlecell(path)
    summary = summarise_singlecell(adata, path)
    gm = None
    if model_dir is not None:
        try:
            gm = gene_match(adata, model_dir)
        except DataError:
            gm = None
    return {"kind": "singlecell", "path": str(path), "data_path": str(path), "adata": adata,
            "summary": summary, "gene_match": gm, "qc": qc_arrays(adata)}


def load_demo_singlecell(model_dir: str | Path | None = None, max_cells: int | None = None) -> dict[str, Any]:
    """scanpy's bundled pbmc68k_reduced with its counts recovered; written once as .h5ad for the jobs."""
    from app.data.demo import pbmc68k_counts
    from app.data.export import write_h5ad_atomic
    from app.data.singlecell import summarise_singlecell

    adata = pbmc68k_counts()
    if max_cells is not None and adata.n_obs > max_cells:
        adata = adata[np.sort(np.random.default_rng(0).choice(adata.n_obs, max_cells, replace=False))].copy()
    name = "pbmc68k_reduced_counts.h5ad" if max_cells is None else f"pbmc68k_reduced_counts_{max_cells}.h5ad"
    out = cache_dir() / name
    if not out.is_file():
        write_h5ad_atomic(adata, out)
    summary = summarise_singlecell(adata, out)
    gm = gene_match(adata, model_dir) if model_dir is not None else None
    return {"kind": "singlecell", "path": "demo: pbmc68k_reduced (scanpy)", "data_path": str(out),
            "adata": adata, "summary": summary, "gene_match": gm, "qc": qc_arrays(adata)}


def load_genotype(path: str | Path, min_call_rate: float = 0.9, min_maf: float = 0.01, orientation: str = "auto",
                  sample_ids: Any = None) -> dict[str, Any]:
    """Read genotypes and run QC (the report keeps per-marker call rate and MAF for the histograms).

    ``orientation`` / ``sample_ids``: for numeric matrices, as in ``read_genotypes``.
    """
    from app.data.genotype import read_genotypes, run_qc

    geno = read_genotypes(path, numeric_orientation=orientation, sample_ids=sample_ids)
    _, qc = run_qc(geno, min_call_rate=min_call_rate, min_maf=min_maf)
    calls = geno.calls
    missing = float((calls < 0).mean()) if calls.size else 0.0
    summary = {
        "kind": "genotype", "n_samples": int(calls.shape[0]), "n_markers": int(calls.shape[1]),
        "missing_rate": missing, "chromosomes": int(geno.markers["chrom"].nunique())
        if "chrom" in geno.markers else 0, "coding": getattr(geno, "coding", ""),
        "notes": list(getattr(geno, "notes", []) or []), "qc_text": qc.to_text(),
    }
    return {"kind": "genotype", "path": str(path), "geno": geno, "qc": qc, "summary": summary}


def load_phenotypes(path: str | Path, geno: Any, trait: str | None = None, orientation: str = "auto") -> dict[str, Any]:
    """Read a phenotype table and join it to the genotypes by sample ID.

    A numeric genotype matrix read with ``orientation`` "auto" is read again with the table's IDs (its sample
    axis is the one they join); when that turns it round, the new reading is returned as ``genotype``.
    """
    from app.data.genotype import detect_genotype_format, join_phenotypes, pheno_id_candidates, read_phenotypes

    pheno = read_phenotypes(path)
    again = None
    if geno is not None and orientation == "auto" and geno.source and detect_genotype_format(geno.source) == "numeric":
        ids = pheno_id_candidates(pheno)
        # read again only when the marker axis joins the table better than the sample axis (cheap to tell)
        if sum(str(m) in ids for m in geno.markers["id"]) > sum(str(x) in ids for x in geno.samples):
            again = load_genotype(geno.source, sample_ids=ids)
            geno = again["geno"]
    numeric = [c for c in pheno.columns if np.issubdtype(pheno[c].dtype, np.number)]
    if geno is not None:
        # an ID column the join used (rice's numeric PlinkIDs) is not a trait
        how = join_phenotypes(geno, pheno, None).how
        if how.startswith("column "):
            numeric = [c for c in numeric if c != how[len("column "):]]
    if trait is None or trait not in numeric:
        trait = numeric[0] if numeric else None
    join = join_phenotypes(geno, pheno, trait) if geno is not None else None
    return {"path": str(path), "pheno": pheno, "trait": trait, "traits": numeric, "join": join, "genotype": again}


def demo_genotype_paths() -> dict[str, Path]:
    """The simulated genotype demo (geno, pheno, causal, map)."""
    from app.data.demo import genotype_demo_paths

    return genotype_demo_paths()


def detect_kind(path: str | Path) -> str:
    """singlecell / genotype / phenotype, by name and content."""
    from app.data.sniff import detect_kind as _detect

    return _detect(path)


def env_threads() -> int | None:
    """Threads for GUI-started jobs: OMICSLAB_THREADS when set (tests use 1), else the engine default."""
    v = os.environ.get("OMICSLAB_THREADS")
    return int(v) if v else None


def load_any(path: str | Path, model_dir: str | Path | None = None, geno: Any = None,
             trait: str | None = None, orientation: str = "auto") -> dict[str, Any]:
    """Detect what ``path`` holds and read it: single-cell, genotypes, or a phenotype table (joined to the
    open genotypes)."""
    kind = detect_kind(path)
    if kind == "singlecell":
        return load_singlecell(path, model_dir)
    if kind == "genotype":
        return load_genotype(path, orientation=orientation)
    if geno is None:
        raise DataError("this is a phenotype table, but no genotypes are open", path,
                        "Open the genotype file first (PLINK, VCF, HapMap or a 0/1/2 matrix), then add this table.")
    return {"kind": "phenotype", **load_phenotypes(path, geno, trait)}


def load_demo_genotype() -> dict[str, Any]:
    """The simulated genotype demo with its phenotype table joined and the causal markers known."""
    import pandas as pd

    paths = demo_genotype_paths()
    out = load_genotype(paths["geno"])
    out["pheno"] = load_phenotypes(paths["pheno"], out["geno"], "trait")
    out["causal"] = pd.read_csv(paths["causal"])
    out["path"] = str(paths["geno"])
    return out


def counts_or_x(adata: Any) -> Any:
    """A log-normalised CSR matrix of the counts (or ``.X`` as is when the data hold no counts), for the
    preview map before any model ran."""
    import scipy.sparse as sp

    try:
        from app.data.singlecell import counts_matrix

        X = counts_matrix(adata).astype(np.float32)
    except DataError:
        return sp.csr_matrix(adata.X, dtype=np.float32)
    tot = np.asarray(X.sum(1)).ravel()
    X = sp.diags(1e4 / np.maximum(tot, 1)) @ X
    X.data = np.log1p(X.data)
    return sp.csr_matrix(X)
