"""``read_singlecell``: every supported single-cell file into one AnnData (cells x genes).

Formats: .h5ad (optionally backed), 10x MTX folder (v2 genes.tsv / v3 features.tsv, gzipped or not, with or
without a GEO-style file prefix), 10x .h5, .loom, and dense CSV/TSV text (optionally gzipped) in either
orientation. The parsing is done by anndata, scanpy, scipy and pandas; this module picks the reader, checks
what came back and turns every failure into one ``DataError`` that says what, where and what to do.

What a read leaves in ``adata.uns['omicslab']['source']``: path, format, orientation (text files), notes.
A labels table joined by cell ID leaves ``adata.uns['omicslab']['labels']`` (see ``join_labels``).
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from app.data.errors import DataError, check_readable
from app.data.genes import gene_likeness
from app.data.singlecell.detect import looks_like_counts

ORIENTATIONS = ("auto", "genes_x_cells", "cells_x_genes")
TEXT_SUFFIXES = (".csv", ".tsv", ".txt", ".tab", ".matrix", ".dge")
FORMATS_HINT = ("OmicsLab reads single-cell data from .h5ad, .h5 (10x), .loom, a 10x folder (matrix.mtx + "
                "barcodes.tsv + genes.tsv/features.tsv) and dense .csv/.tsv tables (optionally .gz).")
_ID_HEADERS = {"", "cell", "cells", "barcode", "barcodes", "cell_id", "cellid", "cell_name", "id", "ids", "gene",
               "genes", "gene_id", "gene_ids", "gene_name", "gene_names", "symbol", "symbols", "index", "name",
               "names", "feature", "features", "unnamed: 0", "entrez", "entrezid", "entrez_id", "geneid",
               "ensembl", "ensembl_id", "row", "rownames", "x"}  # header of a row-name column (never data)
_MTX = re.compile(r"^(?P<prefix>.*?)matrix\.mtx(\.gz)?$")


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------
def _suffix(path: Path) -> str:
    """Lower-case suffix with a trailing .gz dropped (``x.count.csv.gz`` -> ``.csv``)."""
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return Path(name).suffix


def format_of(path: str | Path) -> str:
    """Which reader a path goes to: "h5ad", "10x_h5", "loom", "mtx", "text" (or DataError)."""
    path = Path(path)
    if path.is_dir():
        return "mtx"
    name = path.name.lower()
    if _MTX.match(name):
        return "mtx"
    if name.endswith((".mtx", ".mtx.gz")):
        raise DataError("a lone Matrix Market file: OmicsLab reads it as part of a 10x folder", path,
                        "Put it in a folder named after the sample as matrix.mtx(.gz), with barcodes.tsv(.gz) and "
                        "genes.tsv or features.tsv(.gz) beside it, and open the folder.")
    suf = _suffix(path)
    if name.endswith(".h5ad"):
        return "h5ad"
    if suf in (".h5", ".hdf5"):
        return "10x_h5"
    if suf == ".loom":
        return "loom"
    if suf in TEXT_SUFFIXES:
        return "text"
    raise DataError(f"unknown single-cell file type '{path.suffix or path.name}'", path, FORMATS_HINT)


@contextlib.contextmanager
def _reading(path: Path, what: str, hint: str) -> Iterator[None]:
    """Turn any library error while reading into one DataError naming the file."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # anndata's "names not unique" etc.: we report those ourselves
            yield
    except DataError:
        raise
    except MemoryError as exc:
        raise DataError(f"not enough memory to read this {what}", path,
                        "Open .h5ad files backed (read-only from disk) or use a machine with more memory.") from exc
    except Exception as exc:  # the readers raise OSError, ValueError, KeyError, EOFError, ...
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"could not read this {what} ({msg[:300]})", path, hint) from exc


def _open_text(path: Path, encoding: str = "utf-8") -> io.TextIOBase:
    raw = gzip.open(path, "rt", encoding=encoding, errors="replace") if _is_gzip(path) else \
        open(path, encoding=encoding, errors="replace")  # noqa: SIM115 - returned to the caller
    return raw


LATIN1_NOTE = ("the file is not UTF-8 text: it was read as Latin-1 (Windows/Excel's encoding); check that names "
               "with accents look right, or save it as UTF-8")


def _read_csv_any(path: Path, **kw: Any) -> tuple[pd.DataFrame, str]:
    """``pd.read_csv`` as UTF-8, else as Latin-1 (every byte is a Latin-1 character, as the genotype and
    phenotype readers also accept). Returns (table, encoding used)."""
    try:
        return pd.read_csv(path, encoding="utf-8", **kw), "utf-8"
    except UnicodeDecodeError:
        return pd.read_csv(path, encoding="latin-1", **kw), "latin-1"


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def _content_kind(path: Path) -> str:
    """What the first bytes say: "hdf5", "gzip", "zip", "text" or "binary"."""
    with open(path, "rb") as fh:
        head = fh.read(2048)
    if head.startswith(HDF5_MAGIC) or head[512:520] == HDF5_MAGIC or head[1024:1032] == HDF5_MAGIC:
        return "hdf5"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    try:
        (head[:-3] if len(head) == 2048 else head).decode("utf-8")  # a multi-byte char may be cut at the end
        return "text"
    except UnicodeDecodeError:
        return "binary"


def _check_hdf5(path: Path, what: str) -> None:
    """An .h5ad/.h5/.loom must be HDF5; say what it is instead when it is not."""
    kind = _content_kind(path)
    if kind == "hdf5":
        return
    words = {"gzip": "it is a gzip-compressed file", "zip": "it is a zip archive (e.g. an Excel file)",
             "text": "it is a text file", "binary": "its first bytes are not an HDF5 signature"}[kind]
    raise DataError(f"this is not a valid {what} file (those are HDF5): {words}", path,
                    "Give the file its real extension (.csv, .tsv, .gz, ...) or, if it should be HDF5, copy it "
                    "again: the start of the file is missing or damaged.")


def _first_line(path: Path, encoding: str = "utf-8") -> str:
    with _reading(path, "text file", "Check that the file is complete (a cut-off .gz cannot be read)."), \
            _open_text(path, encoding) as fh:
        return fh.readline()


def _sep_for(path: Path, first_line: str) -> str:
    suf = _suffix(path)
    if suf == ".csv":
        return ","
    if suf == ".tsv":
        return "\t"
    if "\t" in first_line:
        return "\t"
    if "," in first_line:
        return ","
    return r"\s+"


def _check_file(path: Path) -> None:
    if not path.exists():
        raise DataError("the file or folder does not exist", path, "Check the path and its spelling.")
    check_readable(path)
    if path.is_file() and path.stat().st_size == 0:
        raise DataError("the file is empty (0 bytes)", path, "The download or copy was probably interrupted; "
                        "get the file again.")


def _strip_names(adata: Any) -> None:
    obs = pd.Index([str(x).strip() for x in adata.obs_names])
    var = pd.Index([str(x).strip() for x in adata.var_names])
    if not obs.equals(adata.obs_names):
        adata.obs_names = obs
    if not var.equals(adata.var_names):
        adata.var_names = var


def _source(adata: Any, **info: Any) -> None:
    om = dict(adata.uns.get("omicslab", {}) or {})
    src = dict(om.get("source", {}) or {})
    src.update({k: v for k, v in info.items() if v is not None})
    om["source"] = src
    adata.uns["omicslab"] = om


def _note(adata: Any, text: str) -> None:
    om = dict(adata.uns.get("omicslab", {}) or {})
    src = dict(om.get("source", {}) or {})
    src["notes"] = [*list(src.get("notes", [])), text]
    om["source"] = src
    adata.uns["omicslab"] = om


def _finish_matrix(adata: Any, path: Path) -> None:
    """In-memory data: refuse NaN; store integer counts as CSR float32 in ``.X`` (the contract)."""
    X = adata.X
    if X is None and "counts" in adata.layers:
        return  # counts only in the layer: counts_matrix and the summary read them there
    if X is None:
        raise DataError("the file holds no expression matrix (X is empty)", path,
                        "Save the counts as the main matrix (adata.X) or in layers['counts'].")
    data = X.data if sp.issparse(X) else np.asarray(X)
    if data.dtype.kind == "f" and np.isinf(data).any():
        raise DataError(f"the matrix holds {int(np.isinf(data).sum()):,} infinite values", path,
                        "Expression values must be finite numbers; fix the values that overflowed.")
    if data.dtype.kind == "f" and np.isnan(data).any():
        if sp.issparse(X):
            coo = sp.coo_matrix(X)
            k = int(np.flatnonzero(np.isnan(coo.data))[0])
            r, c = int(coo.row[k]), int(coo.col[k])
        else:
            r, c = (int(v) for v in np.argwhere(np.isnan(data))[0])
        n = int(np.isnan(data).sum())
        raise DataError(f"the matrix has {n:,} missing (NaN) values, the first for cell "
                        f"'{adata.obs_names[r]}' and gene '{adata.var_names[c]}'", path,
                        "Replace missing values with 0 (not detected) or remove those cells/genes, then "
                        "read the file again.")
    is_csr32 = (sp.isspmatrix_csr(X) or isinstance(X, sp.csr_array)) and X.dtype == np.float32
    if not is_csr32 and looks_like_counts(X):
        adata.X = sp.csr_matrix(X, dtype=np.float32)


# --------------------------------------------------------------------------------------------------
# formats
# --------------------------------------------------------------------------------------------------
def _read_h5ad(path: Path, backed: bool) -> Any:
    import anndata as ad

    hint = "Check that the .h5ad file is complete and was written by anndata (or scanpy/Muon)."
    with _reading(path, ".h5ad file", hint):
        adata = ad.read_h5ad(path, backed="r") if backed else ad.read_h5ad(path)
    return adata


def _read_10x_h5(path: Path) -> Any:
    import scanpy as sc

    hint = ("A 10x .h5 file comes from Cell Ranger (filtered_feature_bc_matrix.h5). For an AnnData file use "
            "the .h5ad extension.")
    with _reading(path, "10x .h5 file", hint):
        adata = sc.read_10x_h5(path)
    return adata


def _read_loom(path: Path) -> Any:
    import anndata as ad

    hint = "Check that the .loom file is complete (loompy format with row attribute Gene and column CellID)."
    with _reading(path, ".loom file", hint):
        import h5py

        with h5py.File(path, "r") as f:
            rows = set(f["row_attrs"].keys()) if "row_attrs" in f else set()
            cols = set(f["col_attrs"].keys()) if "col_attrs" in f else set()
        var_key = next((k for k in ("Gene", "gene", "var_names", "Accession") if k in rows), None)
        obs_key = next((k for k in ("CellID", "cell_id", "obs_names", "Cell") if k in cols), None)
        kwargs: dict[str, Any] = {"sparse": True, "cleanup": False}
        if var_key:
            kwargs["var_names"] = var_key
        if obs_key:
            kwargs["obs_names"] = obs_key
        read_loom = getattr(getattr(ad, "io", None), "read_loom", None) or ad.read_loom  # anndata < 0.11
        adata = read_loom(path, **kwargs)
    return adata


def _find_mtx(folder: Path) -> tuple[Path, str]:
    found = sorted(p for p in folder.iterdir() if _MTX.match(p.name.lower()))
    if not found:
        raise DataError("this folder holds no matrix.mtx or matrix.mtx.gz", folder,
                        "Point to a 10x folder with matrix.mtx(.gz), barcodes.tsv(.gz) and genes.tsv or "
                        "features.tsv(.gz), or to a single file. " + FORMATS_HINT)
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise DataError(f"this folder holds several matrices ({names})", folder,
                        "Put each sample's matrix, barcodes and features files in its own folder.")
    m = _MTX.match(found[0].name.lower())
    assert m is not None
    return found[0], found[0].name[: len(m.group("prefix"))]


def _companion(folder: Path, prefix: str, stems: tuple[str, ...]) -> Path | None:
    for stem in stems:
        for ext in (".tsv.gz", ".tsv", ".txt.gz", ".txt", ".csv.gz", ".csv"):
            p = folder / f"{prefix}{stem}{ext}"
            if p.is_file():
                return p
    return None


def _read_mtx_folder(path: Path) -> Any:
    """10x MTX: scanpy.read_10x_mtx for the standard layouts, else scipy's mmread + pandas for the rest."""
    import anndata as ad
    import scanpy as sc
    from scipy.io import mmread

    folder = path if path.is_dir() else path.parent
    mtx, prefix = _find_mtx(folder)
    barcodes = _companion(folder, prefix, ("barcodes",))
    genes = _companion(folder, prefix, ("features", "genes"))
    for what, p in (("barcodes.tsv", barcodes), ("genes.tsv or features.tsv", genes)):
        if p is None:
            raise DataError(f"the 10x folder has {mtx.name} but no {what}", folder,
                            "Copy the missing file from the Cell Ranger output (same folder as the matrix).")
    assert barcodes is not None and genes is not None
    if mtx.stat().st_size == 0:
        raise DataError("the matrix file is empty (0 bytes)", mtx, "Copy the file again.")
    legacy = genes.name == f"{prefix}genes.tsv" and mtx.name == f"{prefix}matrix.mtx" \
        and barcodes.name == f"{prefix}barcodes.tsv"
    v3 = genes.name == f"{prefix}features.tsv.gz" and mtx.name == f"{prefix}matrix.mtx.gz" \
        and barcodes.name == f"{prefix}barcodes.tsv.gz"
    hint = ("Check that matrix, barcodes and genes/features files come from the same 10x run and are complete "
            "(the matrix header says genes x cells, matching the line counts of the other two files).")
    with _reading(mtx, "10x matrix folder", hint):
        feats = pd.read_csv(genes, sep="\t", header=None, dtype=str)
        if legacy or v3:
            adata = sc.read_10x_mtx(folder, var_names="gene_symbols", make_unique=False, prefix=prefix,
                                    gex_only=False)
        else:
            X = mmread(str(mtx))
            bcs = pd.read_csv(barcodes, sep="\t", header=None, dtype=str)
            if X.shape != (len(feats), len(bcs)):
                raise DataError(f"the matrix is {X.shape[0]:,} x {X.shape[1]:,} but there are {len(feats):,} "
                                f"genes and {len(bcs):,} barcodes", mtx, hint)
            adata = ad.AnnData(X=sp.csr_matrix(X.T, dtype=np.float32))
            sym = feats[1] if feats.shape[1] > 1 else feats[0]
            adata.var_names = pd.Index(sym.astype(str).values)
            adata.var["gene_ids"] = feats[0].values
            if feats.shape[1] > 2:
                adata.var["feature_types"] = feats[2].values
            adata.obs_names = pd.Index(bcs[0].astype(str).values)
    if "feature_types" in adata.var and (adata.var["feature_types"] != "Gene Expression").any():
        keep = (adata.var["feature_types"] == "Gene Expression").to_numpy()
        n_other = int((~keep).sum())
        adata = adata[:, keep].copy()
        _note(adata, f"kept gene-expression features only; dropped {n_other:,} other features "
                     "(antibody capture, CRISPR guides, ...)")
    if "gene_ids" in adata.var:
        adata.var["gene_ids"] = adata.var["gene_ids"].astype(str)
    return adata


def decide_orientation(row_names: pd.Index, col_names: pd.Index) -> tuple[str, str]:
    """Guess whether a text table is genes x cells or cells x genes; returns (orientation, reason)."""
    gr = gene_likeness(list(row_names[:5000]))
    gc = gene_likeness(list(col_names[:5000]))
    if gr - gc >= 0.2:
        return "genes_x_cells", "the row names look like genes and the column names like cell IDs"
    if gc - gr >= 0.2:
        return "cells_x_genes", "the column names look like genes and the row names like cell IDs"
    if len(row_names) >= len(col_names):
        return "genes_x_cells", ("guessed from the shape (more rows than columns, and a dataset usually has more "
                                 "genes than cells); choose cells x genes (--orientation cells_x_genes) if that "
                                 "is wrong")
    return "cells_x_genes", ("guessed from the shape (more columns than rows); choose genes x cells "
                             "(--orientation genes_x_cells) if that is wrong")


def _header_fields(path: Path, sep: str, encoding: str = "utf-8") -> list[str]:
    line = _first_line(path, encoding).rstrip("\r\n")
    if sep == r"\s+":
        return line.split()
    return next(csv.reader([line], delimiter=sep))


def _read_text(path: Path, orientation: str) -> tuple[Any, str, str]:
    import anndata as ad

    first = _first_line(path)
    if not first.strip():
        raise DataError("the first line of the table is empty", path,
                        "The first line must hold the column names (cell IDs or gene names).")
    sep = _sep_for(path, first)
    hint_shape = ("Save the matrix as one row per gene (or per cell) with the same number of fields on every "
                  "line: names in the first column, IDs in the header row.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            df, encoding = _read_csv_any(path, sep=sep, index_col=0, engine="c" if sep != r"\s+" else "python",
                                         compression="gzip" if _is_gzip(path) else None)  # by content, not name
    except pd.errors.EmptyDataError as exc:
        raise DataError("the table is empty", path, hint_shape) from exc
    except pd.errors.ParserError as exc:
        msg = str(exc).strip().splitlines()[-1]
        raise DataError(f"the rows have different numbers of fields ({msg})", path, hint_shape) from exc
    except (OSError, EOFError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"could not read the table ({str(exc)[:200]})", path,
                        "Check that the file is complete (a cut-off .gz cannot be read) and is plain text.") from exc
    if df.shape[0] == 0 or df.shape[1] == 0:
        raise DataError(f"the table has no data ({df.shape[0]} rows x {df.shape[1]} columns)", path, hint_shape)
    header = _header_fields(path, sep, encoding)
    # No row-name column (e.g. pandas' to_csv(index=False)): the first column holds numbers and the header
    # names it like a gene. Then it is data; the rows get names from their position.
    unnamed_rows = False
    corner = header[0].strip() if len(header) == df.shape[1] + 1 else ""
    if corner and corner.lower() not in _ID_HEADERS and \
            pd.to_numeric(pd.Series(df.index), errors="coerce").notna().all():
        df = df.reset_index()
        unnamed_rows = True
    # pandas renames duplicate header fields ("A" -> "A.1"); put the names back so duplicates get reported.
    if len(header) >= df.shape[1]:
        raw = [h.strip() for h in header[len(header) - df.shape[1]:]]
        if len(set(raw)) < len(raw):
            df.columns = pd.Index(raw)
    bad = [j for j, dt in enumerate(df.dtypes) if not pd.api.types.is_numeric_dtype(dt)]
    if bad:
        col = df.iloc[:, bad[0]]
        num = pd.to_numeric(col, errors="coerce")
        where = np.flatnonzero(num.isna().to_numpy() & col.notna().to_numpy())
        r = int(where[0]) if where.size else 0
        raise DataError(f"the matrix holds text where numbers are expected: {col.iloc[r]!r} in column "
                        f"'{df.columns[bad[0]]}', row '{df.index[r]}' ({len(bad):,} columns affected)", path,
                        "Only the first column (names) and the header row may hold text; remove annotation "
                        "rows/columns (put them in a separate labels table) and save again.")
    with np.errstate(over="ignore", invalid="ignore"):
        values = df.to_numpy(dtype=np.float32)
    if np.isinf(values).any():
        r, c = (int(v) for v in np.argwhere(np.isinf(values))[0])
        raise DataError(f"the matrix holds an infinite or too large value at row '{df.index[r]}', column "
                        f"'{df.columns[c]}' ({df.iloc[r, c]!r})", path,
                        "Expression values must be finite numbers; fix or remove that entry.")
    if np.isnan(values).any():
        r, c = (int(v) for v in np.argwhere(np.isnan(values))[0])
        raise DataError(f"the matrix has {int(np.isnan(values).sum()):,} empty or NA entries, the first at row "
                        f"'{df.index[r]}', column '{df.columns[c]}'", path,
                        "Fill missing values with 0 or remove those rows/columns, then save again.")
    rows = pd.Index([str(x).strip() for x in df.index])
    cols = pd.Index([str(x).strip() for x in df.columns])
    if unnamed_rows:
        if orientation == "genes_x_cells":
            raise DataError("the table has no gene names (its first column holds numbers)", path,
                            "Put the gene names in the first column, or choose cells x genes (--orientation "
                            "cells_x_genes) if the "
                            "rows are cells and the header holds the genes.")
        orientation, reason = "cells_x_genes", ("the table has no row names, so the header must hold the genes; "
                                                "the cells were named cell1, cell2, ... in file order")
        rows = pd.Index([f"cell{i + 1}" for i in range(len(rows))])
    elif orientation == "auto":
        orientation, reason = decide_orientation(rows, cols)
    else:
        reason = "set by the user"
    if orientation == "genes_x_cells":
        X, cells, genes = values.T, cols, rows
    else:
        X, cells, genes = values, rows, cols
    X = np.ascontiguousarray(X)
    adata = ad.AnnData(X=X, obs=pd.DataFrame(index=cells), var=pd.DataFrame(index=genes))
    if encoding != "utf-8":
        _note(adata, LATIN1_NOTE)
    return adata, orientation, reason


# --------------------------------------------------------------------------------------------------
# labels
# --------------------------------------------------------------------------------------------------
def read_labels_table(path: str | Path, cell_ids: pd.Index) -> tuple[pd.DataFrame, dict]:
    """Read a labels/annotation table and index it by cell ID.

    Accepted shapes: a header row with an ID column anywhere (``cell_id,cell_type``); R's write.csv style
    (header one field short, IDs in the first column); no header (``cell<TAB>label``; columns are then
    named ``label``, ``label_2``, ...). The ID column is the one sharing most values with ``cell_ids``; a table
    none of whose IDs names a cell is refused (never matched by row order, even with one row per cell).
    Returns (table indexed by cell ID, info dict).
    """
    path = Path(path)
    _check_file(path)
    if path.is_dir():
        raise DataError("the labels path is a folder", path, "Give the labels table file (CSV or TSV).")
    first = _first_line(path)
    sep = _sep_for(path, first)
    hint = "Give a CSV/TSV with one row per cell: a cell ID column and one or more label columns."
    cell_index = pd.Index(list(map(str, cell_ids)))  # hashed once; isin() against it is fast
    cells = set(cell_index)

    def read(header: int | None) -> pd.DataFrame:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return _read_csv_any(path, sep=sep, header=header, dtype=str, keep_default_na=False,
                                     engine="c" if sep != r"\s+" else "python",
                                     compression="gzip" if _is_gzip(path) else None)[0]
        except pd.errors.EmptyDataError as exc:
            raise DataError("the labels table is empty", path, hint) from exc
        except pd.errors.ParserError as exc:
            raise DataError(f"the labels table has rows of different lengths "
                            f"({str(exc).strip().splitlines()[-1]})", path, hint) from exc
        except (OSError, EOFError, ValueError) as exc:
            raise DataError(f"could not read the labels table ({str(exc)[:200]})", path, hint) from exc

    t = read(0)
    if isinstance(t.index, pd.MultiIndex):
        raise DataError("the header row has fewer fields than the rows below it", path,
                        hint + " Every line needs the same number of fields.")
    header_fields = [str(c).strip() for c in t.columns]
    if not isinstance(t.index, pd.RangeIndex):
        header_fields.append(str(t.index.name or "").strip())
    # a header field that is a cell ID (also with/without a 10x '-1' suffix) means there is no header
    headerless = any(f in cells or f"{f}-1" in cells or _norm_cell_id(f) in cells for f in header_fields if f)
    if headerless:
        t = read(None)
        names = ["label" if k == 0 else f"label_{k + 1}" for k in range(t.shape[1])]
        t.columns = pd.Index(names)
    # candidate ID columns: an implicit index (R style), then every column
    candidates: list[tuple[str | None, pd.Series]] = []
    if not isinstance(t.index, pd.RangeIndex):
        candidates.append((None, pd.Series(t.index.astype(str), index=t.index)))
    candidates += [(str(c), t[c].astype(str)) for c in t.columns]
    overlaps = [(_overlap(sr, cell_index), j) for j, (_, sr) in enumerate(candidates)]
    best, k = max(overlaps, key=lambda x: (x[0], -x[1])) if overlaps else (0, -1)
    if best == 0 and candidates:  # IDs with stray whitespace: strip (slow on big tables, so only now)
        candidates = [(c, sr.str.strip()) for c, sr in candidates]
        overlaps = [(_overlap(sr, cell_index), j) for j, (_, sr) in enumerate(candidates)]
        best, k = max(overlaps, key=lambda x: (x[0], -x[1]))
    info: dict[str, Any] = {"path": str(path), "suffix_stripped": False}
    translate: dict[str, str] = {}
    if best == 0 and candidates:
        # 10x barcodes often differ only by a '-1' suffix (or a sample prefix 'S1_' is absent on one side)
        norm_data: dict[str, str] = {}
        for c in map(str, cell_ids):
            norm_data.setdefault(_norm_cell_id(c), c)
        if len(norm_data) == len(cell_ids):
            norm_index = pd.Index(list(norm_data))
            n_overlaps = [(_overlap(sr, norm_index, _norm_cell_id), j) for j, (_, sr) in enumerate(candidates)]
            nbest, nk = max(n_overlaps, key=lambda x: (x[0], -x[1]))
            if nbest > 0:
                best, k, translate = nbest, nk, norm_data
                info["suffix_stripped"] = True
    if t.shape[0] == 0:
        raise DataError("the labels table has a header but no rows", path, hint)
    if best == 0:
        # never by row order: a table whose IDs match nothing (even with the same row count) is refused,
        # else shuffled labels would train a model in silence
        name, sr = candidates[0] if candidates else (None, pd.Series([], dtype=str))
        where = f"column '{name}'" if name else "first column"
        ex_t = ", ".join(sr.head(3).tolist())
        ex_d = ", ".join(list(map(str, cell_ids[:3])))
        raise DataError(f"none of the {len(t):,} rows of the labels table names a cell of the data: labels are "
                        f"joined by cell ID only (table, {where}: {ex_t}; data cell IDs: {ex_d})", path,
                        "Use a table with a column holding the matrix's cell IDs (same spelling; a barcode suffix "
                        "such as '-1' may differ). A list of labels in the matrix's cell order needs the cell "
                        "IDs added as its first column.")
    col, ids = candidates[k]
    ids = ids.str.strip()
    if translate:
        ids = ids.map(lambda x: translate.get(_norm_cell_id(x), x))
    table = t.drop(columns=[col]) if col is not None else t.copy()
    if col is not None and headerless:
        table.columns = pd.Index(["label" if j == 0 else f"label_{j + 1}" for j in range(table.shape[1])])
    table.index = pd.Index(ids.to_numpy())
    dup = table.index[table.index.duplicated()]
    if len(dup):
        raise DataError(f"{len(dup):,} cell IDs appear more than once in the labels table "
                        f"(e.g. {', '.join(map(str, dup[:3]))})", path,
                        "Keep one row per cell.")
    info["id_column"] = col if col is not None else "(row names)"
    table.columns = pd.Index([str(c).strip() or f"column_{j + 1}" for j, c in enumerate(table.columns)])
    in_data = _in(table.index, cell_index)
    missing = list(cell_index[~_in(cell_index, table.index)])
    info.update(
        n_rows=len(table),
        n_cells_without_label=len(missing),
        n_labels_without_cell=int((~in_data).sum()),
        examples_without_label=missing[:5],
        examples_without_cell=list(map(str, table.index[~in_data][:5])),
        columns=list(table.columns),
    )
    return table, info


_BARCODE_SUFFIX = re.compile(r"-\d+$")


def _in(values: Any, ids: pd.Index) -> np.ndarray:
    """Boolean mask: which ``values`` are in ``ids``. Uses the index's cached hash table when the IDs are
    unique (``isin`` would re-hash a million IDs on every call)."""
    if ids.is_unique:
        return ids.get_indexer(pd.Index(values)) >= 0
    return np.asarray(pd.Index(values).isin(ids))


def _overlap(sr: pd.Series, ids: pd.Index, norm: Any = None) -> int:
    """How many values of ``sr`` (optionally mapped by ``norm``) are in ``ids``."""
    vals = sr.map(norm) if norm is not None else sr
    return int(_in(vals, ids).sum())


def _norm_cell_id(x: str) -> str:
    """A cell ID without a 10x GEM-well suffix ('AAAC...-1' -> 'AAAC...')."""
    return _BARCODE_SUFFIX.sub("", x.strip())


def _typed(col: pd.Series) -> pd.Series:
    """Numbers stay numbers; text becomes categorical (labels); "" and NA become missing."""
    col = col.mask(col.isin(["", "NA", "NaN", "nan"]))
    sample = col.dropna().iloc[:1000]
    if len(sample) and pd.to_numeric(sample, errors="coerce").isna().any():
        return col.astype("category")  # text: skip the full (slow) numeric parse
    num = pd.to_numeric(col, errors="coerce")
    if col.notna().sum() and num.notna().sum() == col.notna().sum():
        return num
    return col.astype("category")


def join_labels(adata: Any, labels: str | Path, label_key: str | None = None) -> Any:
    """Join a labels table (see ``read_labels_table``) into ``adata.obs`` by cell ID; report in ``uns``.

    Columns clashing with existing ``obs`` columns get the suffix ``_labels`` (``.obs`` is never overwritten),
    and ``label_key`` then names the table's column: the table always wins over ``.obs``, and the report
    (``uns['omicslab']['labels']``: ``label_key``, ``label_source``, ``renamed``) says so. Cells with no row
    keep NaN.
    """
    table, info = read_labels_table(labels, adata.obs_names)
    if label_key is not None and label_key not in table.columns:
        raise DataError(f"the labels table has no column '{label_key}' (it has: {', '.join(table.columns)})",
                        labels, "Pick one of those columns as the label column.")
    aligned = table.reindex(pd.Index(list(map(str, adata.obs_names))))
    aligned.index = adata.obs.index
    new_cols = []
    renamed: dict[str, str] = {}
    for c in aligned.columns:
        name = c if c not in adata.obs.columns else f"{c}_labels"  # never overwrite existing annotations
        if name != c:
            renamed[c] = name
        adata.obs[name] = _typed(aligned[c])
        new_cols.append(name)
        if label_key == c:
            label_key = name
    if info["n_rows"] and info["n_cells_without_label"] == len(adata.obs_names):
        raise DataError("no cell of the data has a row in the labels table", labels,
                        "Check that the table's IDs match the matrix's cell IDs.")
    if label_key is None and len(table.columns) == 1:
        label_key = new_cols[0]
    info["label_key"] = label_key
    info["label_source"] = "labels table" if label_key in new_cols else None
    info["renamed"] = renamed
    info["columns"] = list(new_cols)
    om = dict(adata.uns.get("omicslab", {}) or {})
    om["labels"] = info
    adata.uns["omicslab"] = om
    return adata


# --------------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------------
def read_singlecell(path: str | Path, *, orientation: str = "auto", labels: str | Path | None = None,
                    label_key: str | None = None, backed: bool = False) -> Any:
    """Read single-cell expression data into an AnnData of cells x genes (see ``_read_singlecell``).

    Any failure is a ``DataError``: an unexpected library error on odd input is wrapped, naming the file.
    """
    try:
        return _read_singlecell(path, orientation=orientation, labels=labels, label_key=label_key, backed=backed)
    except (DataError, KeyboardInterrupt, MemoryError):
        raise
    except Exception as exc:  # a parser corner case we did not foresee: still one clear message
        raise DataError(f"could not make sense of this file ({type(exc).__name__}: {str(exc)[:200]})",
                        labels if labels is not None and "label" in str(exc).lower() else path,
                        "Check the file's layout: one header row, names in the first column, the same number "
                        "of fields on every line. Please report this message if the file looks right.") from exc


def _read_singlecell(path: str | Path, *, orientation: str = "auto", labels: str | Path | None = None,
                     label_key: str | None = None, backed: bool = False) -> Any:
    """Read single-cell expression data into an AnnData of cells x genes.

    Args:
        path: .h5ad, .h5 (10x), .loom, a 10x MTX folder (or its matrix.mtx file), or a CSV/TSV(.gz) table.
        orientation: text tables only: "auto" (detect from the names, then the shape), "genes_x_cells" or
            "cells_x_genes".
        labels: optional CSV/TSV table joined into ``.obs`` by cell ID (see ``read_labels_table``).
        label_key: the label column (checked to exist in the labels table, or in ``.obs`` of an .h5ad).
        backed: .h5ad only: open read-only from disk without loading X (for files larger than memory).
    Returns:
        AnnData: ``var_names`` = gene IDs as given (stripped), ``obs_names`` = cell IDs; integer counts in
        ``.X`` as CSR float32 (in-memory reads). Raises ``DataError`` for every bad input.
    """
    if orientation not in ORIENTATIONS:
        raise DataError(f"unknown orientation '{orientation}'", path, f"Use one of: {', '.join(ORIENTATIONS)}.")
    path = Path(path).expanduser()
    _check_file(path)
    fmt = format_of(path)
    if backed and fmt != "h5ad":
        raise DataError("only .h5ad files can be opened backed (from disk)", path,
                        "Convert the data to .h5ad first (python -m app inspect shows it; scanpy can write it), "
                        "or read it without backed mode.")
    reason = None
    if fmt in ("h5ad", "10x_h5", "loom"):
        _check_hdf5(path, {"h5ad": ".h5ad", "10x_h5": ".h5", "loom": ".loom"}[fmt])
    if fmt == "h5ad":
        adata = _read_h5ad(path, backed)
    elif fmt == "10x_h5":
        adata = _read_10x_h5(path)
    elif fmt == "loom":
        adata = _read_loom(path)
    elif fmt == "mtx":
        adata = _read_mtx_folder(path)
    else:
        adata, orientation, reason = _read_text(path, orientation)
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise DataError(f"the data has {adata.n_obs} cells and {adata.n_vars} genes", path,
                        "The file holds no expression values; check that it is the right file.")
    _strip_names(adata)
    if not getattr(adata, "isbacked", False):
        _finish_matrix(adata, path)
    _source(adata, path=str(path), format=fmt, orientation=orientation if fmt == "text" else None,
            orientation_reason=reason, backed=bool(backed))
    if label_key is not None and labels is None and label_key not in adata.obs.columns:
        raise DataError(f"there is no cell annotation column '{label_key}' (found: "
                        f"{', '.join(map(str, adata.obs.columns)) or 'none'})", path,
                        "Pick one of those columns, or pass a labels table.")
    if labels is not None:
        join_labels(adata, labels, label_key)
    elif label_key is not None:
        om = dict(adata.uns.get("omicslab", {}) or {})
        om["labels"] = {"path": str(path), "label_key": label_key, "columns": [label_key]}
        adata.uns["omicslab"] = om
    return adata
