"""Every bad single-cell input gives one DataError naming the file, what is wrong and what to do."""

from __future__ import annotations

import contextlib
import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sc_helpers import GENES, cell_ids, counts, write_dense, write_mtx

from app.data.errors import DataError
from app.data.singlecell import read_singlecell
from app.data.sniff import detect_kind


def _err(path: Path, match: str, **kw) -> DataError:
    with pytest.raises(DataError, match=match) as ei:
        read_singlecell(path, **kw)
    err = ei.value
    assert err.path is not None and Path(err.path).name in str(err)  # names the file
    assert err.hint  # says what to do
    return err


def test_missing_file(tmp_path: Path) -> None:
    _err(tmp_path / "nope.h5ad", "does not exist")


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "e.csv").write_bytes(b"")
    _err(tmp_path / "e.csv", "empty")


def test_header_only(tmp_path: Path) -> None:
    (tmp_path / "h.csv").write_text(",c1,c2\n")
    _err(tmp_path / "h.csv", "no data")


def test_unknown_extension(tmp_path: Path) -> None:
    (tmp_path / "data.xlsx").write_bytes(b"PK\x03\x04")
    err = _err(tmp_path / "data.xlsx", "unknown single-cell file type")
    assert ".h5ad" in err.hint


def test_ragged_csv(tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_text(",c1,c2\nCD3E,1,2\nLYZ,1,2,3\n")
    _err(tmp_path / "r.csv", "different numbers of fields")


def test_non_numeric_entry_is_located(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text(",c1,c2\nCD3E,1,2\nLYZ,1,high\n")
    err = _err(tmp_path / "t.csv", "text where numbers are expected")
    assert "'high'" in str(err) and "c2" in str(err) and "LYZ" in str(err)


def test_nan_entry(tmp_path: Path) -> None:
    (tmp_path / "n.tsv").write_text("\tc1\tc2\nCD3E\t1\tNA\nLYZ\t1\t2\n")
    _err(tmp_path / "n.tsv", "NA entries")


def test_nan_in_h5ad(tmp_path: Path) -> None:
    import anndata as ad

    X = counts()
    X[2, 3] = np.nan
    ad.AnnData(X=X, var=pd.DataFrame(index=GENES)).write_h5ad(tmp_path / "n.h5ad")
    _err(tmp_path / "n.h5ad", "missing \\(NaN\\)")


def test_labels_without_overlap(tmp_path: Path) -> None:
    X, cells = counts(), cell_ids(6)
    p = write_dense(tmp_path / "c.csv", X, GENES, cells, genes_x_cells=False)
    (tmp_path / "lab.csv").write_text("cell,type\nx1,T\nx2,B\nx3,T\n")
    with pytest.raises(DataError, match="none of the 3 rows") as ei:
        read_singlecell(p, labels=tmp_path / "lab.csv")
    assert ei.value.path.endswith("lab.csv") and "holding the matrix's cell IDs" in ei.value.hint


def test_labels_duplicate_ids(tmp_path: Path) -> None:
    X, cells = counts(), cell_ids(6)
    p = write_dense(tmp_path / "c.csv", X, GENES, cells, genes_x_cells=False)
    (tmp_path / "lab.csv").write_text(f"cell,type\n{cells[0]},T\n{cells[0]},B\n{cells[1]},T\n")
    with pytest.raises(DataError, match="more than once"):
        read_singlecell(p, labels=tmp_path / "lab.csv")


def test_labels_missing_file_and_label_key_in_h5ad(tmp_path: Path) -> None:
    import anndata as ad

    X = counts()
    p = write_dense(tmp_path / "c.csv", X, GENES, cell_ids(6), genes_x_cells=False)
    with pytest.raises(DataError, match="does not exist"):
        read_singlecell(p, labels=tmp_path / "nolabels.csv")
    ad.AnnData(X=X, obs=pd.DataFrame({"t": list("aabbcc")}, index=[f"c{i}" for i in range(6)]),
               var=pd.DataFrame(index=GENES)).write_h5ad(tmp_path / "a.h5ad")
    with pytest.raises(DataError, match=r"no cell annotation column 'cell_type'.*found: t"):
        read_singlecell(tmp_path / "a.h5ad", label_key="cell_type")


def test_mtx_folder_problems(tmp_path: Path) -> None:
    X, cells = counts(), cell_ids(6)
    folder = write_mtx(tmp_path / "tenx", X, GENES, cells, v3=False, gz=False)
    (folder / "barcodes.tsv").write_text("\n".join(cells[:4]) + "\n")  # 4 barcodes for 6 cells
    _err(folder / "matrix.mtx", "could not read this 10x matrix folder")
    (folder / "barcodes.tsv").unlink()
    _err(folder, "no barcodes")
    (tmp_path / "empty").mkdir()
    _err(tmp_path / "empty", "no matrix.mtx")
    (tmp_path / "lone.mtx").write_text("%%MatrixMarket matrix coordinate integer general\n1 1 1\n1 1 1\n")
    _err(tmp_path / "lone.mtx", "lone Matrix Market")


def test_truncated_gzip(tmp_path: Path) -> None:
    X, cells = counts(40, 8), [f"c{i}" for i in range(40)]
    full = write_dense(tmp_path / "f.csv.gz", X, GENES, cells, genes_x_cells=True).read_bytes()
    (tmp_path / "cut.csv.gz").write_bytes(full[: len(full) // 2])
    _err(tmp_path / "cut.csv.gz", "could not read")


def test_truncated_h5ad(tmp_path: Path) -> None:
    import anndata as ad

    ad.AnnData(X=counts(30, 8), var=pd.DataFrame(index=GENES)).write_h5ad(tmp_path / "f.h5ad")
    data = (tmp_path / "f.h5ad").read_bytes()
    (tmp_path / "cut.h5ad").write_bytes(data[: len(data) // 3])
    _err(tmp_path / "cut.h5ad", "could not read this .h5ad")


def test_backed_only_for_h5ad(tmp_path: Path) -> None:
    p = write_dense(tmp_path / "c.csv", counts(), GENES, cell_ids(6), genes_x_cells=False)
    _err(p, "only .h5ad files can be opened backed", backed=True)


SUFFIXES = ["x.h5ad", "x.h5", "x.loom", "x.csv", "x.tsv.gz", "x.txt", "x.csv.gz"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=1, max_size=600), name=st.sampled_from(SUFFIXES), gz=st.booleans())
def test_random_bytes_raise_only_dataerror(tmp_path: Path, data: bytes, name: str, gz: bool) -> None:
    p = tmp_path / name
    p.write_bytes(gzip.compress(data) if gz and name.endswith(".gz") else data)
    for fn in (read_singlecell, detect_kind):
        with contextlib.suppress(DataError):
            fn(p)


@pytest.mark.shared_data
@pytest.mark.parametrize("rel", ["pbmc8k_hvg200_h5ad/pbmc.h5ad", "mouse_immune_actinn/train_set.csv.gz",
                                 "crc_tumor_normal_10x/counts.small.matrix.gz"])
@pytest.mark.parametrize("frac", [0.01, 0.5])
def test_truncated_real_files(shared_data: Path, tmp_path: Path, rel: str, frac: float) -> None:
    src = shared_data / "singlecell" / rel
    data = src.read_bytes()
    p = tmp_path / src.name
    p.write_bytes(data[: int(len(data) * frac)])
    with pytest.raises(DataError):
        read_singlecell(p)


def test_format_not_matching_extension(tmp_path: Path) -> None:
    p = write_dense(tmp_path / "c.csv", counts(), GENES, cell_ids(6), genes_x_cells=False)
    (tmp_path / "really_csv.h5ad").write_bytes(p.read_bytes())
    err = _err(tmp_path / "really_csv.h5ad", r"not a valid \.h5ad file \(those are HDF5\): it is a text file")
    assert "real extension" in err.hint
    (tmp_path / "gz.loom").write_bytes(gzip.compress(p.read_bytes()))
    _err(tmp_path / "gz.loom", "gzip-compressed")
    # the reverse: gzip content under a plain .csv name is read by content
    (tmp_path / "plain_name.csv").write_bytes(gzip.compress(p.read_bytes()))
    assert read_singlecell(tmp_path / "plain_name.csv").shape == (6, len(GENES))


FIELD = st.one_of(st.integers(-3, 50).map(str), st.floats(allow_nan=True, allow_infinity=True).map(str),
                  st.sampled_from(["", "NA", "CD3E", "Cd3e", "ENSG00000111640.2", '"q,uoted"', "x y", "#"]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.lists(FIELD, min_size=1, max_size=6), min_size=1, max_size=8),
       sep=st.sampled_from([",", "\t", " "]), name=st.sampled_from(["t.csv", "t.tsv", "t.txt"]),
       labels=st.booleans())
def test_random_tables_raise_only_dataerror(tmp_path: Path, rows: list[list[str]], sep: str, name: str,
                                            labels: bool) -> None:
    p = tmp_path / name
    p.write_text("\n".join(sep.join(r) for r in rows) + "\n")
    good = write_dense(tmp_path / "good.csv", counts(), GENES, cell_ids(6), genes_x_cells=False)
    try:
        a = read_singlecell(good, labels=p) if labels else read_singlecell(p)
    except DataError as err:
        assert err.path and err.hint
    else:
        assert a.n_obs > 0 and a.n_vars > 0
    with contextlib.suppress(DataError):
        detect_kind(p)


def test_infinite_value(tmp_path: Path) -> None:
    (tmp_path / "inf.csv").write_text(",c1,c2\nCD3E,1,1e300\nLYZ,1,2\n")
    err = _err(tmp_path / "inf.csv", "infinite or too large")
    assert "CD3E" in str(err) and "c2" in str(err)
