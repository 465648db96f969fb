"""Labels tables added in the window (Qt-free part): the join report, small classes, the table the job reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app.data.errors import DataError
from app.data.singlecell import read_singlecell
from app.ui import cell_labels


def _obs(n: int = 10) -> pd.DataFrame:
    return pd.DataFrame(index=pd.Index([f"c{i}" for i in range(n)]))


def test_join_report_names_matched_unmatched_and_the_id_column(tmp_path: Path) -> None:
    t = tmp_path / "labels.tsv"  # IDs in the second column, two label columns, one unknown cell, two missing
    rows = ["sample\tcell\ttype\tbatch"] + [f"s\tc{i}\t{'AB'[i % 2]}\tb{i % 3}" for i in range(8)] + ["s\tzz\tA\tb0"]
    t.write_text("\n".join(rows) + "\n")
    j = cell_labels.join_table(_obs(), t)
    assert j.columns == ["sample", "type", "batch"] and j.label_key == "type"
    assert j.obs["type"].astype(str).tolist()[:8] == list("ABABABAB") and j.obs["type"].isna().sum() == 2
    text = j.report()
    assert "8 of 10 cells matched" in text and "'cell'" in text
    assert "2 cells have no row (e.g. c8, c9)" in text and "1 rows name no cell" in text and "zz" in text


def test_join_refuses_duplicated_ids_and_tables_naming_no_cell(tmp_path: Path) -> None:
    dup = tmp_path / "dup.csv"
    dup.write_text("cell,type\nc1,A\nc1,B\nc2,A\n")
    with pytest.raises(DataError, match="more than once"):
        cell_labels.join_table(_obs(), dup)
    other = tmp_path / "other.csv"
    other.write_text("cell,type\nx1,A\nx2,B\nx3,A\n")
    with pytest.raises(DataError):
        cell_labels.join_table(_obs(), other)


def test_small_classes_drop_or_merge() -> None:
    vals = ["A"] * 5 + ["B"] * 4 + ["C"] * 2 + ["D"] + [np.nan]
    assert cell_labels.small_classes(vals) == {"D": 1, "C": 2}
    dropped = cell_labels.fix_small_classes(vals, "drop")
    assert dropped.isna().sum() == 4 and set(dropped.dropna()) == {"A", "B"}
    merged = cell_labels.fix_small_classes(vals, "merge")
    assert (merged == "other").sum() == 3 and merged.isna().sum() == 1
    assert cell_labels.small_classes(merged) == {}
    # merged classes still too small together are dropped too
    assert cell_labels.fix_small_classes(["A"] * 4 + ["B"], "merge").isna().sum() == 1


@pytest.mark.shared_data
def test_written_labels_are_what_the_job_joins(shared_data: Path, tmp_path: Path) -> None:
    d = shared_data / "singlecell" / "cellbench_lung_3cl"
    a = read_singlecell(d / "sc_dropseq.count.csv.gz")
    j = cell_labels.join_table(a.obs, d / "sc_dropseq.metadata.csv.gz")  # R write.csv: header one field short
    assert "cell_line_demuxlet" in j.columns and j.info["n_cells_without_label"] == 0
    vals = j.obs["cell_line_demuxlet"].astype(object).to_numpy()
    vals[:3] = np.nan
    path = cell_labels.write_labels(a.obs_names, vals, "cell_line_demuxlet", tmp_path / "l.csv")
    b = read_singlecell(d / "sc_dropseq.count.csv.gz", labels=path, label_key="cell_line_demuxlet")
    got = b.obs["cell_line_demuxlet"]
    assert got.isna().sum() == 3 and got.astype(str).tolist()[3:] == [str(v) for v in vals[3:]]
