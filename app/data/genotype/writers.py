"""Write a :class:`GenotypeMatrix` as numeric CSV, VCF, HapMap or PLINK (round-trips with the readers).

Used to export QC'd genotypes and to make small test files in every format from one matrix. All writes are
atomic (temporary file, then rename). The counted allele (``markers.alt``) is kept: VCF ALT, HapMap second
allele, PLINK A1.
"""

from __future__ import annotations

import gzip
import os
import tempfile
from pathlib import Path

import numpy as np

from app.data.atomic import write_bytes_atomic, write_text_atomic
from app.data.genotype.types import MISSING, GenotypeMatrix

__all__ = ["write_genotypes", "write_hapmap", "write_numeric", "write_plink", "write_vcf"]


def _classes(geno: GenotypeMatrix) -> np.ndarray:
    """Calls as 0/1/2/3 (3 = missing); binary 0/1 markers written as 0/2 (homozygous)."""
    c = np.where(geno.calls == MISSING, 3, geno.calls).astype(np.int8)
    if geno.coding == "binary":
        c = np.where(c == 1, 2, c)
    return c


def _alleles(geno: GenotypeMatrix) -> tuple[list[str], list[str]]:
    """(ref, alt) per marker; unknown alleles become A/B placeholders so the files stay valid."""
    ref = [str(a) if str(a) else "A" for a in geno.markers["ref"]]
    alt = [str(a) if str(a) else ("B" if r != "B" else "C") for a, r in zip(geno.markers["alt"], ref, strict=True)]
    return ref, alt


def write_plink(geno: GenotypeMatrix, prefix: str | Path) -> Path:
    """PLINK 1 binary .bed/.bim/.fam (A1 = ``alt``, the counted allele; FID 0); returns the .bed path.

    The three files are written in a temporary folder beside the target, then renamed into place.
    """
    from bed_reader import to_bed

    prefix = Path(prefix)
    if prefix.name.lower().endswith(".bed"):
        prefix = prefix.with_name(prefix.name[:-4])
    prefix.parent.mkdir(parents=True, exist_ok=True)
    val = geno.calls.astype(np.float32)
    if geno.coding == "binary":
        val = val * 2  # presence/absence of an inbred -> homozygous
    val[geno.calls == MISSING] = np.nan
    m = geno.markers
    ref, alt = _alleles(geno)
    props = {
        "fid": ["0"] * geno.n_samples,
        "iid": list(geno.samples),
        "sid": [str(x) for x in m["id"]],
        "chromosome": [str(c) or "0" for c in m["chrom"]],
        "bp_position": [max(int(x), 0) for x in m["pos"]],
        "allele_1": alt,
        "allele_2": ref,
    }
    with tempfile.TemporaryDirectory(dir=prefix.parent, prefix=".tmp-plink-") as tmp:
        tmp_bed = Path(tmp) / "x.bed"
        to_bed(tmp_bed, val, properties=props, count_A1=True)
        for ext in (".bim", ".fam", ".bed"):  # .bed last: readers see a complete set once it exists
            os.replace(tmp_bed.with_suffix(ext), prefix.with_name(prefix.name + ext))
    return prefix.with_name(prefix.name + ".bed")


def write_numeric(geno: GenotypeMatrix, path: str | Path, *, with_map: bool = True) -> Path:
    """CSV samples x markers (first column ``id``, header = marker IDs, ``NA`` = missing).

    With ``with_map`` a ``<stem>_map.csv`` (id, chrom, pos, ref, alt) is written beside it, which
    :func:`read_genotypes` picks up. Binary matrices are written 0/1 as stored.
    """
    path = Path(path)
    codes = np.array(["0", "1", "2", "NA"])
    cls = np.where(geno.calls == MISSING, 3, geno.calls)
    lines = ["id," + ",".join(map(str, geno.markers["id"]))]
    lines += [f"{s}," + ",".join(codes[row]) for s, row in zip(geno.samples, cls, strict=True)]
    write_text_atomic(path, "\n".join(lines) + "\n")
    if with_map:
        stem = path.name.split(".")[0]
        write_text_atomic(path.with_name(f"{stem}_map.csv"), geno.markers.to_csv(index=False, lineterminator="\n"))
    return path


def write_vcf(geno: GenotypeMatrix, path: str | Path) -> Path:
    """VCF 4.2 with unphased GT (0/0, 0/1, 1/1, ./.); gzip-compressed when the name ends with .gz."""
    path = Path(path)
    ref, alt = _alleles(geno)
    gts = np.array(["0/0", "0/1", "1/1", "./."])
    cls = _classes(geno)
    m = geno.markers
    chroms = [str(c) if str(c) else "0" for c in m["chrom"]]
    head = ["##fileformat=VCFv4.2", '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">']
    head += [f"##contig=<ID={c}>" for c in dict.fromkeys(chroms)]
    head.append("#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\t" + "\t".join(geno.samples))
    body = [
        f"{chroms[j]}\t{max(int(m['pos'].iat[j]), 1)}\t{m['id'].iat[j]}\t{ref[j]}\t{alt[j]}\t.\tPASS\t.\tGT\t"
        + "\t".join(gts[cls[:, j]])
        for j in range(geno.n_markers)
    ]
    text = "\n".join(head + body) + "\n"
    if path.name.endswith(".gz"):
        write_bytes_atomic(path, gzip.compress(text.encode(), compresslevel=6, mtime=0))
    else:
        write_text_atomic(path, text)
    return path


def write_hapmap(geno: GenotypeMatrix, path: str | Path) -> Path:
    """TASSEL HapMap with two-letter calls (``NN`` = missing); alleles column ``REF/ALT``."""
    path = Path(path)
    ref, alt = _alleles(geno)
    cls = _classes(geno)
    m = geno.markers
    fixed = "rs#\talleles\tchrom\tpos\tstrand\tassembly#\tcenter\tprotLSID\tassayLSID\tpanel\tQCcode"
    lines = [fixed + "\t" + "\t".join(geno.samples)]
    for j in range(geno.n_markers):
        a, b = ref[j], alt[j]
        calls = np.array([a + a, a + b, b + b, "NN"])
        lines.append(
            f"{m['id'].iat[j]}\t{a}/{b}\t{m['chrom'].iat[j] or 0}\t{max(int(m['pos'].iat[j]), 0)}\t+\tNA\tNA\tNA\tNA"
            "\tNA\tNA\t" + "\t".join(calls[cls[:, j]])
        )
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path


def write_genotypes(geno: GenotypeMatrix, path: str | Path, fmt: str = "auto") -> Path:
    """Write in the format named by ``fmt`` or by the file name (.csv, .vcf(.gz), .hmp.txt, .bed/prefix)."""
    p = Path(path)
    name = p.name.lower()
    if fmt == "auto":
        if name.endswith((".vcf", ".vcf.gz")):
            fmt = "vcf"
        elif name.endswith(".hmp.txt"):
            fmt = "hapmap"
        elif name.endswith((".csv", ".tsv", ".txt")):
            fmt = "numeric"
        else:
            fmt = "plink"
    if fmt == "vcf":
        return write_vcf(geno, p)
    if fmt == "hapmap":
        return write_hapmap(geno, p)
    if fmt == "numeric":
        return write_numeric(geno, p)
    if fmt == "plink":
        prefix = p.with_suffix("") if name.endswith(".bed") else p
        return write_plink(geno, prefix)
    from app.data.errors import DataError

    raise DataError(f"unknown genotype format {fmt!r}", p, "use auto, numeric, vcf, hapmap or plink")
