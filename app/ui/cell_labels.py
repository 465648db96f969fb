"""A cell-labels table added in the window (no Qt): joined by cell ID exactly as ``--labels`` does.

``join_table`` runs in a worker thread: it reads the table with ``app.data.singlecell.join_labels`` (the one
join the CLI uses) into a copy of the cells' ``obs`` and returns a ``LabelsJoin`` (the new columns and the
join report: matched, unmatched with examples, the ID column). ``small_classes`` names the classes too small
to split (fewer than 3 cells); ``fix_small_classes`` drops or merges them into "other". ``write_labels``
writes the chosen column (after such fixes) as the labels table the fine-tune job joins, so the job learns
exactly what the window shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

MIN_CLASS_CELLS = 3
"""A class needs a cell in each of train, validation and test."""
OTHER = "other"


@dataclass
class LabelsJoin:
    """The result of joining a labels table to the open cells."""

    path: str
    obs: pd.DataFrame  # the cells' obs with the table's columns added (index = obs_names)
    columns: list[str]  # the columns the table added
    label_key: str | None  # the likeliest label column among them
    info: dict[str, Any] = field(default_factory=dict)  # read_labels_table's report

    def report(self) -> str:
        """Plain sentences: how many cells matched, which did not (examples), the ID column."""
        i = self.info
        n = len(self.obs)
        missing = int(i.get("n_cells_without_label", 0))
        lines = [f"{n - missing:,} of {n:,} cells matched a row of {Path(self.path).name}"
                 + _id_words(i.get("id_column")) + "."]
        if missing:
            ex = ', '.join(map(str, i.get('examples_without_label', [])))
            lines.append(f"{missing:,} cells have no row (e.g. {ex});"
                         " they stay unlabelled and are not used for training.")
        extra = int(i.get("n_labels_without_cell", 0))
        if extra:
            lines.append(f"{extra:,} rows name no cell of the data (e.g. "
                         f"{', '.join(map(str, i.get('examples_without_cell', [])))}); they are ignored.")
        if i.get("suffix_stripped"):
            lines.append("IDs were matched without their 10x '-1' suffix.")
        lines.append("No cell ID appears twice in the table.")  # duplicates are refused by the join itself
        lines.append(f"Columns added: {', '.join(self.columns)}.")
        return "\n".join(lines)


def _id_words(col: str | None) -> str:
    if not col:
        return " (matched by row order: the table has no ID column)"
    if col == "(row names)":
        return " (IDs in its unnamed first column)"
    return f" (IDs in column '{col}')"


def join_table(obs: pd.DataFrame, path: str | Path) -> LabelsJoin:
    """Join the labels table at ``path`` to cells with this ``obs`` (not modified). Raises ``DataError`` with
    what, where and what to do (no row names a cell, duplicated IDs, unreadable table)."""
    import anndata as ad

    from app.data.singlecell import join_labels
    from app.ui.state import pick_label_column

    holder = ad.AnnData(obs=obs.copy())
    join_labels(holder, str(path))
    info = dict((holder.uns.get("omicslab") or {}).get("labels") or {})
    cols = list(info.get("columns", []))
    text_cols = [c for c in cols if not pd.api.types.is_numeric_dtype(holder.obs[c])]
    key = info.get("label_key") or pick_label_column(text_cols) or (cols[0] if cols else None)
    return LabelsJoin(str(path), holder.obs, cols, key, info)


def small_classes(values: Any, min_cells: int = MIN_CLASS_CELLS) -> dict[str, int]:
    """Classes with fewer than ``min_cells`` labelled cells (class -> cells), smallest first."""
    s = pd.Series(np.asarray(values, dtype=object)).dropna().astype(str)
    counts = s[s.str.strip() != ""].value_counts()
    small = counts[counts < min_cells].sort_values()
    return {str(k): int(v) for k, v in small.items()}


def fix_small_classes(values: Any, how: str, min_cells: int = MIN_CLASS_CELLS) -> pd.Series:
    """``how="drop"``: the small classes' cells lose their label; ``how="merge"``: they become "other"
    (which is itself dropped if still too small). Returns the new labels (object, NaN = unlabelled)."""
    if how not in ("drop", "merge"):
        raise ValueError(f"how must be 'drop' or 'merge', not {how!r}")
    s = pd.Series(np.asarray(values, dtype=object))
    small = small_classes(s, min_cells)
    hit = s.astype(str).isin(list(small)) & s.notna()
    s = s.where(~hit, np.nan if how == "drop" else OTHER)
    if how == "merge" and 0 < int((s == OTHER).sum()) < min_cells:
        s = s.where(s != OTHER, np.nan)
    return s


def write_labels(obs_names: Any, values: Any, label_key: str, path: str | Path) -> Path:
    """The labels table the job joins: cell ID, ``label_key`` (unlabelled cells left empty), atomically."""
    from app.data.export import write_csv_atomic

    df = pd.DataFrame({label_key: pd.Series(np.asarray(values, dtype=object)).where(
        pd.notna(values), "").to_numpy()}, index=pd.Index(list(map(str, obs_names)), name="cell"))
    return write_csv_atomic(df, path)


__all__ = ["MIN_CLASS_CELLS", "OTHER", "LabelsJoin", "fix_small_classes", "join_table", "small_classes",
           "write_labels"]
