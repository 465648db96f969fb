"""Atomic exports: an AnnData as .h5ad, a table as CSV. A crash never leaves a half-written file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from app.data.atomic import atomic_path
from app.data.errors import DataError, os_error_words


def write_h5ad_atomic(adata: Any, path: str | Path, compression: str | None = "gzip",
                      compression_opts: int | None = None, x_from: str | Path | None = None) -> Path:
    """Write ``adata`` to ``path`` (.h5ad) via a temporary file and a rename; returns the path.

    ``compression_opts``: the gzip level (h5py's default 4 when None; 1 is about twice as fast).
    ``x_from``: the .h5ad ``adata`` was read from, its ``.X`` unchanged since: when that file stores X as a
    CSR matrix of the same shape, dtype and number of values, its X is copied as stored (compressed chunks,
    no decompressing and compressing again: seconds at 100k cells); otherwise X is written as usual.
    A backed AnnData is loaded into memory first (anndata cannot write a backed object to a new file).
    """
    path = Path(path)
    if path.suffix.lower() != ".h5ad":
        raise DataError("the output file must end in .h5ad", path, "Choose a name like results.h5ad.")
    if getattr(adata, "isbacked", False):
        adata = adata.to_memory()
    reuse_x = x_from is not None and _same_stored_x(adata, Path(x_from))
    try:
        with atomic_path(path) as tmp:
            if reuse_x:
                _without_x(adata).write_h5ad(tmp, compression=compression, compression_opts=compression_opts)
                import h5py

                with h5py.File(x_from, "r") as src, h5py.File(tmp, "r+") as dst:
                    src.copy(src["X"], dst, "X")  # H5Ocopy: the stored (compressed) chunks as they are
            else:
                adata.write_h5ad(tmp, compression=compression, compression_opts=compression_opts)
    except OSError as exc:
        problem, hint = os_error_words(exc)
        raise DataError(f"could not write the file: {problem}", path, hint) from exc
    except Exception as exc:  # anndata refuses an .obs/.uns entry: name it (check_h5ad_writable does earlier)
        bad = unwritable_entry(adata)
        raise DataError(f"could not write the file: {bad or str(exc)[:200]} cannot be stored in an .h5ad", path,
                        "Remove that entry or convert it to text or numbers, then export again.") from exc
    return path


def _same_stored_x(adata: Any, src: Path) -> bool:
    """True when ``src`` stores X as a CSR matrix with ``adata.X``'s shape, dtypes and number of values."""
    import h5py
    import scipy.sparse as sp

    x = adata.X
    if not (sp.isspmatrix_csr(x) or isinstance(x, sp.csr_array)):
        return False
    try:
        with h5py.File(src, "r") as f:
            g = f.get("X")
            if not isinstance(g, h5py.Group) or g.attrs.get("encoding-type") != "csr_matrix":
                return False
            return (tuple(int(v) for v in g.attrs["shape"]) == tuple(x.shape)
                    and g["data"].dtype == x.data.dtype and g["indices"].dtype == x.indices.dtype
                    and g["data"].shape == (x.nnz,) and g["indptr"].shape == (x.shape[0] + 1,))
    except (OSError, KeyError, ValueError, TypeError):
        return False


def _without_x(adata: Any) -> Any:
    """The same AnnData (shared, not copied) without ``.X``."""
    import anndata as ad

    shell = ad.AnnData(obs=adata.obs, var=adata.var, uns=adata.uns, obsm=adata.obsm, varm=adata.varm,
                       obsp=adata.obsp, varp=adata.varp, layers=dict(adata.layers))
    if adata.raw is not None:
        shell.raw = adata.raw
    return shell


def unwritable_entry(adata: Any) -> str | None:
    """The first ``.obs`` column or ``.uns`` key that anndata cannot write (e.g. an object column mixing
    types, a Python object in ``uns``), as ``"obs column 'x'"`` / ``"uns['y']"``; None when all can be written.

    Each entry is written alone into a tiny in-memory-sized file (no expression matrix), so this is cheap.
    """
    import tempfile

    import anndata as ad
    import numpy as np

    n = adata.n_obs
    with tempfile.TemporaryDirectory(prefix="omicslab-check-") as tmp:
        probe = Path(tmp) / "probe.h5ad"
        for col in adata.obs.columns:
            try:
                one = ad.AnnData(X=np.zeros((n, 0), dtype=np.float32), obs=adata.obs[[col]].copy())
                one.write_h5ad(probe)
            except Exception:
                return f"obs column '{col}'"
        for key in list(adata.uns.keys()):
            try:
                ad.AnnData(X=np.zeros((0, 0), dtype=np.float32), uns={key: adata.uns[key]}).write_h5ad(probe)
            except Exception:
                return f"uns['{key}']"
    return None


def check_h5ad_writable(adata: Any, where: str | Path | None = None) -> None:
    """Before a long computation whose result is an .h5ad: refuse data whose ``.obs``/``.uns`` anndata
    cannot write, so the problem is found in a second, not after embedding."""
    bad = unwritable_entry(adata)
    if bad is not None:
        raise DataError(f"the data's {bad} cannot be stored in an .h5ad file, so the result could not be saved",
                        where, "Remove that entry or convert it to text or numbers (e.g. in scanpy: "
                        "adata.obs[col] = adata.obs[col].astype(str)), then run again. Nothing was computed yet.")


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
