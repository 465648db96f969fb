"""Genotype readers: PLINK .bed/.bim/.fam, VCF/.vcf.gz, HapMap .hmp.txt and numeric CSV/TSV matrices.

Every reader returns a :class:`GenotypeMatrix` (samples x markers, int8, ``MISSING`` = -9) and raises
:class:`DataError` (file, what is wrong, what to do) for bad input, never a library exception.

Which allele is counted (``calls`` = number of copies of ``markers.alt``):

- PLINK: the A1 allele (.bim column 5), as PLINK and bed-reader's ``count_A1=True`` do; so ``alt`` = A1 and
  ``ref`` = A2. In the SNP-major .bed, ``00`` (homozygous A1) -> 2, ``10`` -> 1, ``11`` -> 0, ``01`` -> missing.
- VCF: the ALT allele (GT 0/0 -> 0, 0/1 -> 1, 1/1 -> 2, ./. -> missing). Multi-allelic sites are skipped
  (counted in ``notes``).
- HapMap: the second allele of the ``alleles`` column ("A/G" -> G is counted), i.e. the non-first allele.
- Numeric: the values as given (0/1/2); -1/0/1 is recoded to 0/1/2 (noted); 0/1-only matrices are kept as
  0/1 with ``coding="binary"`` (e.g. DArT presence/absence).
"""

from __future__ import annotations

import csv
import gzip
import io
import re
from collections.abc import Collection
from pathlib import Path

import numpy as np
import pandas as pd

from app.data.errors import DataError, check_readable
from app.data.genotype.types import MISSING, GenotypeMatrix

FORMATS = ("plink", "vcf", "hapmap", "numeric")
ORIENTATIONS = ("auto", "samples_x_markers", "markers_x_samples")

# Strings read as a missing value in numeric matrices.
_NA_STRINGS = ["", "NA", "N/A", "NaN", "nan", "na", ".", "?", "-", "NULL", "null", "-9"]


# --------------------------------------------------------------------------------------------------
# Dispatch
# --------------------------------------------------------------------------------------------------


def detect_genotype_format(path: str | Path) -> str | None:
    """Guess the genotype format of ``path`` from its name and first bytes.

    Returns "plink", "vcf", "hapmap", "numeric" or None when the file does not look like a genotype file.
    """
    p = Path(path)
    name = p.name.lower()
    if name.endswith((".bed", ".bim", ".fam")) or (not p.exists() and p.with_name(p.name + ".bed").exists()):
        return "plink"
    if name.endswith((".vcf", ".vcf.gz", ".vcf.bgz", ".bcf")):
        return "vcf"
    if name.endswith((".hmp.txt", ".hmp", ".hmp.txt.gz", ".hapmap")):
        return "hapmap"
    if not p.is_file():
        return None
    head = _head_text(p)
    if head is None:
        return None
    first = head.lstrip("\ufeff").split("\n", 1)[0]
    if first.startswith("##fileformat=VCF"):
        return "vcf"
    if first.lower().startswith("rs#") or first.lower().startswith("rs\t"):
        return "hapmap"
    if name.endswith((".csv", ".tsv", ".txt", ".csv.gz", ".tsv.gz", ".txt.gz", ".x", ".geno", ".dat")):
        return "numeric"
    return None


def read_genotypes(
    path: str | Path,
    fmt: str = "auto",
    *,
    numeric_orientation: str = "auto",
    samples_in_first_column: bool | None = None,
    marker_map: str | Path | None = None,
    sample_ids: Collection[str] | None = None,
) -> GenotypeMatrix:
    """Read a genotype file into a :class:`GenotypeMatrix` (samples x markers, int8, MISSING = -9).

    Args:
        path: a PLINK .bed (or its prefix, or the .bim/.fam), a VCF (.vcf/.vcf.gz), a HapMap (.hmp.txt)
            or a numeric matrix (CSV/TSV/whitespace, 0/1/2 or -1/0/1, header and row IDs optional).
        fmt: "auto" (from the name and content), "plink", "vcf", "hapmap" or "numeric".
        numeric_orientation: for numeric matrices, "auto" (detected, see :func:`read_numeric`),
            "samples_x_markers" or "markers_x_samples".
        samples_in_first_column: numeric matrices: True if the first column holds the sample IDs (so
            samples are rows), False if it does not (a text first column then holds marker IDs, so markers
            are rows), None to detect (a non-numeric first column is taken as row IDs).
        marker_map: numeric matrices: optional CSV/TSV with columns ``id``, ``chrom``, ``pos`` (and
            optionally ``ref``, ``alt``); when None a ``<stem>_map.csv``, ``<stem>.map.csv`` or
            ``marker_map.csv`` beside the file is used if its IDs match.
        sample_ids: numeric matrices: the phenotype table's IDs (see ``pheno_id_candidates``); the axis
            whose IDs join them is the sample axis (before the corner words and the shape).

    Raises:
        DataError: on any bad input (missing companion files, unknown format, bad codes, ...).
    """
    p = Path(path)
    if fmt not in ("auto", *FORMATS):
        raise DataError(f"unknown genotype format {fmt!r}", p, f"use one of: auto, {', '.join(FORMATS)}")
    if p.suffix.lower() in (".ped", ".map", ".pgen", ".pvar", ".psam", ".bgen"):
        raise DataError(
            f"{p.suffix} files are not read directly",
            p,
            "convert to PLINK binary: `plink --file PREFIX --make-bed --out NEW` (or plink2 --make-bed)",
        )
    if fmt == "auto":
        fmt = detect_genotype_format(p) or ""
        if not fmt:
            if not p.exists():
                raise DataError("file not found", p, "check the path")
            raise DataError(
                "cannot tell the genotype format from the file name or content",
                p,
                "use a .bed/.bim/.fam, .vcf(.gz), .hmp.txt or a .csv/.tsv numeric matrix (rename the file to "
                "its format's extension)",
            )
    if fmt == "plink":
        return read_plink(p)
    if not p.exists():
        raise DataError("file not found", p, "check the path")
    check_readable(p)
    if p.is_dir():
        raise DataError("is a folder, not a genotype file", p, "give the file itself")
    if p.stat().st_size == 0:
        raise DataError("the file is empty", p, "re-export or re-download it")
    if fmt == "vcf":
        return read_vcf(p)
    if fmt == "hapmap":
        return read_hapmap(p)
    return read_numeric(
        p,
        orientation=numeric_orientation,
        samples_in_first_column=samples_in_first_column,
        marker_map=marker_map,
        sample_ids=sample_ids,
    )


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def _head_text(p: Path, n: int = 4096) -> str | None:
    """First ``n`` bytes as text (gunzipped if needed), None if unreadable or binary."""
    try:
        with open(p, "rb") as fh:
            raw = fh.read(n)
        if raw[:2] == b"\x1f\x8b":
            with gzip.open(p, "rb") as fh:
                raw = fh.read(n)
    except (OSError, EOFError, gzip.BadGzipFile):
        return None
    if b"\x00" in raw:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _read_text(p: Path) -> str:
    """Whole file as text (gunzipped when gzip), CRLF normalised; DataError when not text."""
    try:
        with open(p, "rb") as fh:
            raw = fh.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile, ValueError) as exc:
        raise DataError(f"cannot read the file ({exc})", p, "check that it is complete and not corrupted") from None
    if b"\x00" in raw:
        raise DataError("the file is binary, not text", p, "give a text table (CSV/TSV) or pick the right format")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _unique_ids(ids: list[str], what: str, p: Path) -> list[str]:
    """Strip IDs and reject empty or duplicated ones with a clear message."""
    ids = [str(s).strip() for s in ids]
    if any(s == "" for s in ids):
        raise DataError(f"some {what} IDs are empty", p, f"give every {what} a name")
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dup = [s for s in ids if s in seen or seen.add(s)]  # type: ignore[func-returns-value]
        raise DataError(
            f"{len(dup)} duplicated {what} ID(s), e.g. {', '.join(dup[:5])}",
            p,
            f"make the {what} IDs unique (remove or rename the duplicates)",
        )
    return ids


def _dedupe_marker_ids(ids: list[str]) -> tuple[list[str], int]:
    """Make marker IDs unique by suffixing repeats (markers often share '.' IDs); returns (ids, n_renamed)."""
    seen: dict[str, int] = {}
    out = []
    renamed = 0
    for s in ids:
        if s in seen:
            seen[s] += 1
            out.append(f"{s}_{seen[s]}")
            renamed += 1
        else:
            seen[s] = 0
            out.append(s)
    return out, renamed


def _markers_frame(ids: list[str], chrom, pos, ref, alt) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": pd.Series(ids, dtype=object),
            "chrom": pd.Series([str(c) for c in chrom], dtype=object),
            "pos": np.asarray(pos, dtype=np.int64),
            "ref": pd.Series([str(a) for a in ref], dtype=object),
            "alt": pd.Series([str(a) for a in alt], dtype=object),
        }
    )


# --------------------------------------------------------------------------------------------------
# PLINK
# --------------------------------------------------------------------------------------------------


def _plink_paths(p: Path) -> tuple[Path, Path, Path]:
    name = p.name
    for ext in (".bed", ".bim", ".fam"):
        if name.lower().endswith(ext):
            prefix = p.with_name(name[: -len(ext)])
            break
    else:
        prefix = p
    return (
        prefix.with_name(prefix.name + ".bed"),
        prefix.with_name(prefix.name + ".bim"),
        prefix.with_name(prefix.name + ".fam"),
    )


def read_plink(path: str | Path) -> GenotypeMatrix:
    """Read a PLINK 1 binary fileset (.bed + .bim + .fam; ``path`` = any of them or the prefix).

    Counts the A1 allele (``markers.alt`` = A1, ``ref`` = A2): 00 -> 2, 10 -> 1, 11 -> 0, 01 -> missing.
    Sample IDs are the IIDs (FID_IID when IIDs repeat across families).
    """
    from bed_reader import open_bed

    bed, bim, fam = _plink_paths(Path(path))
    for f, what in ((bed, "genotypes"), (bim, "marker map"), (fam, "sample list")):
        if not f.exists():
            raise DataError(
                f"the PLINK {f.suffix} file ({what}) is missing",
                f,
                f"PLINK binary data needs {bed.name}, {bim.name} and {fam.name} side by side",
            )
    fam_df = _read_plink_table(fam, 6, "fam", ["FID", "IID", "father", "mother", "sex", "pheno"])
    bim_df = _read_plink_table(bim, 6, "bim", ["chrom", "id", "cm", "pos", "a1", "a2"])
    n, m = len(fam_df), len(bim_df)
    with open(bed, "rb") as fh:
        magic = fh.read(3)
    if magic[:2] != b"\x6c\x1b":
        raise DataError(
            "not a PLINK .bed file (wrong magic bytes)",
            bed,
            "regenerate it with `plink --make-bed`; text .ped files are not supported",
        )
    if magic[2:3] != b"\x01":
        raise DataError(
            "this .bed is sample-major (old PLINK 0.99 layout)",
            bed,
            "convert it with `plink --bfile PREFIX --make-bed --out NEW`",
        )
    expected = 3 + m * ((n + 3) // 4)
    size = bed.stat().st_size
    if size != expected:
        raise DataError(
            f".bed has {size:,} bytes but {fam.name} ({n} samples) and {bim.name} ({m} markers) imply {expected:,}",
            bed,
            "the .bed is truncated or does not belong to this .bim/.fam; regenerate the fileset",
        )
    iids = [str(s) for s in fam_df["IID"]]
    if len(set(iids)) != len(iids):
        iids = [f"{a}_{b}" for a, b in zip(fam_df["FID"], fam_df["IID"], strict=True)]
    samples = _unique_ids(iids, "sample", fam)
    try:
        pos = pd.to_numeric(bim_df["pos"], errors="raise").astype(np.int64).to_numpy()
    except (ValueError, TypeError):
        raise DataError(
            "column 4 (base-pair position) holds non-numbers",
            bim,
            "check that the .bim has 6 columns: chrom, id, cM, bp, A1, A2",
        ) from None
    ids, renamed = _dedupe_marker_ids([str(s) for s in bim_df["id"]])
    notes = ["PLINK: counted allele = A1 (markers.alt); 00->2, 10->1, 11->0, 01->missing"]
    if renamed:
        notes.append(f"{renamed} repeated marker IDs were suffixed _1, _2, ... to make them unique")
    try:
        with open_bed(
            bed,
            iid_count=n,
            sid_count=m,
            count_A1=True,
            num_threads=2,
            properties={"iid": samples, "sid": ids},
        ) as reader:
            calls = reader.read(dtype="int8", order="C", num_threads=2)
    except Exception as exc:  # bed-reader raises plain ValueError/OSError on bad content
        raise DataError(f"cannot read the .bed ({exc})", bed, "regenerate it with plink --make-bed") from None
    calls[calls == -127] = MISSING
    markers = _markers_frame(ids, bim_df["chrom"], pos, bim_df["a2"], bim_df["a1"])
    return GenotypeMatrix(calls=calls, samples=samples, markers=markers, coding="dosage", source=str(bed), notes=notes)


def _read_plink_table(f: Path, ncol: int, kind: str, names: list[str]) -> pd.DataFrame:
    text = _read_text(f)
    if not text.strip():
        raise DataError(f"the .{kind} file is empty", f, "regenerate the PLINK fileset")
    try:
        df = pd.read_csv(io.StringIO(text), sep=r"\s+", header=None, dtype=str, engine="c")
    except Exception as exc:
        raise DataError(f"cannot parse the .{kind} file ({exc})", f, "it must be whitespace-separated") from None
    if df.shape[1] != ncol or df.isna().any().any():
        raise DataError(
            f"the .{kind} file must have {ncol} columns on every line ({', '.join(names)}); found "
            f"{df.shape[1]} or short lines",
            f,
            "regenerate the PLINK fileset",
        )
    df.columns = names
    return df


# --------------------------------------------------------------------------------------------------
# VCF
# --------------------------------------------------------------------------------------------------


def read_vcf(path: str | Path) -> GenotypeMatrix:
    """Read a VCF/BCF (plain or bgzipped) with cyvcf2: calls = dosage of the ALT allele from GT.

    Phased and unphased GTs are treated alike; missing GT (./.) and half-missing GT (./1) -> MISSING;
    haploid calls (e.g. inbreds written "1") count 0 or 2. Multi-allelic sites are skipped and counted in
    ``notes``; polyploid GTs are refused.
    """
    from cyvcf2 import VCF

    p = Path(path)
    head = _head_text(p, 64)
    if head is not None and not head.startswith("##fileformat=VCF") and not p.name.lower().endswith(".bcf"):
        raise DataError(
            "not a VCF: the first line must be ##fileformat=VCFv4.x",
            p,
            "check the file is a VCF (or pick the right format)",
        )
    if head is None and not p.name.lower().endswith(".bcf"):
        raise DataError(
            "not a readable VCF (binary or corrupt content)", p, "check the file is a (bgzipped) VCF and not truncated"
        )
    try:
        vcf = VCF(str(p))
    except Exception as exc:
        raise DataError(f"cannot open as VCF ({exc})", p, "check the file is a valid (bgzipped) VCF") from None
    samples = _unique_ids(list(vcf.samples), "sample", p)
    if not samples:
        vcf.close()
        raise DataError("the VCF has no sample columns", p, "export the VCF with genotypes (FORMAT GT) per sample")
    rows: list[np.ndarray] = []
    chrom: list[str] = []
    pos: list[int] = []
    ids: list[str] = []
    ref: list[str] = []
    alt: list[str] = []
    n_multi = 0
    n_nogt = 0
    phased = False
    try:
        for v in vcf:
            alts = v.ALT
            if len(alts) > 1:
                n_multi += 1
                continue
            if "GT" not in v.FORMAT:
                n_nogt += 1
                continue
            arr = v.genotype.array()  # (n, ploidy + 1): allele indices (-1 missing, -2 end), phased flag
            if arr.shape[1] != 3:
                raise DataError(
                    f"GT with ploidy {arr.shape[1] - 1} at {v.CHROM}:{v.POS}; only diploid (or haploid) "
                    "calls are supported",
                    p,
                    "convert the calls to diploid 0/1/2 dosages first",
                )
            rows.append(arr[:, :2].copy())
            if not phased and len(rows) == 1:
                phased = bool(arr[arr[:, 1] != -2, 2].any())  # haploid calls are flagged phased
            chrom.append(v.CHROM)
            pos.append(v.POS)
            vid = v.ID
            ids.append(vid if vid else f"{v.CHROM}:{v.POS}")
            ref.append(v.REF)
            alt.append(alts[0] if alts else "")
    except DataError:
        raise
    except Exception as exc:  # htslib parse errors surface as Exception/OSError
        raise DataError(
            f"the VCF breaks off or is malformed after {len(rows)} records ({exc})",
            p,
            "check the file is complete (re-download or re-export it)",
        ) from None
    finally:
        vcf.close()
    if not rows:
        raise DataError(
            "the VCF has no usable biallelic records with GT", p, "check the file holds variant lines with a GT field"
        )
    gt = np.stack(rows, axis=1)  # (samples, markers, 2)
    a1, a2 = gt[..., 0], gt[..., 1]
    haploid = a2 == -2
    missing = (a1 < 0) | ((a2 < 0) & ~haploid)
    calls = (a1 > 0).astype(np.int8) + np.where(haploid, a1 > 0, a2 > 0).astype(np.int8)
    calls[missing] = MISSING
    notes = ["VCF: counted allele = ALT (GT dosage); ./. -> missing"]
    n_half = int((((a1 < 0) != (a2 < 0)) & ~haploid).sum())
    if n_half:
        notes.append(f"{n_half} half-missing GTs (e.g. ./1) set to missing")
    if haploid.any():
        notes.append(f"{int(haploid.sum())} haploid GTs counted as homozygous (0 or 2)")
    if phased:
        notes.append("GTs are phased; phase is ignored")
    if n_multi:
        notes.append(f"{n_multi} multi-allelic sites skipped (only biallelic sites are used)")
    if n_nogt:
        notes.append(f"{n_nogt} records without a GT field skipped")
    ids, renamed = _dedupe_marker_ids(ids)
    if renamed:
        notes.append(f"{renamed} repeated marker IDs were suffixed _1, _2, ... to make them unique")
    markers = _markers_frame(ids, chrom, pos, ref, alt)
    return GenotypeMatrix(calls=calls, samples=samples, markers=markers, coding="dosage", source=str(p), notes=notes)


# --------------------------------------------------------------------------------------------------
# HapMap
# --------------------------------------------------------------------------------------------------

# IUPAC one-letter call -> the two alleles it stands for ("N" = missing).
_IUPAC = {
    "A": "AA",
    "C": "CC",
    "G": "GG",
    "T": "TT",
    "R": "AG",
    "Y": "CT",
    "S": "CG",
    "W": "AT",
    "K": "GT",
    "M": "AC",
    "+": "++",
    "-": "--",
    "N": "NN",
    "?": "NN",
    "0": "NN",
    ".": "NN",
}
_IUPAC_LUT = np.full((256, 2), 255, dtype=np.uint8)  # 255 = not a genotype code
for _k, _v in _IUPAC.items():
    _IUPAC_LUT[ord(_k)] = [ord(_v[0]), ord(_v[1])]
_MISSING_BYTES = np.array([ord(c) for c in "N?0."], dtype=np.uint8)
_TAB = 9


def _read_bytes(p: Path) -> bytes:
    """Whole file as bytes (gunzipped when gzip); DataError when unreadable or binary."""
    try:
        raw = p.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile, ValueError) as exc:
        raise DataError(f"cannot read the file ({exc})", p, "check that it is complete and not corrupted") from None
    if b"\x00" in raw:
        raise DataError("the file is binary, not text", p, "give a text file or pick the right format")
    return raw


def _hapmap_calls(rest: bytes, n: int, row: int, p: Path) -> np.ndarray:
    """Calls of one HapMap row (the part after the 11 fixed columns) as (n, 2) allele bytes."""
    buf = np.frombuffer(rest, dtype=np.uint8)
    if len(rest) == 3 * n - 1 and (n == 1 or (buf[2::3] == _TAB).all()):  # two-letter calls, the usual case
        return np.stack([buf[0::3], buf[1::3]], axis=1)
    if len(rest) == 2 * n - 1 and (n == 1 or (buf[1::2] == _TAB).all()):  # IUPAC one-letter calls
        out = _IUPAC_LUT[buf[0::2]]
    else:
        toks = rest.split(b"\t")
        if len(toks) != n:
            raise DataError(
                f"marker row {row} has {len(toks)} calls but the header names {n} taxa",
                p,
                "every row needs one call per taxon column (check for missing or extra tabs)",
            )
        out = np.empty((n, 2), dtype=np.uint8)
        for j, t in enumerate(toks):
            t = t.strip()
            if len(t) == 2:
                out[j] = (t[0], t[1])
            elif len(t) == 1:
                out[j] = _IUPAC_LUT[t[0]]
            elif len(t) == 0:
                out[j] = (ord("N"), ord("N"))
            else:
                raise DataError(
                    f"call {t.decode('latin-1')!r} (marker row {row}, taxon column {j + 1}) is not a one- or "
                    "two-letter genotype",
                    p,
                    "HapMap calls must be like AA, AG, NN or IUPAC letters (A, R, Y, N, ...)",
                )
    if (out == 255).any():
        j = int(np.flatnonzero((out == 255).any(axis=1))[0])
        code = rest.split(b"\t")[j].decode("latin-1") if b"\t" in rest else chr(buf[0])
        raise DataError(
            f"unknown one-letter genotype code {code!r} (marker row {row}, taxon column {j + 1})",
            p,
            "use IUPAC codes A C G T R Y S W K M N (N = missing) or two-letter calls",
        )
    return out


def read_hapmap(path: str | Path) -> GenotypeMatrix:
    """Read a TASSEL HapMap (.hmp.txt, gzip allowed): 11 fixed columns then one column per taxon.

    Calls may be two letters (``AA``, ``AG``, ``NN`` = missing) or IUPAC one letter (``A``, ``R`` = A/G,
    ``Y`` = C/T, ``S``, ``W``, ``K``, ``M``; ``N`` = missing). The counted allele is the second allele of
    the ``alleles`` column ("A/G" -> G); when that column is not of the form X/Y the alleles are taken from
    the calls (the most frequent one is the reference). Calls with an allele outside the two are set to
    missing (counted in ``notes``). CRLF line endings are fine.
    """
    p = Path(path)
    raw = _read_bytes(p).replace(b"\r", b"")
    lines = [ln for ln in raw.split(b"\n") if ln.strip()]
    if not lines:
        raise DataError("the HapMap file has no lines", p, "re-export it")
    cols = [c.strip() for c in lines[0].decode("utf-8", errors="replace").lstrip("\ufeff").split("\t")]
    if len(cols) < 12 or cols[0].lower() not in ("rs#", "rs", "snp", "marker") or cols[1].lower() != "alleles":
        raise DataError(
            "not a HapMap table: the header must start with 'rs#  alleles  chrom  pos' (tab-separated) and "
            "have 11 fixed columns before the taxa",
            p,
            "check the file (TASSEL: Export -> Hapmap) or pick the right format",
        )
    if len(lines) < 2:
        raise DataError("the HapMap file has a header but no marker rows", p, "re-export it")
    samples = _unique_ids(cols[11:], "sample (taxon)", p)
    n, m = len(samples), len(lines) - 1
    pairs = np.empty((m, n, 2), dtype=np.uint8)
    fixed: list[list[bytes]] = []
    for i, ln in enumerate(lines[1:]):
        parts = ln.rstrip(b" \t").split(b"\t", 11) if n > 0 else []
        if len(parts) < 12:
            raise DataError(
                f"marker row {i + 2} has {len(parts)} fields, fewer than the 11 fixed columns plus calls",
                p,
                "every row needs rs#, alleles, chrom, pos, ... and one call per taxon",
            )
        fixed.append(parts[:4])
        pairs[i] = _hapmap_calls(parts[11].upper(), n, i + 2, p)
    a1, a2 = pairs[..., 0], pairs[..., 1]
    is_missing = np.isin(a1, _MISSING_BYTES) | np.isin(a2, _MISSING_BYTES)
    alleles = np.array([f[1].decode("latin-1") for f in fixed], dtype=object)
    ref_c, alt_c, notes = _hapmap_alleles(alleles, a1, a2, is_missing)
    r, a = ref_c[:, None], alt_c[:, None]
    ok = ((a1 == r) | (a1 == a)) & ((a2 == r) | (a2 == a))
    foreign = ~is_missing & ~ok
    dos = (a1 == a).astype(np.int8) + (a2 == a).astype(np.int8)
    dos[is_missing | foreign] = MISSING
    if foreign.any():
        notes.append(f"{int(foreign.sum())} calls with an allele outside the marker's two alleles set to missing")
    pos = pd.to_numeric(pd.Series([f[3].decode("latin-1").strip() for f in fixed]), errors="coerce")
    if pos.isna().any():
        i = int(np.flatnonzero(pos.isna().to_numpy())[0])
        raise DataError(
            f"position (column 4) is not a number on marker row {i + 2}: {fixed[i][3].decode('latin-1')!r}",
            p,
            "column 4 of a HapMap file must be the base-pair position",
        )
    ids, renamed = _dedupe_marker_ids([f[0].decode("utf-8", errors="replace").strip() for f in fixed])
    if renamed:
        notes.append(f"{renamed} repeated marker IDs were suffixed _1, _2, ... to make them unique")
    markers = _markers_frame(
        ids,
        [f[2].decode("utf-8", errors="replace").strip() for f in fixed],
        pos.astype(np.int64),
        [chr(c) if c else "" for c in ref_c],
        [chr(c) if c else "" for c in alt_c],
    )
    notes.insert(0, "HapMap: counted allele = second allele of the 'alleles' column (e.g. G of A/G)")
    return GenotypeMatrix(
        calls=np.ascontiguousarray(dos.T),
        samples=samples,
        markers=markers,
        coding="dosage",
        source=str(p),
        notes=notes,
    )


def _hapmap_alleles(
    alleles: np.ndarray, a1: np.ndarray, a2: np.ndarray, missing: np.ndarray
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Reference and counted allele (as byte codes) per marker, from the alleles column or the calls."""
    m = len(alleles)
    ref = np.zeros(m, dtype=np.uint8)
    alt = np.zeros(m, dtype=np.uint8)
    from_calls = []
    for i, a in enumerate(alleles):
        parts = [x.strip().upper() for x in a.split("/")]
        if len(parts) == 2 and all(len(x) == 1 and x not in ("N", "") for x in parts):
            ref[i], alt[i] = ord(parts[0]), ord(parts[1])
        elif len(parts) == 1 and len(parts[0]) == 1 and parts[0] not in ("N", ""):
            ref[i] = ord(parts[0])  # monomorphic as declared
            from_calls.append(i)
        else:
            from_calls.append(i)
    notes: list[str] = []
    if from_calls:
        for i in from_calls:
            keep = ~missing[i]
            letters = np.concatenate([a1[i][keep], a2[i][keep]])
            letters = letters[(letters != 0) & (letters != ord("N"))]
            vals, cnt = np.unique(letters, return_counts=True)
            order = np.argsort(-cnt, kind="stable")
            vals = vals[order]
            if ref[i] == 0 and len(vals):
                ref[i] = vals[0]
            others = [v for v in vals if v != ref[i]]
            alt[i] = others[0] if others else 0
        notes.append(
            f"{len(from_calls)} markers without an 'X/Y' alleles entry: alleles taken from the calls "
            "(most frequent = reference)"
        )
    return ref, alt, notes


# --------------------------------------------------------------------------------------------------
# Numeric matrices
# --------------------------------------------------------------------------------------------------

_MAP_COLS = {"chrom": ("chrom", "chr", "chromosome", "#chrom"), "pos": ("pos", "position", "bp", "bp_position")}
_SAMPLE_WORDS = (
    "sample",
    "samples",
    "sample_id",
    "taxa",
    "taxon",
    "line",
    "lines",
    "genotype",
    "accession",
    "iid",
    "individual",
    "variety",
    "entry",
    "gid",
    "strain",
    "<marker>",
)
_MARKER_WORDS = ("marker", "markers", "marker_id", "snp", "snp_id", "rs", "rs#", "locus", "variant", "variant_id")
_ID_COLS = ("id", "marker", "marker_id", "snp", "rs", "rs#", "snp_id", "name")


def _sniff_sep(first_line: str) -> str | None:
    """Delimiter of a text table: ',' or tab when present, else None (any whitespace)."""
    if "\t" in first_line:
        return "\t"
    if "," in first_line:
        return ","
    if ";" in first_line and " " not in first_line:
        return ";"
    return None


def _split(line: str, sep: str | None) -> list[str]:
    return line.split(sep) if sep else line.split()


def _is_number(tok: str) -> bool:
    t = tok.strip().strip('"')
    if t in _NA_STRINGS:
        return True
    try:
        float(t)
    except ValueError:
        return False
    return True


def read_numeric(
    path: str | Path,
    *,
    orientation: str = "auto",
    samples_in_first_column: bool | None = None,
    marker_map: str | Path | None = None,
    sample_ids: Collection[str] | None = None,
) -> GenotypeMatrix:
    """Read a numeric genotype matrix (CSV, TSV or whitespace-separated; gzip allowed).

    - Header row: detected (a first row with non-numeric cells); without one, IDs are made up.
    - Row IDs: a non-numeric first column (or ``samples_in_first_column`` given).
    - Orientation "auto", in this order: ``samples_in_first_column`` when given; markers x samples when
      the leading columns are a marker map (chrom/pos); the axis whose IDs join ``sample_ids`` (the
      phenotype table's IDs) is the sample axis; the first header cell (sample/taxa/line/... ->
      samples are rows, marker/snp/rs#/... -> markers are rows); else markers x samples when there are
      more rows than columns (marker panels usually outnumber lines). The choice is written to ``notes``.
    - Values: 0/1/2 dosages; -1/0/1 is recoded to 0/1/2; 0/1 only is kept as binary. Missing: NA, empty,
      ".", "?", -9.
    - Synthesised IDs: samples "S1".., markers "M1"...
    """
    p = Path(path)
    if orientation not in ORIENTATIONS:
        raise DataError(f"unknown orientation {orientation!r}", p, f"use one of {', '.join(ORIENTATIONS)}")
    text = _read_text(p)
    numbered = [(i + 1, ln) for i, ln in enumerate(text.split("\n")) if ln.strip() and not ln.startswith("#")]
    lines = [ln for _, ln in numbered]
    if not lines:
        raise DataError("the file has no data lines", p, "give a matrix with one row per sample or marker")
    sep = _sniff_sep(lines[0])
    first = [t.strip().strip('"') for t in _split(lines[0], sep)]
    n_first_num = sum(_is_number(t) for t in first[1:])
    has_header = n_first_num < max(1, (len(first) - 1) // 2) or (len(first) == 1 and not _is_number(first[0]))
    body = lines[1:] if has_header else lines
    linenos = np.array([n for n, _ in numbered[1:]] if has_header else [n for n, _ in numbered], dtype=np.int64)
    if not body:
        raise DataError("the file has a header but no data rows", p, "give at least one data row")
    # Field counts per line: ragged files are rejected with the first bad line.
    if sep:
        counts = np.fromiter((ln.count(sep) + 1 for ln in body), dtype=np.int64, count=len(body))
    else:
        counts = np.fromiter((len(ln.split()) for ln in body), dtype=np.int64, count=len(body))
    width = int(np.bincount(counts).argmax())
    if (counts != width).any():
        i = int(np.flatnonzero(counts != width)[0])
        raise DataError(
            f"ragged matrix: line {linenos[i]} has {counts[i]} fields, most lines have {width}",
            p,
            "every row must have the same number of values; fix or remove the broken line",
        )
    sample_row = [t.strip().strip('"') for t in _split(body[0], sep)]
    # Leading non-numeric / map columns.
    header = first if has_header else None
    if header is not None and len(header) == width - 1:
        header = ["", *header]  # R-style header without a corner cell
    if header is not None and len(header) != width:
        raise DataError(
            f"the header names {len(header)} columns but the data rows have {width} values",
            p,
            "make the header and the rows the same length (check the delimiter)",
        )
    lead = 0
    map_cols: dict[str, int] = {}
    if header is not None:
        low = [h.lower() for h in header]
        for key, names in _MAP_COLS.items():
            for j, h in enumerate(low[:6]):
                if h in names:
                    map_cols[key] = j
        if map_cols:
            id_j = next((j for j, h in enumerate(low[:6]) if h in _ID_COLS), None)
            if id_j is not None:
                map_cols["id"] = id_j
            for key, names in (("ref", ("ref", "a2", "allele2")), ("alt", ("alt", "a1", "allele1"))):
                j = next((j for j, h in enumerate(low[:8]) if h in names), None)
                if j is not None:
                    map_cols[key] = j
            if "alleles" in low[:8]:
                map_cols["alleles"] = low.index("alleles")
            lead = max(map_cols.values()) + 1
    why = ""
    if lead == 0:
        first_is_text = not _is_number(sample_row[0])
        # A header naming the first column as an ID column means row IDs even when they are numbers.
        id_header = header is not None and header[0].strip().lower() in (*_SAMPLE_WORDS, *_MARKER_WORDS, "id", "")
        if samples_in_first_column is False and not first_is_text:
            id_header = False
        lead = 1 if (samples_in_first_column or first_is_text or id_header) else 0
        if orientation == "auto" and samples_in_first_column is not None and lead:
            # The caller says what the first column is: sample IDs -> samples are rows; not samples but
            # text -> marker IDs -> markers are rows.
            orientation = "samples_x_markers" if samples_in_first_column else "markers_x_samples"
            why = "samples_in_first_column=" + str(samples_in_first_column)
    if lead and orientation == "auto" and map_cols:
        orientation = "markers_x_samples"
        why = "marker map columns"
    if orientation == "auto" and header is not None and lead and sample_ids:
        orientation, why = _orientation_from_ids(body, sep, header[lead:], sample_ids)
    if orientation == "auto" and header is not None and lead:
        corner = header[0].strip().lower()
        if corner in _SAMPLE_WORDS:
            orientation, why = "samples_x_markers", f"first header cell {header[0]!r}"
        elif corner in _MARKER_WORDS:
            orientation, why = "markers_x_samples", f"first header cell {header[0]!r}"
    if width - lead < 1:
        raise DataError("no value columns after the ID column(s)", p, "check the delimiter and the layout")
    vals, lead_vals = _parse_values(body, sep, lead, width, p, linenos)
    row_ids = [str(v) for v in lead_vals[0]] if lead else None
    col_ids = [h for h in header[lead:]] if header is not None else None
    n_rows, n_cols = vals.shape
    notes: list[str] = []
    if not why and orientation != "auto":
        why = "the orientation chosen"
    if why:
        pretty = orientation.replace("_x_", " x ")
        notes.append(f"orientation: {pretty} (from {why})")
    if orientation == "auto":
        if n_rows > n_cols:
            orientation = "markers_x_samples"
            notes.append(
                f"orientation: markers x samples (from the shape: {n_rows} rows > {n_cols} columns); "
                "if wrong, choose samples x markers (--orientation samples_x_markers)"
            )
        else:
            orientation = "samples_x_markers"
            notes.append(
                f"orientation: samples x markers (from the shape: {n_rows} rows <= {n_cols} columns); "
                "if wrong, choose markers x samples (--orientation markers_x_samples)"
            )
    calls, coding, code_notes = _recode(vals, p, linenos, lead, orientation)
    notes.extend(code_notes)
    if orientation == "markers_x_samples":
        calls = np.ascontiguousarray(calls.T)
        sample_ids, marker_ids = col_ids, row_ids
    else:
        sample_ids, marker_ids = row_ids, col_ids
    n, m = calls.shape
    if sample_ids is None:
        sample_ids = [f"S{i + 1}" for i in range(n)]
        notes.append(f"no sample IDs in the file: named S1..S{n} in row order")
    if marker_ids is None:
        marker_ids = [f"M{j + 1}" for j in range(m)]
        notes.append(f"no marker IDs in the file: named M1..M{m} in column order")
    sample_ids = _unique_ids(sample_ids, "sample", p)
    marker_ids, renamed = _dedupe_marker_ids([s.strip() for s in marker_ids])
    if renamed:
        notes.append(f"{renamed} repeated marker IDs were suffixed _1, _2, ... to make them unique")
    chrom = [""] * m
    pos = np.full(m, -1, dtype=np.int64)
    ref = [""] * m
    alt = [""] * m
    if map_cols and orientation == "markers_x_samples":
        if "id" in map_cols:
            marker_ids, _ = _dedupe_marker_ids([str(v) for v in lead_vals[map_cols["id"]]])
        chrom = [str(v) for v in lead_vals[map_cols["chrom"]]] if "chrom" in map_cols else chrom
        if "pos" in map_cols:
            pp = pd.to_numeric(pd.Series(lead_vals[map_cols["pos"]]), errors="coerce")
            pos = pp.fillna(-1).astype(np.int64).to_numpy()
        if "alleles" in map_cols:
            al = [str(v).split("/") for v in lead_vals[map_cols["alleles"]]]
            ref = [a[0] if len(a) == 2 else "" for a in al]
            alt = [a[1] if len(a) == 2 else "" for a in al]
        ref = [str(v) for v in lead_vals[map_cols["ref"]]] if "ref" in map_cols else ref
        alt = [str(v) for v in lead_vals[map_cols["alt"]]] if "alt" in map_cols else alt
        notes.append("marker map taken from the leading columns (" + ", ".join(sorted(map_cols)) + ")")
    markers = _markers_frame(marker_ids, chrom, pos, ref, alt)
    geno = GenotypeMatrix(calls=calls, samples=sample_ids, markers=markers, coding=coding, source=str(p), notes=notes)
    _attach_marker_map(geno, p, marker_map)
    return geno


def _orientation_from_ids(
    body: list[str], sep: str | None, col_ids: list[str], sample_ids: Collection[str]
) -> tuple[str, str]:
    """("samples_x_markers" | "markers_x_samples" | "auto", why) from which axis's IDs are phenotype IDs."""
    want = {str(x).strip() for x in sample_ids}
    row_ids = [(ln.split(sep, 1) if sep else ln.split(None, 1))[0].strip().strip('"') for ln in body]
    n_rows = sum(r in want for r in row_ids)
    n_cols = sum(c.strip() in want for c in col_ids)
    if n_rows == n_cols:  # no evidence either way (or a tie): the next rules decide
        return "auto", ""
    if n_rows > n_cols:
        return "samples_x_markers", f"the phenotype join: {n_rows} row IDs are phenotype IDs, {n_cols} column IDs"
    return "markers_x_samples", f"the phenotype join: {n_cols} column IDs are phenotype IDs, {n_rows} row IDs"


def _parse_values(
    body: list[str], sep: str | None, lead: int, width: int, p: Path, linenos: np.ndarray
) -> tuple[np.ndarray, list[list[str]]]:
    """Parse the value block to float32 (NaN = missing) and return the leading columns as strings.

    The values are parsed as ONE column (one token per line) by pandas' C parser: a wide genotype matrix
    (e.g. 374 x 36,901) would otherwise cost pandas a Series per column.
    """
    n_val = width - lead
    if lead:
        parts = [ln.split(sep, lead) if sep else ln.split(None, lead) for ln in body]
        lead_vals = [[x[j].strip().strip('"') for x in parts] for j in range(lead)]
        rests = [x[lead].strip() if len(x) > lead else "" for x in parts]
    else:
        lead_vals = []
        rests = [ln.strip() for ln in body]
    block = "\n".join(rests)
    block = block.replace(sep, "\n") if sep else re.sub(r"[ \t]+", "\n", block)
    kw = {
        "header": None,
        "names": ["v"],
        "na_values": _NA_STRINGS,
        "keep_default_na": False,
        "skip_blank_lines": False,
        "engine": "c",
        "skipinitialspace": True,
        "sep": "\x1f",
        "quoting": csv.QUOTE_NONE,
    }
    try:
        col = pd.read_csv(io.StringIO(block + "\n"), dtype=np.float32, **kw)["v"]
    except ValueError:
        try:
            col = pd.read_csv(io.StringIO(block + "\n"), dtype=str, **kw)["v"]
        except Exception as exc:
            raise DataError(
                f"cannot parse the matrix ({exc})", p, "check the delimiter and that all values are numbers"
            ) from None
    if len(col) != len(body) * n_val:
        raise DataError(
            f"found {len(col)} values, expected {len(body)} rows x {n_val} columns",
            p,
            "check quoting and the delimiter (one value per field)",
        )
    if not np.issubdtype(col.dtype, np.number):
        stripped = col.str.strip().str.strip('"').str.strip("'")
        is_na = stripped.isin(_NA_STRINGS) | col.isna()
        num = pd.to_numeric(stripped.where(~is_na), errors="coerce")
        bad = num.isna().to_numpy() & ~is_na.to_numpy()
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            i, j = divmod(k, n_val)
            raise DataError(
                f"non-numeric value {col.iloc[k]!r} at line {linenos[i]}, column {j + lead + 1}",
                p,
                "genotype matrices must hold numbers 0/1/2 (or -1/0/1); write missing calls as NA or -9",
            )
        col = num
    return col.to_numpy(dtype=np.float32).reshape(len(body), n_val), lead_vals


def _recode(
    vals: np.ndarray, p: Path, linenos: np.ndarray, lead: int, orientation: str
) -> tuple[np.ndarray, str, list[str]]:
    """Map float values to int8 calls: 0/1/2 as is, -1/0/1 -> 0/1/2, 0/1 only -> binary."""
    miss = np.isnan(vals) | (vals == -9)
    present = vals[~miss]
    notes: list[str] = []
    uniq = np.unique(present)
    allowed = {-1.0, 0.0, 1.0, 2.0}
    bad = [v for v in uniq if float(v) not in allowed]
    if bad:
        i, j = np.argwhere(np.isin(vals, bad))[0]  # the first bad cell in file order, and ITS value
        raise DataError(
            f"value {vals[i, j]:g} at line {linenos[i]}, column {j + lead + 1} is not a "
            f"genotype code (found values: {', '.join(f'{v:g}' for v in uniq[:10])})",
            p,
            "use 0/1/2 allele counts or -1/0/1 (missing as NA or -9); round imputed dosages first"
            + (
                "; if the first column holds numeric sample IDs, give it a header word such as 'ID'"
                if lead == 0 and j == 0
                else ""
            ),
        )
    s = {float(v) for v in uniq}
    calls = np.where(miss, 0, vals).astype(np.int8)
    coding = "dosage"
    if -1.0 in s:
        if 2.0 in s:
            raise DataError(
                "the matrix mixes -1 and 2, so it is neither 0/1/2 nor -1/0/1 coded",
                p,
                "recode all values to 0/1/2 (or all to -1/0/1)",
            )
        calls += 1
        notes.append("values were coded -1/0/1: recoded to 0/1/2 (+1)")
    elif s <= {0.0, 1.0}:
        coding = "binary"
        notes.append("only 0/1 values: treated as binary presence/absence markers (coding='binary', kept 0/1)")
    calls[miss] = MISSING
    return calls, coding, notes


def _attach_marker_map(geno: GenotypeMatrix, p: Path, marker_map: str | Path | None) -> None:
    """Fill chrom/pos/ref/alt from a marker map table (given or found beside ``p``)."""
    explicit = marker_map is not None
    if explicit:
        candidates = [Path(marker_map)]  # type: ignore[arg-type]
    else:
        stem = p.name.split(".")[0]
        candidates = [p.with_name(f"{stem}_map.csv"), p.with_name(f"{stem}.map.csv"), p.with_name("marker_map.csv")]
        candidates = [c for c in candidates if c.is_file()]
        if not candidates:
            return
    mp = candidates[0]
    if not mp.is_file():
        raise DataError("marker map file not found", mp, "check the path")
    text = _read_text(mp)
    try:
        df = pd.read_csv(io.StringIO(text), sep=_sniff_sep(text.split("\n", 1)[0]) or r"\s+", dtype=str)
    except Exception as exc:
        raise DataError(f"cannot parse the marker map ({exc})", mp, "give a CSV with columns id, chrom, pos") from None
    low = {c.lower().strip(): c for c in df.columns}
    idc = next((low[k] for k in _ID_COLS if k in low), None)
    chc = next((low[k] for k in _MAP_COLS["chrom"] if k in low), None)
    poc = next((low[k] for k in _MAP_COLS["pos"] if k in low), None)
    if idc is None or chc is None or poc is None:
        if not explicit:
            return
        raise DataError(
            f"the marker map needs columns id, chrom, pos (found: {', '.join(df.columns)})",
            mp,
            "rename the columns to id, chrom, pos",
        )
    table = df.set_index(df[idc].str.strip())
    ids = geno.markers["id"]
    found = ids.isin(table.index)
    if not found.all():
        if not explicit:
            return
        raise DataError(
            f"{int((~found).sum())} markers are not in the marker map, e.g. {', '.join(ids[~found].head(3))}",
            mp,
            "give a map listing every marker ID",
        )
    t = table.loc[ids]
    geno.markers["chrom"] = t[chc].astype(str).to_numpy()
    geno.markers["pos"] = pd.to_numeric(t[poc], errors="coerce").fillna(-1).astype(np.int64).to_numpy()
    for key in ("ref", "alt"):
        if key in low:
            geno.markers[key] = t[low[key]].fillna("").astype(str).to_numpy()
    geno.notes.append(f"marker positions from {mp.name}")
