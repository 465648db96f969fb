"""``python -m app celllm pretrain|finetune|embed``: the CLI twins of the GUI's CellLM buttons.

Each subcommand builds the job config and runs the engine job through
``app.jobs.cli_runner.run_with_progress`` (a spawned job with a progress bar; Ctrl-C cancels gracefully and
keeps a checkpoint), exactly as the GUI runs it. ``--out RUN`` is the run folder.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

PRESETS = ("tiny", "small", "full")
FREEZE_HELP = ("what to keep fixed: none (train all), embeddings, encoder (train only the head), "
               "last:K (train only the last K encoder layers + head)")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``celllm`` with its ``pretrain``, ``finetune`` and ``embed`` subcommands."""
    p = subparsers.add_parser("celllm", help="CellLM: pretrain, fine-tune for cell types, embed cells",
                              description="CellLM single-cell foundation model: pretrain, fine-tune, embed.")
    sub = p.add_subparsers(dest="celllm_command", metavar="STEP")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    pre = sub.add_parser("pretrain", help="pretrain CellLM (masked expression + contrastive, divide and conquer)")
    pre.add_argument("--data", action="append", required=True, metavar="PATH",
                     help="single-cell counts (h5ad, 10x folder/h5, loom, CSV/TSV); repeat for several")
    pre.add_argument("--out", required=True, metavar="RUN", help="run folder to create (or resume)")
    pre.add_argument("--preset", choices=PRESETS, default="tiny", help="model size (default tiny)")
    pre.add_argument("--batch-size", type=int, default=None, metavar="N", help="cells per contrastive batch")
    pre.add_argument("--chunk-size", type=int, default=None, metavar="C",
                     help="cells per divide-and-conquer chunk (default: chosen from free memory)")
    pre.add_argument("--epochs", type=int, default=None, metavar="E", help="passes over the data (default 1)")
    pre.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    pre.add_argument("--seed", type=int, default=None)
    pre.add_argument("--max-len", type=int, default=None, metavar="L", help="genes kept per cell (top expressed)")
    pre.add_argument("--supervised-key", default=None, metavar="COL",
                     help="optional .obs column for the supervised CLS loss (e.g. tumour vs normal)")
    pre.add_argument("--init", default=None, metavar="RUN_OR_CKPT", help="start from this model")
    pre.add_argument("--resume", action="store_true", help="continue RUN from its last checkpoint")
    _common(pre)
    pre.set_defaults(func=run_pretrain)

    ft = sub.add_parser("finetune", help="fine-tune for cell-type annotation; scores CellLM and a baseline")
    ft.add_argument("--data", required=True, metavar="PATH", help="single-cell counts with labels")
    ft.add_argument("--label-key", required=True, metavar="COL",
                    help="label column: an .obs column, or a column of the --labels table")
    ft.add_argument("--out", required=True, metavar="RUN", help="run folder (writes RUN/metrics.json)")
    ft.add_argument("--init", default=None, metavar="RUN_OR_CKPT",
                    help="starting model (default: the shipped pretrained tiny CellLM)")
    ft.add_argument("--labels", default=None, metavar="FILE", help="labels table joined by cell ID")
    ft.add_argument("--epochs", type=int, default=None, metavar="E", help="at most E epochs (default 10)")
    ft.add_argument("--batch-size", type=int, default=None, metavar="N", help="default 32")
    ft.add_argument("--lr", type=float, default=None,
                    help="encoder learning rate (default by model size: tiny 5e-4, small 2e-4, full 1e-4)")
    ft.add_argument("--patience", type=int, default=None, help="early-stopping patience in epochs (default 3)")
    ft.add_argument("--freeze", default=None, metavar="MODE", help=FREEZE_HELP + " (default none)")
    ft.add_argument("--seed", type=int, default=None, help="split and training seed (default 0)")
    ft.add_argument("--val-frac", type=float, default=None, help="validation fraction (default 0.15)")
    ft.add_argument("--test-frac", type=float, default=None, help="test fraction (default 0.15)")
    ft.add_argument("--split-key", default=None, metavar="COL",
                    help="use this train/val/test column instead of a random stratified split")
    ft.add_argument("--max-len", type=int, default=None, metavar="L", help="genes kept per cell (top expressed)")
    ft.add_argument("--max-cells", type=int, default=None, metavar="N",
                    help="stratified subsample of N cells (quick runs)")
    ft.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    ft.add_argument("--resume", action="store_true", help="continue RUN from its last checkpoint")
    _common(ft)
    ft.set_defaults(func=run_finetune)

    em = sub.add_parser("embed", help="write cell embeddings (and labels, if fine-tuned) into an .h5ad")
    em.add_argument("--data", required=True, metavar="PATH", help="single-cell counts")
    em.add_argument("--model", default=None, metavar="RUN",
                    help="run or model folder (default: the shipped pretrained tiny CellLM)")
    em.add_argument("--out", required=True, metavar="OUT.h5ad", help="output AnnData")
    em.add_argument("--labels", default=None, metavar="FILE", help="table joined by cell ID into .obs")
    em.add_argument("--batch-size", type=int, default=None, metavar="N", help="default 64")
    em.add_argument("--max-len", type=int, default=None, metavar="L")
    em.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    _common(em)
    em.set_defaults(func=run_embed)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: usable cores, <= 8)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the job's result as one JSON object")


def _clean(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def pretrain_config(args: argparse.Namespace) -> dict[str, Any]:
    """Job config for ``app.engine.celllm.pretrain:pretrain`` from the parsed options."""
    return _clean({
        "data": [str(Path(d)) for d in args.data], "run_dir": str(Path(args.out)), "preset": args.preset,
        "batch_size": args.batch_size, "chunk_size": args.chunk_size, "epochs": args.epochs,
        "device": args.device, "seed": args.seed, "max_len": args.max_len,
        "supervised_key": args.supervised_key, "init": args.init, "resume": bool(args.resume) or None,
        "threads": args.threads,
    })


def finetune_config(args: argparse.Namespace) -> dict[str, Any]:
    """Job config for ``app.engine.celllm.finetune:finetune`` from the parsed options."""
    return _clean({
        "data": str(args.data), "label_key": args.label_key, "labels": args.labels, "init": args.init,
        "run_dir": str(Path(args.out)), "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
        "patience": args.patience, "freeze": args.freeze, "seed": args.seed, "val_frac": args.val_frac,
        "test_frac": args.test_frac, "split_key": args.split_key, "max_len": args.max_len,
        "max_cells": args.max_cells, "device": args.device, "resume": bool(args.resume) or None,
        "threads": args.threads,
    })


def embed_config(args: argparse.Namespace) -> dict[str, Any]:
    """Job config for ``app.engine.celllm.embed:embed`` from the parsed options."""
    return _clean({
        "data": str(args.data), "model": args.model, "out": str(args.out), "labels": args.labels,
        "batch_size": args.batch_size, "max_len": args.max_len, "device": args.device, "threads": args.threads,
    })


def _run(target: str, config: dict[str, Any], run_dir: str | None, args: argparse.Namespace) -> dict:
    from app.jobs.cli_runner import run_with_progress

    return run_with_progress(target, config, run_dir, quiet=bool(args.quiet))


def _finish(result: dict, args: argparse.Namespace, summary: str) -> int:
    if args.json:
        print(json.dumps(result, default=str))
    else:
        print(summary)
    if result.get("cancelled"):
        print("cancelled: a checkpoint was saved; rerun with --resume to continue", file=sys.stderr)
        return 130
    return 0


def run_pretrain(args: argparse.Namespace) -> int:
    """``celllm pretrain``."""
    config = pretrain_config(args)
    result = _run("app.engine.celllm.pretrain:pretrain", config, config["run_dir"], args)
    return _finish(result, args, f"pretrained model in {config['run_dir']}")


def run_finetune(args: argparse.Namespace) -> int:
    """``celllm finetune``: prints CellLM's and the baseline's test scores."""
    config = finetune_config(args)
    result = _run("app.engine.celllm.finetune:finetune", config, config["run_dir"], args)
    if result.get("cancelled"):
        return _finish(result, args, "")
    t, b = result["test"], result["baseline"]
    lines = [
        f"{result['n_train']} train / {result.get('n_val', 0)} val / {result['n_test']} test cells, "
        f"{len(result['classes'])} classes",
        f"CellLM   accuracy {t['accuracy']:.3f}  macro-F1 {t['macro_f1']:.3f}",
        f"baseline accuracy {b['accuracy']:.3f}  macro-F1 {b['macro_f1']:.3f}  (L1 logistic regression, HVGs)",
    ]
    if result.get("test_only_classes"):
        lines.append("classes in test but not in train: " + ", ".join(result["test_only_classes"]))
    lines.append(f"metrics: {Path(config['run_dir']) / 'metrics.json'}")
    return _finish(result, args, "\n".join(lines))


def run_embed(args: argparse.Namespace) -> int:
    """``celllm embed``."""
    config = embed_config(args)
    result = _run("app.engine.celllm.embed:embed", config, None, args)
    return _finish(result, args, f"wrote {result.get('n_cells')} cells x {result.get('dim')} dims to {config['out']}")
