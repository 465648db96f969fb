"""``detect_kind``: is a path single-cell expression data, genotypes or a phenotype/trait table?

By name where the format says it (.h5ad, 10x folder, .bed, .vcf, .hmp.txt, ...); for text tables by content:

- a first line ``##fileformat=VCF`` / ``rs#`` (HapMap) -> genotype; ``<Phenotype>`` / ``<Trait>`` (TASSEL)
  -> phenotype;
- text columns among the values (beyond the ID column) -> phenotype;
- whole numbers within {-1, 0, 1, 2} (missing allowed) -> genotype, unless gene names label one axis and
  most entries are 0 (a sparse count matrix), or the table has at most 3 value columns (a 0/1 trait); also
  when at least 95 % of the values are such codes (a genotype matrix with bad codes, reported by its reader);
- gene names on one axis (Ensembl IDs, or many varied names along a long axis) -> single-cell;
- a large, mostly-zero matrix of whole numbers -> single-cell;
- anything else numeric -> phenotype.
"""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import numpy as np

from app.data.errors import DataError, check_readable
from app.data.genes import _ENSEMBL, gene_likeness

KINDS = ("singlecell", "genotype", "phenotype")
SC_SUFFIXES = (".h5ad", ".h5", ".hdf5", ".loom", ".mtx", ".mtx.gz")
GENO_SUFFIXES = (".bed", ".bim", ".fam", ".vcf", ".vcf.gz", ".vcf.bgz", ".bcf", ".hmp.txt", ".hmp.txt.gz", ".hmp",
                 ".hapmap")
TEXT_SUFFIXES = (".csv", ".tsv", ".txt", ".tab", ".matrix", ".dge", ".x", ".y", ".geno", ".dat", ".pheno")
HINT = ("OmicsLab reads single-cell data (.h5ad, .h5, .loom, 10x folder, .csv/.tsv matrix), genotypes (PLINK "
        ".bed/.bim/.fam, .vcf(.gz), .hmp.txt, numeric 0/1/2 .csv/.tsv) and phenotype tables (.csv/.tsv).")
SNIFF_LINES = 120
SNIFF_FIELDS = 3000


def _lower_name(path: Path) -> str:
    return path.name.lower()


def _head_lines(path: Path, n: int) -> list[str]:
    with open(path, "rb") as fh:
        magic = fh.read(2)
    opener = gzip.open if magic == b"\x1f\x8b" else open
    lines: list[str] = []
    try:
        with opener(path, "rt", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.strip():
                    lines.append(line.rstrip("\r\n"))
                if len(lines) >= n:
                    break
    except (OSError, EOFError) as exc:
        raise DataError(f"could not read the start of the file ({exc})", path,
                        "Check that the file is complete (a cut-off .gz cannot be read).") from exc
    return lines


def _split(lines: list[str]) -> list[list[str]]:
    first = lines[0]
    if "\t" in first:
        rows = [r for r in csv.reader(lines, delimiter="\t")]
    elif "," in first:
        rows = [r for r in csv.reader(lines, delimiter=",")]
    else:
        rows = [ln.split() for ln in lines]
    return [[f.strip() for f in r[:SNIFF_FIELDS]] for r in rows]


_MISSING = {"", "NA", "N/A", "NaN", "nan", "na", ".", "?", "-", "NULL", "null"}


def _num(x: str) -> float | None:
    """float(x); NaN for a missing code; None for text."""
    if x in _MISSING:
        return float("nan")
    try:
        return float(x)
    except ValueError:
        return None


def sniff_table(path: Path) -> str:
    """Kind of a delimited text table, from its first lines (see the module docstring)."""
    lines = _head_lines(path, SNIFF_LINES)
    if not lines:
        raise DataError("the file holds no text lines", path, "Check that it is the right file, not an empty one.")
    first = lines[0].lstrip("\ufeff")
    if first.startswith("##fileformat=VCF"):
        return "genotype"
    low = first.lower()
    if low.startswith(("rs#", "rs\t")):
        return "genotype"
    if first.startswith("<"):
        return "phenotype"  # TASSEL <Phenotype>/<Trait>/<Covariate> files
    rows = _split(lines)
    head = rows[0]
    has_header = any(_num(f) is None for f in head[1:]) or (len(head) == 1 and _num(head[0]) is None)
    body = rows[1:] if has_header else rows
    if not body:
        return "phenotype"
    first_col_text = sum(1 for r in body if r and _num(r[0]) is None) >= 0.5 * len(body)
    start = 1 if first_col_text else 0
    cells = [_num(f) for r in body for f in r[start:]]
    n_text = sum(1 for v in cells if v is None)
    if not cells or n_text > 0.05 * len(cells):
        return "phenotype"
    vals = np.array([v for v in cells if v is not None], dtype=float)
    vals = vals[np.isfinite(vals) & (vals != -9)]
    n_cols = max(len(r) for r in body) - start
    col_names = head[len(head) - n_cols:] if has_header else []
    row_names = [r[0] for r in body] if first_col_text else []
    ens = any(sum(1 for x in names if _ENSEMBL.match(x)) >= 0.5 * len(names) for names in (col_names, row_names)
              if names)
    gene_axis = ens or (len(col_names) >= 50 and gene_likeness(col_names) >= 0.5) or \
        (len(row_names) >= 50 and n_cols >= 5 and gene_likeness(row_names) >= 0.5)
    if vals.size == 0:
        return "phenotype"
    ints = bool(np.all(np.mod(vals, 1) == 0))
    zero_frac = float(np.mean(vals == 0))
    codes = np.isin(vals, (-1.0, 0.0, 1.0, 2.0))
    if ints and codes.all():
        if gene_axis and zero_frac >= 0.5:
            return "singlecell"
        return "phenotype" if n_cols <= 3 else "genotype"
    if not gene_axis and n_cols > 3 and codes.mean() >= 0.95:
        return "genotype"  # a genotype matrix with a few bad codes: the reader says where they are
    if gene_axis:
        return "singlecell"
    if ints and vals.min() >= 0 and zero_frac >= 0.5 and n_cols >= 50 and len(body) >= 50:
        return "singlecell"
    return "phenotype"


def detect_kind(path: str | Path) -> str:
    """"singlecell", "genotype" or "phenotype" for a path; DataError when it is none of these or unreadable."""
    path = Path(path).expanduser()
    name = _lower_name(path)
    if not path.exists():
        if path.with_name(path.name + ".bed").exists():
            return "genotype"  # a PLINK prefix
        raise DataError("the file or folder does not exist", path, "Check the path and its spelling.")
    check_readable(path)  # "permission denied", never a raw error or a wrong guess
    if path.is_dir():
        if any("matrix.mtx" in p.name.lower() for p in path.iterdir()):
            return "singlecell"
        raise DataError("this folder is not a 10x folder (no matrix.mtx inside)", path,
                        "Give a file, or a 10x folder with matrix.mtx, barcodes.tsv and genes/features.tsv. " + HINT)
    if path.stat().st_size == 0:
        raise DataError("the file is empty (0 bytes)", path, "The copy was probably interrupted; get it again.")
    if name.endswith(SC_SUFFIXES):
        return "singlecell"
    if name.endswith(GENO_SUFFIXES):
        return "genotype"
    stem = name.removesuffix(".gz")
    if stem.endswith(TEXT_SUFFIXES):
        return sniff_table(path)
    raise DataError(f"unknown file type '{path.suffix or path.name}'", path, HINT)
