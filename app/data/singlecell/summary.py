"""What a single-cell dataset holds, in plain words: ``summarise_singlecell`` and ``counts_matrix``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from app.data.errors import DataError
from app.data.genes import detect_id_type
from app.data.jsonsafe import json_safe
from app.data.singlecell.detect import MatrixStats, looks_like_counts, matrix_stats

MAX_CLASSES = 500  # an obs column with more distinct values is an ID or a measurement, not a label
FEW_GENES = 1000  # fewer genes than this looks like a selected panel, not a transcriptome
TINY_CLASS = 5

VALUE_WORDS = {
    "counts": "raw counts (whole numbers)",
    "normalised": "normalised values (not whole numbers, e.g. counts per million)",
    "log": "log-transformed values (e.g. log1p of normalised counts)",
    "scaled": "scaled values (z-scores, with negative numbers)",
}
ID_WORDS = {
    "human_symbol": "human gene symbols",
    "mouse_symbol": "mouse gene symbols",
    "ensembl": "Ensembl gene IDs",
    "ensembl_versioned": "Ensembl gene IDs with version suffixes (e.g. .14)",
    "unknown": "gene names of an unrecognised kind",
}


@dataclass
class SingleCellSummary:
    """Everything ``inspect`` says about a single-cell dataset.

    Counts (``duplicated_genes`` etc.) are numbers of names/cells; ``examples`` holds a few of each.
    ``problems`` are sentences saying what is wrong, where, and what to do; ``notes`` are harmless facts.
    """

    n_cells: int
    n_genes: int
    value_kind: str
    id_type: str
    duplicated_genes: int
    duplicated_cells: int
    empty_cells: int
    empty_genes: int
    label_columns: dict[str, dict[str, int]]
    problems: list[str]
    notes: list[str] = field(default_factory=list)
    examples: dict[str, list[str]] = field(default_factory=dict)
    path: str | None = None
    format: str | None = None
    backed: bool = False
    sampled: bool = False
    n_cells_scanned: int = 0
    value_min: float = 0.0
    value_max: float = 0.0
    median_counts_per_cell: float = 0.0
    median_genes_per_cell: float = 0.0
    counts_source: str | None = None  # where raw counts are: "X", "layers['counts']", "raw.X" or None
    label_key: str | None = None
    labels: dict[str, Any] = field(default_factory=dict)  # the labels-table join report, if any

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every field (plus ``kind`` = "singlecell", the name every layer uses)."""
        d = asdict(self)
        d["kind"] = "singlecell"
        return json_safe(d)

    def to_text(self) -> str:
        """The summary as a short report a biologist can read."""
        name = Path(self.path).name if self.path else "data"
        lines = [f"Single-cell data: {name}" + (f" ({self.format})" if self.format else "")]
        lines.append(f"  {self.n_cells:,} cells x {self.n_genes:,} genes"
                     + ("  [opened from disk without loading the matrix]" if self.backed else ""))
        scan = (f" (from {self.n_cells_scanned:,} of {self.n_cells:,} cells)" if self.sampled else "")
        lines.append(f"  Values: {VALUE_WORDS.get(self.value_kind, self.value_kind)}, from "
                     f"{_num(self.value_min)} to {_num(self.value_max)}{scan}")
        if self.value_kind == "counts":
            lines.append(f"  Per cell: median {_num(self.median_counts_per_cell)} counts and "
                         f"{_num(self.median_genes_per_cell)} detected genes")
        elif self.counts_source:
            lines.append(f"  Raw counts: found in {self.counts_source} (CellLM uses those)")
        ex = ", ".join(self.examples.get("genes", [])[:4])
        lines.append(f"  Gene names: {ID_WORDS.get(self.id_type, self.id_type)}" + (f" (e.g. {ex})" if ex else ""))
        if self.label_columns:
            lines.append("  Label columns:")
            for col, counts in self.label_columns.items():
                mark = " (label)" if col == self.label_key else ""
                shown = ", ".join(f"{k} {v:,}" for k, v in list(counts.items())[:10])
                more = f", ... ({len(counts)} classes)" if len(counts) > 10 else f" ({len(counts)} classes)"
                lines.append(f"    {col}{mark}: {shown}{more}")
        else:
            lines.append("  Label columns: none (add a labels table with --labels to fine-tune a classifier)")
        if self.problems:
            lines.append("  Problems:")
            lines += [f"    - {p}" for p in self.problems]
        else:
            lines.append("  Problems: none found")
        if self.notes:
            lines.append("  Notes:")
            lines += [f"    - {n}" for n in self.notes]
        return "\n".join(lines)


def _num(x: float) -> str:
    return f"{x:,.0f}" if float(x).is_integer() or abs(x) >= 100 else f"{x:,.3g}"


def _examples(names: pd.Index, mask: np.ndarray, k: int = 5) -> list[str]:
    return [str(x) for x in names[np.flatnonzero(mask)[:k]]]


def label_columns(obs: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Categorical-looking ``obs`` columns -> {class: number of cells}, largest class first.

    Text, categorical and boolean columns with at most ``MAX_CLASSES`` distinct values (and fewer distinct
    values than half the cells, so per-cell IDs are skipped). Missing values count as "(missing)".
    """
    out: dict[str, dict[str, int]] = {}
    n = len(obs)
    for c in obs.columns:
        col = obs[c]
        if not (isinstance(col.dtype, pd.CategoricalDtype) or col.dtype == object or col.dtype == bool
                or pd.api.types.is_string_dtype(col.dtype)):
            continue
        nun = col.nunique(dropna=True)
        if nun == 0 or nun > MAX_CLASSES or (n >= 20 and nun > 0.5 * n):
            continue
        vc = col.astype(object).where(col.notna(), "(missing)").value_counts(sort=True)
        out[str(c)] = {str(k): int(v) for k, v in vc.items()}
    return out


def _counts_source(adata: Any, x_is_counts: bool) -> str | None:
    """Where ``counts_matrix`` would find raw counts (checked on a sample of cells), or None."""
    try:
        if "counts" in adata.layers and looks_like_counts(adata.layers["counts"]):
            return "layers['counts']"
        if x_is_counts:
            return "X"
        if adata.raw is not None and looks_like_counts(adata.raw.X):
            return "raw.X"
    except Exception:  # an odd layer type must not break the summary
        return "X" if x_is_counts else None
    return None


def summarise_singlecell(adata: Any, path: str | Path | None = None) -> SingleCellSummary:
    """Describe ``adata`` (in memory or backed): shape, value kind, gene-ID type, duplicates, empty cells and
    genes, label columns with class counts, and every problem in plain words.

    A backed AnnData is read in row blocks (``detect.matrix_stats``); X is never loaded whole. Files with
    more than ``detect.MAX_SCAN_CELLS`` cells are summarised from evenly spread blocks of cells.
    """
    om = dict(adata.uns.get("omicslab", {}) or {}) if hasattr(adata, "uns") else {}
    src = dict(om.get("source", {}) or {})
    lab = dict(om.get("labels", {}) or {})
    path = str(path) if path is not None else src.get("path")
    backed = bool(getattr(adata, "isbacked", False))
    X = adata.X
    if X is None and "counts" in adata.layers:
        X = adata.layers["counts"]
        src.setdefault("notes", [])
        src["notes"] = [*src["notes"], "The main matrix (X) is empty; figures come from layers['counts']."]
    if X is None:
        raise DataError("the dataset holds no expression matrix (X is empty)", path,
                        "Save the counts as the main matrix (adata.X) or in layers['counts'].")
    st: MatrixStats = matrix_stats(X)
    kind = st.value_kind
    genes = pd.Index(map(str, adata.var_names))
    cells = pd.Index(map(str, adata.obs_names))
    id_type = detect_id_type(list(genes[:5000]))
    dup_g = genes.duplicated(keep="first")
    dup_c = cells.duplicated(keep="first")
    empty_c = st.cell_sums == 0
    empty_g = st.gene_sums == 0
    labels = label_columns(adata.obs)
    problems: list[str] = []
    notes: list[str] = list(src.get("notes", []) or [])
    scope = f" among the {st.n_scanned:,} cells checked" if st.sampled else ""

    counts_src = _counts_source(adata, kind == "counts")
    if st.n_nan:
        what = (f"{st.n_inf:,} infinite (Inf)" + (f" and {st.n_nan - st.n_inf:,} missing (NaN)" if st.n_nan > st.n_inf
                                                   else "")) if st.n_inf else f"{st.n_nan:,} missing (NaN)"
        at = (f", the first for cell '{cells[st.first_nan[0]]}' and gene '{genes[st.first_nan[1]]}'"
              if st.first_nan else "")
        problems.append(f"The matrix has {what} values{scope}{at}. Replace them with 0 (or fix the values that "
                        "overflowed) or remove the affected cells before training; the value figures below leave "
                        "them out.")
    if kind != "counts":
        if counts_src and counts_src != "X":
            notes.append(f"The main matrix holds {VALUE_WORDS[kind]}; raw counts are taken from {counts_src}.")
        else:
            problems.append(f"The values are {VALUE_WORDS[kind]}, not raw counts (range {_num(st.min)} to "
                            f"{_num(st.max)}). CellLM needs raw integer counts: load the original count matrix "
                            "(e.g. Cell Ranger output, or the AnnData before normalisation with its counts in "
                            "layers['counts']). Embedding, UMAP and the baseline still work on these values.")
    if id_type == "unknown":
        problems.append(f"The gene names are of an unrecognised kind (e.g. {', '.join(genes[:4])}). CellLM "
                        "models use gene symbols or Ensembl IDs; matching the model's gene list may fail.")
    if dup_g.any():
        problems.append(f"{int(dup_g.sum()):,} gene names occur more than once (e.g. "
                        f"{', '.join(_examples(genes, dup_g, 4))}). CellLM uses only the first of each; merge "
                        "or rename them (scanpy: adata.var_names_make_unique()) if they differ.")
    if dup_c.any():
        problems.append(f"{int(dup_c.sum()):,} cell IDs occur more than once (e.g. "
                        f"{', '.join(_examples(cells, dup_c, 3))}). Labels cannot be joined to them reliably; "
                        "make the IDs unique (e.g. add the sample name as a prefix).")
    if empty_c.any():
        ex = "" if st.sampled else f" (e.g. {', '.join(_examples(cells, empty_c, 3))})"
        problems.append(f"{int(empty_c.sum()):,} cells have no counts at all{scope}{ex}. They carry no "
                        "information; remove them (scanpy.pp.filter_cells(adata, min_counts=1)).")
    if empty_g.any():
        notes.append(f"{int(empty_g.sum()):,} genes are zero in every cell{scope}; that is harmless (they are "
                     "simply never seen by the model).")
    if adata.n_vars < FEW_GENES:
        problems.append(f"Only {adata.n_vars:,} genes: this looks like a selected gene panel (e.g. highly variable "
                        "genes), not the whole transcriptome. Pre-trained CellLM models match few genes on such "
                        "data; use the full count matrix if you have it.")
    ercc = genes.str.upper().str.startswith("ERCC-")
    if ercc.any():
        notes.append(f"{int(ercc.sum())} ERCC spike-in controls are among the genes; they are not genes of the "
                     "cell and match no model vocabulary (harmless).")
    if lab:
        n_no = int(lab.get("n_cells_without_label", 0) or 0)
        n_extra = int(lab.get("n_labels_without_cell", 0) or 0)
        lab_name = Path(str(lab.get("path", "the labels table"))).name
        if lab.get("suffix_stripped"):
            notes.append(f"The cell IDs of {lab_name} and of the data differ by a barcode suffix such as '-1'; "
                         "they were matched without it.")
        for col, name in (lab.get("renamed") or {}).items():
            notes.append(f"Column '{col}' is both in {lab_name} and in the data's .obs: the table's column was "
                         f"joined as '{name}'{' and is the label column' if lab.get('label_key') == name else ''}; "
                         "the .obs column is kept unchanged.")
        if n_no:
            ex = ", ".join(lab.get("examples_without_label", [])[:3])
            problems.append(f"{n_no:,} cells have no row in {lab_name} (e.g. {ex}); they stay unlabelled and are "
                            "left out of fine-tuning. Add them to the table if they should be used.")
        if n_extra:
            ex = ", ".join(lab.get("examples_without_cell", [])[:3])
            problems.append(f"{n_extra:,} rows of {lab_name} name cells that are not in the data (e.g. {ex}); they "
                            "were ignored. Check that table and matrix come from the same sample.")
    label_key = lab.get("label_key")
    if label_key and label_key in labels:
        tiny = {k: v for k, v in labels[label_key].items() if v < TINY_CLASS and k != "(missing)"}
        if tiny:
            problems.append(f"In label column '{label_key}', {len(tiny)} classes have fewer than {TINY_CLASS} cells "
                            f"({', '.join(f'{k}: {v}' for k, v in list(tiny.items())[:5])}); too few to learn and "
                            "test. Merge them into a larger class or leave them out.")
    if st.sampled:
        notes.append(f"Figures about values and empty cells come from {st.n_scanned:,} of {st.n_cells:,} cells "
                     "(evenly spread blocks), to keep this quick on a big file.")
    if src.get("orientation_reason"):
        notes.append(f"Read as {str(src.get('orientation', '')).replace('_', ' ')}: {src['orientation_reason']}.")
    detected = st.cell_nnz[st.cell_sums > 0] if st.cell_nnz.size else np.zeros(0)
    return SingleCellSummary(
        n_cells=int(adata.n_obs), n_genes=int(adata.n_vars), value_kind=kind, id_type=id_type,
        duplicated_genes=int(dup_g.sum()), duplicated_cells=int(dup_c.sum()),
        empty_cells=int(empty_c.sum()), empty_genes=int(empty_g.sum()),
        label_columns=labels, problems=problems, notes=notes,
        examples={"genes": list(map(str, genes[:5])), "cells": list(map(str, cells[:5])),
                  "duplicated_genes": _examples(genes, dup_g), "duplicated_cells": _examples(cells, dup_c),
                  "empty_cells": [] if st.sampled else _examples(cells, empty_c),
                  "empty_genes": _examples(genes, empty_g)},
        path=path, format=src.get("format"), backed=backed, sampled=st.sampled, n_cells_scanned=st.n_scanned,
        value_min=st.min, value_max=st.max,
        median_counts_per_cell=float(np.median(st.cell_sums)) if st.cell_sums.size else 0.0,
        median_genes_per_cell=float(np.median(detected)) if detected.size else 0.0,
        counts_source=counts_src,
        label_key=label_key, labels=lab,
    )


ALT_ID_COLUMNS = ("gene_ids", "gene_id", "ensembl_id", "ensembl", "gene_symbols", "gene_symbol", "feature_name",
                  "gene_name", "gene_names", "symbol", "symbols")


def gene_id_map(adata: Any) -> dict[str, str] | None:
    """The dataset's own second gene ID, as ``{var_name: other ID}`` for ``harmonise_genes(id_map=...)``.

    10x data carry Ensembl IDs in ``var['gene_ids']`` beside symbol var_names; CELLxGENE files carry symbols in
    ``var['feature_name']`` beside Ensembl var_names. With this map a symbol-keyed model matches Ensembl-keyed
    data (and the reverse) without an external table. None when ``var`` has no such column.
    """
    for col in ALT_ID_COLUMNS:
        if col in adata.var.columns:
            vals = adata.var[col].astype(str).str.strip()
            names = [str(v).strip() for v in adata.var_names]
            pairs = {n: v for n, v in zip(names, vals, strict=False) if v and v.lower() not in ("nan", "none")}
            if pairs and any(k != v for k, v in pairs.items()):
                return pairs
    return None


def _materialise(X: Any) -> Any:
    """A backed matrix (anndata sparse dataset or h5py dataset) read into memory; anything else as is."""
    if hasattr(X, "to_memory"):
        return X.to_memory()
    if hasattr(X, "id") and hasattr(X, "dtype") and hasattr(X, "shape") and not isinstance(X, np.ndarray):
        return X[()]
    return X


def counts_matrix(adata: Any) -> sp.csr_matrix:
    """Raw counts as a CSR float32 cells x genes matrix aligned with ``adata.var_names``.

    Looks in ``layers['counts']``, then ``.X``, then ``adata.raw.X`` (restricted to ``var_names``), and takes
    the first that holds non-negative whole numbers. Raises ``DataError`` when none does.
    """
    tried: list[str] = []
    candidates: list[tuple[str, Any]] = []
    if "counts" in adata.layers:
        candidates.append(("layers['counts']", lambda: adata.layers["counts"]))
    if adata.X is not None:
        candidates.append(("X", lambda: adata.X))
    if adata.raw is not None:
        def raw_x() -> Any:
            raw_names = pd.Index(map(str, adata.raw.var_names))
            want = pd.Index(map(str, adata.var_names))
            pos = raw_names.get_indexer(want)
            if (pos < 0).any():
                return None
            return _materialise(adata.raw.X)[:, pos]
        candidates.append(("raw.X", raw_x))
    for name, get in candidates:
        M = get()
        if M is None:
            tried.append(f"{name} (its genes differ from the main gene list)")
            continue
        M = _materialise(M)
        if looks_like_counts(M):
            return sp.csr_matrix(M, dtype=np.float32)
        tried.append(f"{name} ({VALUE_WORDS[matrix_stats(M, max_cells=2000).value_kind]})")
    raise DataError(
        "this dataset holds normalised values, CellLM needs raw counts: " + ("; ".join(tried) or "no matrix"),
        None,
        "Load the raw count matrix instead (Cell Ranger output, or an .h5ad that keeps counts in "
        "layers['counts'] or adata.raw).")
