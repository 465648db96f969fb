"""Phenotype tables and the genotype <-> phenotype join.

``read_phenotypes`` reads CSV/TSV/whitespace tables, TASSEL ``<Trait>`` / ``<Phenotype>`` / ``<Covariate>``
files and the PLINK .fam phenotype column into one DataFrame indexed by sample ID (str). Numeric traits are
float64 with NaN for missing (NA, NaN, empty, ".", -9, -999); non-numeric columns are kept (usable as
groups). Notes on what was done are in ``df.attrs["notes"]``.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from app.data.errors import DataError, check_readable
from app.data.genotype.readers import _read_text, _sniff_sep
from app.data.genotype.types import GenotypeMatrix

PHENO_NA = ["", "NA", "N/A", "NaN", "nan", "na", ".", "-9", "-999", "-999.0", "-9.0", "NULL", "null", "?"]
_ID_NAMES = (
    "id",
    "iid",
    "taxa",
    "taxon",
    "sample",
    "sample_id",
    "sampleid",
    "line",
    "genotype",
    "accession",
    "name",
    "gid",
    "entry",
    "individual",
    "ind",
)


def _as_id(v: object) -> str:
    """An ID as text: integral floats lose their '.0' (1.0 -> '1'), whitespace stripped."""
    if isinstance(v, float):
        if np.isnan(v):
            return ""
        if v.is_integer():
            return str(int(v))
    return str(v).strip()


def read_phenotypes(path: str | Path, id_column: str | None = None) -> pd.DataFrame:
    """Read a phenotype table into a DataFrame indexed by sample ID (str).

    Args:
        path: CSV/TSV/whitespace table (header optional), TASSEL ``<Trait>``/``<Phenotype>`` file, or a
            PLINK ``.fam`` (gives columns ``FID`` and ``fam_pheno``, -9 = missing).
        id_column: the column holding sample IDs; default: a column named like id/taxa/sample/IID, else
            the first column when it is not numeric, else row numbers become IDs "S1".. (matching the
            IDs :func:`read_genotypes` makes for ID-less matrices).

    Headerless tables get trait names from a README beside the file when it names the columns
    (e.g. "1 = E1, 2 = E2, ..."), else "trait1"... A TASSEL ``<Phenotype>`` file with a factor column
    (e.g. location) is spread to one column per trait and level ("EarHT_A", ...).

    Raises:
        DataError: empty file, unknown ``id_column``, duplicated IDs, no trait columns.
    """
    p = Path(path)
    if not p.exists():
        raise DataError("phenotype file not found", p, "check the path")
    if p.is_dir():
        raise DataError("is a folder, not a phenotype table", p, "give the file itself")
    check_readable(p)
    text = _read_text(p)
    if not text.strip():
        raise DataError("the phenotype file is empty", p, "give a table with one row per sample")
    if p.suffix.lower() == ".fam":
        df = _read_fam(p, text)
    elif text.lstrip().startswith("<"):
        df = _read_tassel(p, text)
    else:
        df = _read_table(p, text, id_column)
    return _finish(df, p, id_column if p.suffix.lower() != ".fam" else None)


def _read_fam(p: Path, text: str) -> pd.DataFrame:
    try:
        fam = pd.read_csv(io.StringIO(text), sep=r"\s+", header=None, dtype=str)
    except Exception as exc:
        raise DataError(f"cannot parse the .fam ({exc})", p, "a .fam has 6 whitespace-separated columns") from None
    if fam.shape[1] != 6:
        raise DataError(f"a .fam needs 6 columns, found {fam.shape[1]}", p, "regenerate the PLINK fileset")
    iids = fam[1].str.strip()
    if iids.duplicated().any():
        iids = fam[0].str.strip() + "_" + iids  # same rule as read_plink
    pheno = pd.to_numeric(fam[5], errors="coerce").replace(-9.0, np.nan)
    df = pd.DataFrame({"FID": fam[0].str.strip().to_numpy(), "fam_pheno": pheno.to_numpy()}, index=iids.to_numpy())
    df.attrs["notes"] = ["PLINK .fam: column 6 read as 'fam_pheno' (-9 = missing); FID kept as a group column"]
    if df["fam_pheno"].isna().all():
        df.attrs["notes"].append("the .fam holds no phenotype (all -9)")
    return df


def _read_tassel(p: Path, text: str) -> pd.DataFrame:
    """TASSEL v4/v5 phenotype files: <Trait>, <Covariate>, <Phenotype>."""
    lines = [ln for ln in text.split("\n") if ln.strip()]
    tag = lines[0].split()[0]
    notes = [f"TASSEL {tag} file"]
    if tag == "<Phenotype>":
        if len(lines) < 3:
            raise DataError("<Phenotype> file needs a type row and a header row", p, "check the TASSEL format")
        kinds = lines[1].split()
        header = lines[2].split()
        body = lines[3:]
        if len(kinds) != len(header):
            raise DataError("the type row and the header row differ in length", p, "check the TASSEL format")
        df = _parse_block(p, header, body)
        idc = header[kinds.index("taxa")] if "taxa" in kinds else header[0]
        factors = [h for h, k in zip(header, kinds, strict=True) if k == "factor"]
        df = df.rename(columns={idc: "__id__"})
        if factors and df["__id__"].duplicated().any():
            values = [c for c in df.columns if c not in ("__id__", *factors)]
            wide = df.pivot_table(index="__id__", columns=factors, values=values, aggfunc="first", dropna=False)
            wide.columns = ["_".join(str(x) for x in col) for col in wide.columns]
            wide = wide.dropna(axis=1, how="all")
            notes.append(f"factor column(s) {', '.join(factors)} spread to one column per trait and level")
            wide.index.name = "__id__"
            return _with_notes(wide.reset_index(), notes)
        return _with_notes(df, notes)
    # <Trait> / <Covariate> [+ <Trait> line] / <Numeric>: the header row is the first line starting with
    # <Trait>, or the first line after the tag.
    idx = next((i for i, ln in enumerate(lines) if ln.split()[0] == "<Trait>"), 0)
    header_toks = lines[idx].split()
    header = ["__id__", *header_toks[1:]] if header_toks[0].startswith("<") else header_toks
    df = _parse_block(p, header, lines[idx + 1 :])
    df = df.rename(columns={header[0]: "__id__"})
    return _with_notes(df, notes)


def _with_notes(df: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
    df.attrs["notes"] = notes
    return df


def _parse_block(p: Path, header: list[str], body: list[str]) -> pd.DataFrame:
    if not body:
        raise DataError("the phenotype file has a header but no rows", p, "add one row per sample")
    try:
        df = pd.read_csv(io.StringIO("\n".join(body)), sep=r"\s+", header=None, dtype=str, keep_default_na=False)
    except Exception as exc:
        raise DataError(
            f"cannot parse the table ({exc})", p, "check the rows have as many fields as the header"
        ) from None
    if df.shape[1] > len(header):
        # Trailing empty tab fields (e.g. "<Trait> a b c \t") are harmless; extra values are not.
        extra = df.iloc[:, len(header) :]
        if (extra != "").any().any() and extra.notna().any().any():
            raise DataError(
                f"rows have {df.shape[1]} fields but the header names {len(header)}", p, "fix the header or the rows"
            )
        df = df.iloc[:, : len(header)]
    if df.shape[1] < len(header):
        raise DataError(
            f"rows have {df.shape[1]} fields but the header names {len(header)}", p, "fix the header or the rows"
        )
    df.columns = header
    return df


def _readme_names(p: Path, k: int) -> list[str] | None:
    """Column names for a headerless table from a README beside it ("1 = E1, 2 = E2, ...")."""
    for name in ("README.md", "README.txt", "README"):
        f = p.with_name(name)
        if not f.is_file():
            continue
        try:
            txt = f.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for line in txt.splitlines():
            found = re.findall(r"\b(\d+)\s*=\s*([A-Za-z][\w.]*)", line)
            if len(found) == k and [int(a) for a, _ in found] == list(range(1, k + 1)):
                return [b.rstrip(".") for _, b in found]
    return None


def _read_table(p: Path, text: str, id_column: str | None) -> pd.DataFrame:
    lines = [ln for ln in text.split("\n") if ln.strip()]
    sep = _sniff_sep(lines[0])
    if len(lines) > 1:
        n0 = len(lines[0].split(sep) if sep else lines[0].split())
        n1 = len(lines[1].split(sep) if sep else lines[1].split())
        if n1 == n0 + 1:  # R write.table: the header has no cell above the row names
            lines[0] = ("__id__" + sep if sep else "__id__ ") + lines[0]
    try:
        df = pd.read_csv(
            io.StringIO("\n".join(lines)),
            sep=sep if sep else r"\s+",
            header=None,
            dtype=str,
            keep_default_na=False,
            skipinitialspace=True,
        )
    except Exception as exc:
        raise DataError(
            f"cannot parse the table ({exc})", p, "give a CSV/TSV with a header row and one row per sample"
        ) from None
    first = [str(x).strip().strip('"') for x in df.iloc[0]]
    numeric_first = [_numlike(x) for x in first]
    notes: list[str] = []
    if sum(numeric_first[1:]) < max(1, (len(first) - 1)) and not all(numeric_first[1:] or [False]):
        header = first
        if header[0] == "" and id_column is None:
            header[0] = "__id__"  # R write.csv corner cell
        df = df.iloc[1:].reset_index(drop=True)
        df.columns = _unique_names(header)
    else:
        k = df.shape[1]
        first_is_id = not all(_numlike(str(x)) for x in df.iloc[:, 0])
        n_traits = k - int(first_is_id)
        names = _readme_names(p, n_traits)
        if names:
            notes.append(f"no header: trait names {', '.join(names)} taken from the README beside the file")
        else:
            names = [f"trait{i + 1}" for i in range(n_traits)]
            notes.append(f"no header: columns named {names[0]}..{names[-1]}")
        if first_is_id:
            df.columns = ["__id__", *names]
        else:
            df.columns = names
            df.insert(0, "__id__", [f"S{i + 1}" for i in range(len(df))])
            notes.append(f"no sample IDs: rows named S1..S{len(df)} (as ID-less genotype matrices)")
    return _with_notes(df, notes)


def _numlike(x: str) -> bool:
    if x in PHENO_NA:
        return True
    try:
        float(x)
    except ValueError:
        return False
    return True


def _unique_names(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        n = n.strip().strip('"')
        if n in seen:
            seen[n] += 1
            out.append(f"{n}.{seen[n]}")
        else:
            seen[n] = 0
            out.append(n)
    return out


def _finish(df: pd.DataFrame, p: Path, id_column: str | None) -> pd.DataFrame:
    """Pick the ID column, convert numeric columns, check IDs."""
    notes = list(df.attrs.get("notes", []))
    if "__id__" in df.columns and id_column is None:
        idc = "__id__"
    elif id_column is not None:
        if id_column not in df.columns:
            cols = [c for c in df.columns if c != "__id__"]
            raise DataError(f"ID column {id_column!r} not found", p, f"available columns: {', '.join(map(str, cols))}")
        idc = id_column
    elif df.index.name == "id" or not isinstance(df.index, pd.RangeIndex):
        idc = None
    else:
        low = {str(c).lower().strip(): c for c in df.columns}
        idc = next((low[k] for k in _ID_NAMES if k in low), None)
        if idc is None:
            idc = df.columns[0]
    if idc is not None:
        ids = [_as_id(v) for v in df[idc]]
        name = "id" if idc == "__id__" else str(idc)
        df = df.drop(columns=[idc])
        df.index = pd.Index(ids, name=name)
    df.index = df.index.map(_as_id)
    if (df.index == "").any():
        i = int(np.flatnonzero(df.index == "")[0])
        raise DataError(f"row {i + 1} has an empty sample ID", p, "give every row a sample ID")
    if df.index.duplicated().any():
        dup = df.index[df.index.duplicated()].unique()[:5]
        raise DataError(
            f"{int(df.index.duplicated().sum())} duplicated sample IDs, e.g. {', '.join(dup)}",
            p,
            "keep one row per sample (average replicates or spread locations into separate columns)",
        )
    out = {}
    for c in df.columns:
        col = df[c]
        if col.dtype == object:
            s = col.astype(str).str.strip()
            num = pd.to_numeric(s.where(~s.isin(PHENO_NA)), errors="coerce")
            n_text = int((num.isna() & ~s.isin(PHENO_NA)).sum())
            if n_text == 0:
                out[str(c)] = num.astype(np.float64)
            else:
                out[str(c)] = s.where(~s.isin(PHENO_NA), None)
        else:
            num = pd.to_numeric(col, errors="coerce").astype(np.float64)
            out[str(c)] = num.mask(num.isin([-9.0, -999.0]))
    res = pd.DataFrame(out, index=df.index)
    if res.shape[1] == 0:
        raise DataError("the phenotype table has IDs but no trait columns", p, "add at least one trait column")
    res.attrs["notes"] = notes
    res.attrs["source"] = str(p)
    return res


# --------------------------------------------------------------------------------------------------
# Join
# --------------------------------------------------------------------------------------------------


@dataclass
class JoinReport:
    """Result of joining genotype samples to a phenotype table.

    Attributes:
        samples: IDs present in both, in genotype order.
        geno_only: genotyped IDs without a phenotype row.
        pheno_only: phenotype IDs without genotypes.
        y: trait values for ``samples`` (float64, NaN kept) when a trait was asked for, else None.
        trait: the trait asked for (or None).
        pheno_rows: phenotype row label for each of ``samples`` (differs from ``samples`` when joined on
            another column or by row order).
        how: "index" (sample IDs), "column <name>" (another ID column matched better) or "row order".
        notes: what was done, in words.
    """

    samples: list[str]
    geno_only: list[str]
    pheno_only: list[str]
    y: np.ndarray | None = None
    trait: str | None = None
    pheno_rows: list[str] = field(default_factory=list)
    how: str = "index"
    notes: list[str] = field(default_factory=list)

    @property
    def n_missing_y(self) -> int:
        return 0 if self.y is None else int(np.isnan(self.y).sum())

    def values(self, pheno: pd.DataFrame, column: str) -> np.ndarray:
        """Any column of ``pheno`` (e.g. a ``family`` group for grouped CV) aligned to :attr:`samples`."""
        if column not in pheno.columns:
            raise DataError(
                f"column {column!r} not found in the phenotype table",
                pheno.attrs.get("source"),
                f"available columns: {', '.join(map(str, pheno.columns))}",
            )
        col = pheno[column].copy()
        col.index = [_as_id(s) for s in pheno.index]
        return col.loc[self.pheno_rows].to_numpy()

    def to_dict(self) -> dict:
        """Plain-JSON summary (counts and the first few IDs of each group)."""
        return {
            "n_both": len(self.samples),
            "n_geno_only": len(self.geno_only),
            "n_pheno_only": len(self.pheno_only),
            "geno_only_first": self.geno_only[:5],
            "pheno_only_first": self.pheno_only[:5],
            "trait": self.trait,
            "n_trait_missing": self.n_missing_y,
            "how": self.how,
            "notes": list(self.notes),
        }

    def to_text(self) -> str:
        """The join in plain words."""

        def few(ids: list[str]) -> str:
            return "" if not ids else " (e.g. " + ", ".join(ids[:5]) + ("…" if len(ids) > 5 else "") + ")"

        lines = [
            f"Samples with genotype and phenotype: {len(self.samples)} (joined by {self.how})",
            f"Genotype only (no phenotype row): {len(self.geno_only)}{few(self.geno_only)}",
            f"Phenotype only (no genotype): {len(self.pheno_only)}{few(self.pheno_only)}",
        ]
        if self.trait is not None and self.y is not None:
            lines.append(f"Trait {self.trait}: {len(self.y) - self.n_missing_y} values, {self.n_missing_y} missing")
        lines.extend(self.notes)
        return "\n".join(lines)


_SYNTH = re.compile(r"^([A-Za-z_]*)(\d+)$")


def _is_synthetic(ids: list[str], prefix: str | None = None) -> bool:
    """True when IDs are PREFIX1..PREFIXn in order (row numbers, not real names)."""
    if not ids:
        return False
    m0 = _SYNTH.match(ids[0])
    if not m0 or (prefix is not None and m0.group(1) != prefix):
        return False
    pre = m0.group(1)
    return all(s == f"{pre}{i + 1}" for i, s in enumerate(ids))


def pheno_id_candidates(pheno: pd.DataFrame) -> set[str]:
    """Every value that ``join_phenotypes`` could join on: the row IDs and each unique-valued column.

    Given to ``read_genotypes(sample_ids=...)``, it lets a numeric matrix's sample axis be the one whose
    IDs join the phenotypes.
    """
    ids = {_as_id(s) for s in pheno.index}
    for c in pheno.columns:
        vals = [_as_id(v) for v in pheno[c].tolist()]
        if len(set(vals)) == len(vals):
            ids.update(vals)
    ids.discard("")
    return ids


def join_phenotypes(geno: GenotypeMatrix, pheno: pd.DataFrame, trait: str | None = None) -> JoinReport:
    """Join genotype samples to phenotype rows by sample ID.

    Tries, in order: the phenotype index; any other phenotype column whose values match more genotype
    IDs (e.g. rice's ``PlinkIDs``, which are the .fam IIDs); row order, but only when the genotype IDs were
    synthesised (S1..Sn) and the phenotype IDs are also row numbers (e.g. M1..Mn) with the same count.

    Raises:
        DataError: no overlapping IDs (with examples of both); trait not found (lists the traits) or not
            numeric.
    """
    src = pheno.attrs.get("source")
    gids = [str(s) for s in geno.samples]
    pids = [_as_id(s) for s in pheno.index]
    gset = set(gids)
    best_how, best_map = "index", {s: s for s in pids}
    best_n = len(gset & set(pids))
    notes: list[str] = []
    if best_n < len(gids):
        for c in pheno.columns:
            vals = [_as_id(v) for v in pheno[c].tolist()]
            if len(set(vals)) != len(vals):
                continue
            n = len(gset & set(vals))
            if n > best_n:
                best_n, best_how = n, f"column {c}"
                best_map = {v: r for v, r in zip(vals, pids, strict=True)}
    if best_n == 0 and _is_synthetic(gids, "S") and _is_synthetic(pids) and len(pids) == len(gids):
        best_n, best_how = len(gids), "row order"
        best_map = dict(zip(gids, pids, strict=True))
        notes.append(
            f"the genotype file has no sample IDs (named S1..S{len(gids)}); phenotype rows "
            f"{pids[0]}..{pids[-1]} were matched by row order"
        )
    if best_n == 0:
        raise DataError(
            "no sample IDs in common between genotypes and phenotypes: genotype IDs look like "
            f"{', '.join(gids[:3])}; phenotype IDs look like {', '.join(pids[:3])}",
            src or geno.source or None,
            "use a phenotype table whose ID column matches the genotype sample IDs (choose the ID column: "
            "--id-column COL); if the genotype matrix was read the wrong way round (see its orientation "
            "note), choose the layout: --orientation samples_x_markers or markers_x_samples (in the window: Data, "
            "Layout)",
        )
    if best_how.startswith("column"):
        notes.append(f"joined on phenotype {best_how} (it matches more genotype IDs than the row IDs)")
    samples = [s for s in gids if s in best_map]
    rows = [best_map[s] for s in samples]
    used = set(rows)
    geno_only = [s for s in gids if s not in best_map]
    pheno_only = [r for r in pids if r not in used]
    y = None
    if trait is not None:
        if trait not in pheno.columns:
            numeric = [str(c) for c in pheno.columns if pd.api.types.is_numeric_dtype(pheno[c])]
            raise DataError(
                f"trait {trait!r} not found in the phenotype table",
                src,
                f"available traits: {', '.join(numeric) or '(none numeric)'}",
            )
        if not pd.api.types.is_numeric_dtype(pheno[trait]):
            raise DataError(f"trait {trait!r} is not numeric", src, "pick a numeric trait column")
        col = pheno[trait].copy()
        col.index = pids
        y = col.loc[rows].to_numpy(dtype=np.float64)
        if np.isnan(y).all():
            notes.append(f"trait {trait} has no values for the joined samples")
    return JoinReport(
        samples=samples,
        geno_only=geno_only,
        pheno_only=pheno_only,
        y=y,
        trait=trait,
        pheno_rows=rows,
        how=best_how,
        notes=notes,
    )
