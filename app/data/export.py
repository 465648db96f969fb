"""Atomic exports: an AnnData as .h5ad, a table as CSV. A crash never leaves a half-written file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from app.data.atomic import atomic_path
from app.data.errors import DataError


def write_h5ad_atomic(adata: Any, path: str | Path, compression: str | None = "gzip") -> Path:
    """Write ``adata`` to ``path`` (.h5ad) via a temporary file and a rename; returns the path.

    A backed AnnData is loaded into memory first (anndata cannot write a backed object to a new file).
    """
    path = Path(path)
    if path.suffix.lower() != ".h5ad":
        raise DataError("the output file must end in .h5ad", path, "Choose a name like results.h5ad.")
    if getattr(adata, "isbacked", False):
        adata = adata.to_memory()
    try:
        with atomic_path(path) as tmp:
            adata.write_h5ad(tmp, compression=compression)
    except OSError as exc:
        raise DataError(f"could not write the file ({exc})", path,
                        "Check that the folder is writable and the disk has space.") from exc
    return path


def write_csv_atomic(df: pd.DataFrame, path: str | Path, index: bool = True, **kwargs: Any) -> Path:
    """Write ``df`` as CSV (TSV when the name ends in .tsv; gzipped when it ends in .gz) atomically."""
    path = Path(path)
    name = path.name.lower().removesuffix(".gz")
    sep = "\t" if name.endswith((".tsv", ".txt")) else ","
    compression = "gzip" if path.name.lower().endswith(".gz") else None
    try:
        with atomic_path(path) as tmp:
            df.to_csv(tmp, index=index, sep=sep, compression=compression, **kwargs)
    except OSError as exc:
        raise DataError(f"could not write the file ({exc})", path,
                        "Check that the folder is writable and the disk has space.") from exc
    return path
