"""``python -m app bench annotate [--json]``: cell-type annotation accuracy over seeded splits of every shared
labelled single-cell dataset, for the fine-tuned shipped CellLM, the same CellLM trained from scratch, the
product's baseline and (when installed) CellTypist itself. With ``--encoder-alone`` also the deep part alone
(readout ``cls``: the pooled-embedding head without the linear path), pretrained and from scratch, and their
paired difference: the default readout contains the baseline's solution, so "CellLM minus scratch" alone
cannot show what pretraining gives the encoder.

Per dataset and seed: a stratified split whose test cells come only from the cells pretraining never saw
(``app.engine.celllm.heldout.held_out``: the CRC-32 of the cell ID is even), so the shipped model's
pretraining cannot have seen a test cell; every method is trained on the same training cells (fine-tuning
also uses the same validation cells for early stopping; the linear methods train on train only) and scored
on the same test cells. Printed: mean ± SD over seeds of macro-F1 and accuracy, and the paired difference
CellLM minus each other method with a 95 % interval (``app.engine.stats``).

CellTypist (``celltypist.train``, v1.7.1) needs scikit-learn < 1.7, so it is never a dependency of the
product: it is used when importable here, or through ``--peers-python`` (a separate environment's python
with celltypist installed, e.g. ``python3 -m venv peers && peers/bin/pip install celltypist
'scikit-learn<1.7'``); otherwise its column is left out and the output says so. Both of its forms are scored:
the default (all genes) and ``feature_selection=True`` (its tutorials' setting).

Accuracy figures do not depend on the machine; the run time does (the load average is printed beside it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.data.jsonsafe import dumps

SC = "singlecell"


@dataclass(frozen=True)
class Dataset:
    """One shared labelled dataset: where its counts and labels are, and the label column."""

    name: str
    data: str
    labels: str | None
    label_key: str | None
    suffix_label: bool = False  # label = the part after the last "_" (CRC: patient_Tumor -> Tumor)
    by_position: bool = False  # a one-column table row-aligned with the cells (its README says so)


DATASETS = (
    Dataset("pbmc8k_hvg200", "pbmc8k_hvg200_h5ad/pbmc.h5ad", None, "cell_type"),
    Dataset("mouse_plaque_smc", "mouse_plaque_smc_mtx", "mouse_plaque_smc_mtx/label.csv", "label",
            by_position=True),
    Dataset("crc_tumor_normal", "crc_tumor_normal_10x/counts.small.matrix.gz",
            "crc_tumor_normal_10x/sample_annots.small.txt", "label", suffix_label=True),
    Dataset("cellbench_celseq2", "cellbench_lung_3cl/sc_celseq2.count.csv.gz",
            "cellbench_lung_3cl/sc_celseq2.metadata.csv.gz", "cell_line_demuxlet"),
    Dataset("cellbench_dropseq", "cellbench_lung_3cl/sc_dropseq.count.csv.gz",
            "cellbench_lung_3cl/sc_dropseq.metadata.csv.gz", "cell_line_demuxlet"),
    Dataset("mouse_immune_actinn", "mouse_immune_actinn/train_set.csv.gz", "mouse_immune_actinn/train_label.txt.gz",
            "label"),
)


def default_shared() -> Path:
    """``../shared/data`` beside the repository (the project's shared-data location)."""
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


def load_dataset(ds: Dataset, shared: Path, max_cells: int | None, seed: int = 0) -> tuple[Any, np.ndarray]:
    """(adata with raw counts, clean string labels) of one dataset; unlabelled cells dropped; a seeded
    stratified subsample of ``max_cells`` cells when the dataset is larger."""
    from app.data.singlecell import read_singlecell
    from app.engine.celllm.finetune import stratified_subsample
    from app.engine.celllm.splits import clean_labels

    root = shared / SC
    if ds.by_position:  # the product joins labels by cell ID only; this table has none (row order = cells)
        import pandas as pd

        adata = read_singlecell(root / ds.data)
        table = pd.read_csv(root / str(ds.labels))
        if len(table) != adata.n_obs:
            raise ValueError(f"{ds.labels}: {len(table)} labels for {adata.n_obs} cells")
        adata.obs[ds.label_key] = table[ds.label_key].astype(str).to_numpy()
    else:
        adata = read_singlecell(root / ds.data, labels=(root / ds.labels) if ds.labels else None,
                                label_key=ds.label_key)
    col = adata.obs[ds.label_key].astype(object).to_numpy()
    if ds.suffix_label:
        col = np.array([str(v).rsplit("_", 1)[-1] if v is not None else None for v in col], dtype=object)
    cl = clean_labels(col, source=ds.label_key or "label")
    adata, labels = adata[cl.keep].copy(), np.asarray(cl.labels).astype(str)
    if max_cells and adata.n_obs > max_cells:
        sub = stratified_subsample(labels, max_cells, seed)
        adata, labels = adata[sub].copy(), labels[sub]
    return adata, labels


# --------------------------------------------------------------------------------------------------
# CellTypist, in-process or in a peers environment
# --------------------------------------------------------------------------------------------------
PEER_SCRIPT = Path(__file__).with_name("_celltypist_peer.py")


def celltypist_scores(adata: Any, labels: np.ndarray, splits: list, peers_python: str | None,
                      classes: list[str]) -> dict[str, list[dict[str, float]]] | str:
    """Per split, CellTypist's macro-F1/accuracy in both forms (``default``, ``feature_selection``), or a
    sentence saying why it was not run."""
    import anndata as ad

    from app.data.singlecell import counts_matrix
    from app.engine.celllm.splits import classification_scores

    python = peers_python
    if python is None:
        try:
            import celltypist  # noqa: F401
            python = sys.executable
        except ImportError:
            return "celltypist is not installed here and no --peers-python was given"
    with tempfile.TemporaryDirectory(prefix="omicslab_ct_") as tmp:
        a = ad.AnnData(counts_matrix(adata))
        a.obs_names = np.asarray(adata.obs_names).astype(str)
        a.var_names = np.asarray(adata.var_names).astype(str)
        a.var_names_make_unique()
        a.obs["label"] = labels
        a.write_h5ad(Path(tmp) / "data.h5ad")
        spec = [{"train": s.train.tolist(), "test": s.test.tolist(), "seed": s.seed} for s in splits]
        (Path(tmp) / "splits.json").write_text(json.dumps(spec))
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        env["OMP_NUM_THREADS"] = "1"
        proc = subprocess.run([python, str(PEER_SCRIPT), tmp], capture_output=True, text=True, env=env,
                              check=False)
        if proc.returncode != 0:
            return f"celltypist failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else '?'}"
        preds = json.loads((Path(tmp) / "predictions.json").read_text())
    out: dict[str, list[dict[str, float]]] = {}
    notes = preds.pop("notes", [])
    for form, per_split in preds.items():
        out[form] = []
        for s, p in zip(splits, per_split):
            sc = classification_scores(labels[s.test], np.asarray(p, dtype=str), classes)
            out[form].append({"macro_f1": sc["macro_f1"], "accuracy": sc["accuracy"]})
    if notes:
        out["notes"] = notes  # type: ignore[assignment]
    return out


# --------------------------------------------------------------------------------------------------
# the benchmark
# --------------------------------------------------------------------------------------------------
def run_dataset(ds: Dataset, args: argparse.Namespace, shared: Path) -> dict[str, Any]:
    """All methods on one dataset over ``args.seeds`` seeded splits."""
    from app.engine.celllm.evaluate import evaluate_repeats, repeat_splits
    from app.engine.celllm.heldout import held_out
    from app.engine.stats import paired_difference, spread

    t0 = time.time()
    adata, labels = load_dataset(ds, shared, args.max_cells)
    classes = sorted(set(labels.tolist()))
    pool = held_out(adata.obs_names)
    splits = repeat_splits(labels, args.seeds, args.seed, test_pool=pool)
    with tempfile.TemporaryDirectory(prefix=f"omicslab_bench_{ds.name}_") as tmp:
        h5 = Path(tmp) / "data.h5ad"
        import anndata as ad

        from app.data.singlecell import counts_matrix

        a = ad.AnnData(counts_matrix(adata))
        a.obs_names = np.asarray(adata.obs_names).astype(str)
        a.var_names = np.asarray(adata.var_names).astype(str)
        a.obs["label"] = labels
        a.write_h5ad(h5)
        cfg = {"data": str(h5), "label_key": "label", "run_dir": str(Path(tmp) / "run"), "repeats": args.seeds,
               "seed": args.seed, "scratch": not args.no_scratch, "init": args.init, "epochs": args.epochs,
               "threads": args.threads, "device": "cpu", **dict(args.option)}
        rows = list(evaluate_repeats({k: v for k, v in cfg.items() if v is not None}, None, test_pool=pool)["rows"])
        if args.encoder_alone:  # the deep part alone (readout cls), pretrained and from random weights
            alone = {**cfg, "readout": "cls", "scratch": True, "run_dir": str(Path(tmp) / "run_cls")}
            for row in evaluate_repeats({k: v for k, v in alone.items() if v is not None}, None,
                                        test_pool=pool)["rows"]:
                if row["method"] != "baseline":  # the same cells' baseline is already in
                    rows.append({**row, "method": ENCODER_ALONE[row["method"]]})
    per: dict[str, dict[str, list[float]]] = {}
    best_epochs: dict[str, list[int | None]] = {}  # 0 = a cls+linear run kept its start (the baseline's fit)
    for row in rows:
        per.setdefault(row["method"], {"macro_f1": [], "accuracy": []})
        for k in ("macro_f1", "accuracy"):
            per[row["method"]][k].append(row[k])
        if row["method"] != "baseline":
            best_epochs.setdefault(row["method"], []).append(row.get("best_epoch"))
    ct = celltypist_scores(adata, labels, splits, args.peers_python, classes) if not args.no_celltypist else \
        "not asked for (--no-celltypist)"
    notes = []
    if isinstance(ct, str):
        notes.append(ct)
    else:
        notes += list(ct.pop("notes", []))  # type: ignore[arg-type]
        for form, vals in ct.items():
            per[f"celltypist_{form}"] = {k: [v[k] for v in vals] for k in ("macro_f1", "accuracy")}
    methods = {m: {k: spread(v).to_dict() for k, v in d.items()} for m, d in per.items()}
    diffs = {f"celllm_minus_{m}": {k: paired_difference(per["celllm"][k], per[m][k]).to_dict()
                                   for k in ("macro_f1", "accuracy")} for m in per if m != "celllm"}
    if "encoder_scratch" in per:  # does pretraining help the deep part alone?
        diffs["encoder_minus_encoder_scratch"] = {
            k: paired_difference(per["encoder"][k], per["encoder_scratch"][k]).to_dict()
            for k in ("macro_f1", "accuracy")}
    if "celltypist_feature_selection" in per:
        diffs["baseline_minus_celltypist_feature_selection"] = {
            k: paired_difference(per["baseline"][k], per["celltypist_feature_selection"][k]).to_dict()
            for k in ("macro_f1", "accuracy")}
    return {"dataset": ds.name, "n_cells": len(labels), "n_genes": int(adata.n_vars), "classes": classes,
            "n_test": [len(s.test) for s in splits], "methods": methods, "per_seed": per, "best_epochs": best_epochs,
            "differences": diffs, "notes": notes, "seconds": round(time.time() - t0, 1)}


ENCODER_ALONE = {"celllm": "encoder", "scratch": "encoder_scratch"}
"""``--encoder-alone``: the method names of the extra readout-``cls`` runs."""
ORDER = ("celllm", "scratch", "encoder", "encoder_scratch", "baseline", "celltypist_feature_selection",
         "celltypist_default")
LABEL = {"celllm": "CellLM (fine-tuned)", "scratch": "CellLM from scratch", "baseline": "baseline",
         "encoder": "encoder alone (readout cls)", "encoder_scratch": "encoder alone from scratch",
         "celltypist_feature_selection": "CellTypist (feature sel.)", "celltypist_default": "CellTypist (default)"}


def table(results: list[dict[str, Any]]) -> str:
    """Markdown-style table: dataset, method, macro-F1 and accuracy as mean ± SD."""
    lines = ["| dataset | method | macro-F1 | accuracy |", "|---|---|---|---|"]
    for r in results:
        for m in ORDER:
            if m in r["methods"]:
                f1, acc = r["methods"][m]["macro_f1"], r["methods"][m]["accuracy"]
                lines.append(f"| {r['dataset']} | {LABEL[m]} | {f1['mean']:.3f} ± {f1['sd'] or 0:.3f} | "
                             f"{acc['mean']:.3f} ± {acc['sd'] or 0:.3f} |")
        for note in r["notes"]:
            lines.append(f"| {r['dataset']} | note: {note} | | |")
    return "\n".join(lines)


def _option(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` -> (key, value); the value is read as JSON when it parses (numbers, null), else text."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key.strip(), json.loads(value)
    except ValueError:
        return key.strip(), value


def main(argv: list[str]) -> int:
    """Entry point of ``python -m app bench annotate``."""
    p = argparse.ArgumentParser(prog="python -m app bench annotate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--seeds", type=int, default=5, help="seeded splits per dataset (default 5)")
    p.add_argument("--seed", type=int, default=0, help="first split seed (default 0)")
    p.add_argument("--datasets", default=None, help="comma-separated names (default all): "
                   + ", ".join(d.name for d in DATASETS))
    p.add_argument("--shared", type=Path, default=None, help="shared data folder (default ../shared/data)")
    p.add_argument("--init", default=None, help="starting model (default the shipped CellLM)")
    p.add_argument("--epochs", type=int, default=None, help="fine-tuning epochs (default: fine-tuning's)")
    p.add_argument("--max-cells", type=int, default=2000,
                   help="stratified subsample of larger datasets (default 2000; 0 = all cells)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--option", action="append", type=_option, default=[], metavar="KEY=VALUE",
                   help="a fine-tuning setting (a FinetuneConfig field, e.g. readout=cls+linear); repeatable")
    p.add_argument("--no-scratch", action="store_true", help="skip the from-scratch control")
    p.add_argument("--no-celltypist", action="store_true", help="skip CellTypist")
    p.add_argument("--encoder-alone", action="store_true",
                   help="also score the deep part alone (readout cls), fine-tuned from the starting model and "
                        "from random weights, on the same splits: does pretraining help the encoder itself?")
    p.add_argument("--peers-python", default=None,
                   help="python of an environment with celltypist installed (default: import it here)")
    p.add_argument("--partial", default=None, metavar="FILE.json",
                   help="with --json: also write the results so far to FILE after each dataset")
    args = p.parse_args(argv)
    args.max_cells = args.max_cells or None
    shared = args.shared or default_shared()
    wanted = [d for d in DATASETS if args.datasets is None or d.name in args.datasets.split(",")]
    if not wanted:
        print(f"error: no dataset named {args.datasets!r}", file=sys.stderr)
        return 2
    if not (shared / SC).is_dir():
        print(f"error: no shared single-cell data at {shared / SC}; pass --shared DIR", file=sys.stderr)
        return 2
    from threadpoolctl import threadpool_limits

    t0 = time.time()
    results = []
    for ds in wanted:
        if not args.json:
            print(f"{ds.name} ...", flush=True)
        # BLAS threads as asked too: on a shared machine extra BLAS threads slowed the linear fits ~10x
        with threadpool_limits(limits=args.threads):
            results.append(run_dataset(ds, args, shared))
        if not args.json:
            print(table(results[-1:]), flush=True)
        elif args.partial:
            Path(args.partial).write_text(dumps(results))
    out = {"benchmark": "annotate", "seeds": args.seeds, "seed": args.seed, "init": args.init or "shipped",
           "options": dict(args.option),
           "max_cells": args.max_cells, "test_cells": "held out from pretraining (CRC-32 of the cell ID even)",
           "results": results, "seconds": round(time.time() - t0, 1)}
    if args.json:
        print(dumps(out))
    else:
        print("\n" + table(results))
        print(f"{args.seeds} seeded splits per dataset; {out['seconds']:.0f} s")
    return 0


__all__ = ["DATASETS", "Dataset", "load_dataset", "main", "run_dataset"]
