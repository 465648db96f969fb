"""``python -m app inspect PATH``: what a data file holds and what is wrong with it, in plain words.

Single-cell data (.h5ad opened backed, so X is never loaded whole), genotypes (with QC and an optional
phenotype join) and phenotype tables. ``--json`` prints one JSON object with at least ``kind``, ``n_obs``,
``n_vars``, ``value_type``, ``id_type``, ``columns`` and ``problems``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from app.data.jsonsafe import dumps

ORIENTATIONS = ("auto", "genes_x_cells", "cells_x_genes", "samples_x_markers", "markers_x_samples")
MAX_SHOWN = 5


def register(subparsers: Any) -> None:
    """Add the ``inspect`` subcommand."""
    p = subparsers.add_parser(
        "inspect", help="describe a data file: kind, shape, values, IDs, labels/traits, QC and problems",
        description="Describe a single-cell, genotype or phenotype file and list every problem found.")
    p.add_argument("path", help="a file or 10x folder (.h5ad, .h5, .loom, matrix folder, .csv/.tsv, .bed, "
                                ".vcf(.gz), .hmp.txt, ...)")
    p.add_argument("--labels", metavar="FILE", help="single-cell: a cell labels table joined by cell ID")
    p.add_argument("--label-key", metavar="COLUMN", help="single-cell: the label column")
    p.add_argument("--vocab", metavar="PATH",
                   help="single-cell: a model folder or vocab.txt; report how many of the data's genes it knows")
    p.add_argument("--gene-map", metavar="FILE",
                   help="single-cell: two-column ID table (e.g. Ensembl ID -> symbol) used with --vocab")
    p.add_argument("--pheno", metavar="FILE", help="genotypes: a phenotype table joined by sample ID")
    p.add_argument("--trait", metavar="NAME", help="genotypes: the trait to report on (default: all)")
    p.add_argument("--orientation", choices=ORIENTATIONS, default="auto",
                   help="text matrices: which way round the table is (default: detect)")
    p.add_argument("--min-call-rate", type=float, default=0.9, help="genotype QC: marker call rate (0.9)")
    p.add_argument("--min-maf", type=float, default=0.01, help="genotype QC: minor-allele frequency (0.01)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Inspect ``args.path``; print text or JSON; return 0 (DataError propagates to the CLI's handler)."""
    from app.data.sniff import detect_kind

    kind = detect_kind(args.path)
    # A small text matrix can be ambiguous; options only one kind takes settle it.
    sc_hint = args.labels or args.label_key or args.orientation in ("genes_x_cells", "cells_x_genes")
    geno_hint = args.pheno or args.trait or args.orientation in ("samples_x_markers", "markers_x_samples")
    if kind == "phenotype" and sc_hint and not geno_hint:
        kind = "singlecell"
    elif kind == "phenotype" and geno_hint and not sc_hint:
        kind = "genotype"
    if kind == "singlecell":
        out = inspect_singlecell(args)
    elif kind == "genotype":
        out = inspect_genotype(args)
    else:
        out = inspect_phenotype(args)
    if args.json:
        print(dumps(out["json"], ensure_ascii=False))
    else:
        print(out["text"])
    return 0


# --------------------------------------------------------------------------------------------------
# single-cell
# --------------------------------------------------------------------------------------------------
def inspect_singlecell(args: argparse.Namespace) -> dict[str, Any]:
    """Summary of a single-cell dataset. An .h5ad is opened backed: only row blocks of X are read."""
    from app.data.singlecell import read_singlecell, summarise_singlecell
    from app.data.singlecell.read import format_of

    orientation = args.orientation if args.orientation in ("auto", "genes_x_cells", "cells_x_genes") else "auto"
    backed = format_of(args.path) == "h5ad"
    adata = read_singlecell(args.path, orientation=orientation, labels=args.labels,
                            label_key=args.label_key, backed=backed)
    try:
        s = summarise_singlecell(adata, path=args.path)
    finally:
        if backed and getattr(adata, "file", None) is not None:
            adata.file.close()
    d = s.to_dict()
    j = {"kind": "singlecell", "path": str(args.path), "n_obs": s.n_cells, "n_vars": s.n_genes,
         "value_type": s.value_kind, "id_type": s.id_type, "columns": s.label_columns,
         "problems": list(s.problems), "notes": list(s.notes), "summary": d}
    text = s.to_text()
    if args.vocab:
        from app.data.singlecell import gene_id_map

        own_ids = gene_id_map(adata)  # e.g. 10x var['gene_ids']: Ensembl beside the symbols
        gm = gene_match(list(map(str, adata.var_names)), args.vocab, args.gene_map, own_ids)
        j["gene_match"] = gm.to_dict()
        text += "\n  Model gene list (" + str(args.vocab) + "):\n" + "\n".join(
            f"    {ln}" for ln in gm.to_text().splitlines())
        if gm.match_rate < 0.5 and gm.vocab_coverage < 0.5:
            j["problems"].append(f"Only {gm.match_rate:.1%} of the genes are in the model's gene list; see "
                                 "gene_match for the advice.")
    return {"json": j, "text": text}


def read_vocab(path: str | Path) -> list[str]:
    """A model's gene list: ``vocab.txt`` (one gene per line) or a model folder holding one."""
    from app.data.errors import DataError

    p = Path(path)
    if p.is_dir():
        p = p / "vocab.txt"
    if not p.is_file():
        raise DataError("no gene list (vocab.txt) found", p,
                        "Give a model folder (with vocab.txt) or a text file with one gene name per line.")
    genes = [ln.strip() for ln in p.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    if not genes:
        raise DataError("the gene list is empty", p, "Give a vocab.txt with one gene name per line.")
    return genes


def gene_match(data_genes: list[str], vocab_path: str | Path, gene_map: str | Path | None = None,
               own_ids: dict[str, str] | None = None) -> Any:
    """Harmonise the data's genes with a model's vocab.txt, via the data's own second ID column and/or an ID
    table when direct matching misses (the table wins where both name a gene)."""
    from app.data.singlecell import harmonise_genes, read_gene_map

    idmap = dict(own_ids or {})
    if gene_map:
        idmap.update(read_gene_map(gene_map))
    return harmonise_genes(data_genes, read_vocab(vocab_path), id_map=idmap or None)


# --------------------------------------------------------------------------------------------------
# genotypes and phenotypes
# --------------------------------------------------------------------------------------------------
def _trait_summaries(pheno: Any) -> dict[str, dict[str, Any]]:
    """Numeric trait -> n, missing, mean, sd, min, max; text column -> class counts."""
    import pandas as pd

    out: dict[str, dict[str, Any]] = {}
    for c in pheno.columns:
        col = pheno[c]
        if pd.api.types.is_numeric_dtype(col):
            v = col.to_numpy(dtype=float)
            ok = v[np.isfinite(v)]
            out[str(c)] = {"n": int(ok.size), "missing": int(v.size - ok.size),
                           "mean": float(ok.mean()) if ok.size else None,
                           "sd": float(ok.std(ddof=1)) if ok.size > 1 else None,
                           "min": float(ok.min()) if ok.size else None, "max": float(ok.max()) if ok.size else None}
        else:
            vc = col.astype(object).where(col.notna(), "(missing)").value_counts()
            if len(vc) <= 100:
                out[str(c)] = {str(k): int(v) for k, v in vc.items()}
    return out


def _traits_text(traits: dict[str, dict[str, Any]]) -> list[str]:
    lines = []
    for name, t in traits.items():
        if "mean" in t and "n" in t:
            if t["n"]:
                lines.append(f"    {name}: {t['n']} values (mean {t['mean']:.4g}, range {t['min']:.4g} to "
                             f"{t['max']:.4g}), {t['missing']} missing")
            else:
                lines.append(f"    {name}: no values ({t['missing']} missing)")
        else:
            lines.append(f"    {name}: " + ", ".join(f"{k} {v}" for k, v in list(t.items())[:8]))
    return lines


def _marker_id_type(ids: list[str]) -> str:
    if not ids:
        return "unknown"
    rs = sum(1 for x in ids if x.lower().startswith("rs") and x[2:].isdigit())
    return "rsid" if rs >= 0.5 * len(ids) else "marker_id"


def inspect_genotype(args: argparse.Namespace) -> dict[str, Any]:
    """Genotype summary: shape, coding, missing calls, QC steps, and the phenotype join when given."""
    from app.data import genotype as gt

    orient = args.orientation if args.orientation in ("samples_x_markers", "markers_x_samples") else "auto"
    pheno_path = args.pheno or args.labels
    pheno = gt.read_phenotypes(pheno_path) if pheno_path else None
    # with a phenotype table, a numeric matrix's sample axis is the one whose IDs join it
    geno = gt.read_genotypes(args.path, numeric_orientation=orient,
                             sample_ids=gt.pheno_id_candidates(pheno) if pheno is not None else None)
    gt.check_informative(geno, "this file")
    _, qc = gt.run_qc(geno, min_call_rate=args.min_call_rate, min_maf=args.min_maf)
    calls = geno.calls
    missing = float((calls == -9).mean()) if calls.size else 0.0
    problems: list[str] = []
    notes = list(geno.notes)
    for step in qc.steps:
        if step["removed"]:
            problems.append(f"QC step '{step['name']}' ({step['threshold']}) would remove {step['removed']:,} of "
                            f"{step['before']:,} {step['unit']}; they are left out of training.")
    if missing > 0.05:
        problems.append(f"{missing:.1%} of the calls are missing; they are filled with the marker mean for the "
                        "models. Consider imputing them with a dedicated tool (e.g. Beagle) first.")
    traits: dict[str, dict[str, Any]] = {}
    join_d = None
    join_text = ""
    if pheno is not None:
        rep = gt.join_phenotypes(geno, pheno, trait=args.trait)
        join_d, join_text = rep.to_dict(), rep.to_text()
        sub = pheno.loc[[r for r in rep.pheno_rows]] if rep.pheno_rows else pheno
        join_col = rep.how[len("column "):] if rep.how.startswith("column ") else None
        cols = [args.trait] if args.trait else [c for c in pheno.columns if c != join_col]
        traits = _trait_summaries(sub[cols])
        if rep.geno_only:
            problems.append(f"{len(rep.geno_only):,} genotyped samples have no phenotype row (e.g. "
                            f"{', '.join(rep.geno_only[:3])}); they can be predicted but not used for training.")
        if rep.pheno_only:
            problems.append(f"{len(rep.pheno_only):,} phenotype rows have no genotypes (e.g. "
                            f"{', '.join(rep.pheno_only[:3])}); they are ignored. Check the sample IDs.")
        gaps = {name: t["missing"] for name, t in traits.items() if t.get("missing")}
        if gaps:
            shown = ", ".join(f"{k} ({v:,})" for k, v in list(gaps.items())[:8])
            more = f" and {len(gaps) - 8} more" if len(gaps) > 8 else ""
            problems.append(f"{len(gaps)} trait(s) have missing values among the joined samples: {shown}{more}. "
                            "Samples without a value are left out when training on that trait.")
    ids = list(map(str, geno.markers["id"])) if "id" in geno.markers else []
    coding = "0/1 presence/absence" if geno.coding == "binary" else "0/1/2 (copies of the alternative allele)"
    chroms = geno.markers["chrom"].astype(str).nunique() if "chrom" in geno.markers else 0
    text = [f"Genotype data: {Path(args.path).name}",
            f"  {geno.n_samples:,} samples x {geno.n_markers:,} markers on {chroms} chromosome(s), coded {coding}",
            f"  Missing calls: {missing:.2%}",
            f"  Samples: {', '.join(geno.samples[:MAX_SHOWN])}{', ...' if geno.n_samples > MAX_SHOWN else ''}",
            "  QC:"]
    text += [f"    {ln}" for ln in qc.to_text().splitlines()]
    if pheno_path:
        text.append(f"  Phenotypes ({Path(pheno_path).name}):")
        text += [f"    {ln}" for ln in join_text.splitlines()]
        if traits:
            text.append("  Traits (joined samples):")
            text += _traits_text(traits)
    text.append("  Problems:" if problems else "  Problems: none found")
    text += [f"    - {p}" for p in problems]
    if notes:
        text.append("  Notes:")
        text += [f"    - {n}" for n in notes]
    j = {"kind": "genotype", "path": str(args.path), "n_obs": geno.n_samples, "n_vars": geno.n_markers,
         "value_type": geno.coding, "id_type": _marker_id_type(ids), "columns": traits, "problems": problems,
         "notes": notes, "missing_rate": missing, "qc": qc.to_dict(), "join": join_d,
         "n_chromosomes": int(chroms)}
    return {"json": j, "text": "\n".join(text)}


def inspect_phenotype(args: argparse.Namespace) -> dict[str, Any]:
    """A phenotype/trait table on its own: rows, columns and a summary of each."""
    from app.data.genotype import read_phenotypes

    pheno = read_phenotypes(args.path)
    traits = _trait_summaries(pheno)
    gaps = {k: v["missing"] for k, v in traits.items() if v.get("missing")}
    problems = ([f"{len(gaps)} column(s) have missing values: " + ", ".join(f"{k} ({v:,})" for k, v in gaps.items())
                 + ". Samples without a value are left out when training on that trait."] if gaps else [])
    notes = list(pheno.attrs.get("notes", []) or [])
    text = [f"Phenotype table: {Path(args.path).name}",
            f"  {len(pheno):,} samples x {pheno.shape[1]:,} columns",
            f"  Sample IDs: {', '.join(map(str, pheno.index[:MAX_SHOWN]))}{', ...' if len(pheno) > MAX_SHOWN else ''}",
            "  Columns:", *_traits_text(traits)]
    text.append("  Problems:" if problems else "  Problems: none found")
    text += [f"    - {p}" for p in problems]
    text += ["  Notes:", *[f"    - {n}" for n in notes]] if notes else []
    text.append("  (To use it, pass it with --pheno next to a genotype file.)")
    j = {"kind": "phenotype", "path": str(args.path), "n_obs": len(pheno), "n_vars": int(pheno.shape[1]),
         "value_type": "table", "id_type": "sample_id", "columns": traits, "problems": problems, "notes": notes}
    return {"json": j, "text": "\n".join(text)}


if __name__ == "__main__":  # pragma: no cover - convenience
    from app.cli import main

    sys.exit(main(["inspect", *sys.argv[1:]]))
