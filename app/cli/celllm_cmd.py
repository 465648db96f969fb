"""``python -m app celllm pretrain|finetune|embed|annotate``: the CLI twins of the GUI's CellLM buttons.

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
LIVE_HELP = "cells of the live map, embedded at every refresh (default 5000, all when fewer; 0 = off)"
FREEZE_HELP = ("what to keep fixed: none (train all), embeddings, encoder (train only the head), "
               "last:K (train only the last K encoder layers + head)")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``celllm`` with its ``pretrain``, ``finetune``, ``embed`` and ``annotate`` subcommands."""
    p = subparsers.add_parser("celllm", help="CellLM: pretrain, fine-tune for cell types, embed cells",
                              description="CellLM single-cell foundation model: pretrain, fine-tune, embed.")
    sub = p.add_subparsers(dest="celllm_command", metavar="STEP")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    pre = sub.add_parser("pretrain", help="pretrain CellLM (masked expression + contrastive, divide and conquer)",
                         description="Pretrain CellLM. Runs unchanged under torchrun (several GPUs or nodes): "
                                     "each rank runs the job in-process with DDP; rank 0 writes the run folder.")
    add_pretrain_arguments(pre)
    _common(pre)
    pre.set_defaults(func=run_pretrain)

    ls = sub.add_parser("launch-script", help="write a torchrun launch script (local GPUs or a Slurm cluster)",
                        description="Write a ready-to-run launch script (torchrun command + the job's config "
                                    "JSON) for a pretraining run on several GPUs or nodes. Pretrain options "
                                    "follow `--`, e.g.: launch-script --nodes 2 --gpus-per-node 4 --out run.sh "
                                    "-- --data a.h5ad --out RUN --preset full")
    ls.add_argument("--out", required=True, metavar="SCRIPT.sh", help="script to write (config: SCRIPT.json)")
    ls.add_argument("--nodes", type=int, default=1, help="machines (default 1)")
    ls.add_argument("--gpus-per-node", type=int, default=None, metavar="G",
                    help="ranks per machine (default: the GPUs visible here, at least 1)")
    ls.add_argument("--scheduler", choices=("auto", "local", "slurm"), default="auto",
                    help="local shell script or Slurm batch script (default: slurm for several nodes)")
    ls.add_argument("--partition", default=None, help="Slurm partition")
    ls.add_argument("--account", default=None, help="Slurm account")
    ls.add_argument("--time", default="24:00:00", help="Slurm time limit (default 24:00:00)")
    ls.add_argument("--cpus-per-gpu", type=int, default=8, help="CPU cores per rank (default 8)")
    ls.add_argument("--port", type=int, default=29500, help="rendezvous port on the first node (default 29500)")
    ls.add_argument("--python", default=None, help="Python of the OmicsLab environment on the nodes "
                                                    "(default: this one)")
    ls.add_argument("pretrain_args", nargs=argparse.REMAINDER, metavar="-- PRETRAIN_ARGS",
                    help="the `celllm pretrain` options of the run")
    ls.set_defaults(func=run_launch_script)

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
    ft.add_argument("--live-cells", type=int, default=None, metavar="N", help=LIVE_HELP)
    ft.add_argument("--batch-key", default=None, metavar="COL",
                    help="batch column: the live map also reports batch mixing (iLISI, graph connectivity)")
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

    an = sub.add_parser("annotate", help="label a new dataset with a fine-tuned model (confidence, Unassigned)",
                        description="Annotate a query dataset with a fine-tuned CellLM run: per-cell label and "
                                    "confidence, 'Unassigned' under --min-confidence, reference and query on one "
                                    "map, and, when the query has labels of its own, transfer accuracy beside "
                                    "the baseline. Writes OUT.h5ad, OUT_labels.csv, OUT_joint_map.csv/.png and "
                                    "OUT_annotate.json.")
    an.add_argument("--model", required=True, metavar="RUN", help="fine-tune run folder (or its model folder)")
    an.add_argument("--data", required=True, metavar="QUERY", help="single-cell counts to annotate")
    an.add_argument("--out", required=True, metavar="OUT.h5ad", help="annotated query AnnData")
    an.add_argument("--min-confidence", type=float, default=None, metavar="P",
                    help="cells whose top probability is under P become Unassigned (default 0.5)")
    an.add_argument("--labels", default=None, metavar="FILE", help="the query's own labels table (by cell ID)")
    an.add_argument("--label-key", default=None, metavar="COL",
                    help="the query's own label column (an .obs column or a --labels column): scored")
    an.add_argument("--gene-map", default=None, metavar="FILE",
                    help="two-column gene ID table (query ID, model gene name) for genes not matched directly")
    an.add_argument("--min-gene-match", type=float, default=None, metavar="F",
                    help="refuse when fewer than this fraction of the query's genes are in the model (default 0.1)")
    an.add_argument("--reference", default=None, metavar="PATH",
                    help="reference cells for the joint map and the baseline (default: the run's own data)")
    an.add_argument("--reference-labels", default=None, metavar="FILE", help="labels table of --reference")
    an.add_argument("--reference-label-key", default=None, metavar="COL", help="label column of --reference")
    an.add_argument("--map", choices=("umap", "pca"), default=None, help="joint map layout (default umap)")
    an.add_argument("--batch-size", type=int, default=None, metavar="N", help="default 64")
    an.add_argument("--max-len", type=int, default=None, metavar="L")
    an.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    _common(an)
    an.set_defaults(func=run_annotate)


def add_pretrain_arguments(pre: argparse.ArgumentParser) -> None:
    """The options of ``celllm pretrain`` (shared with ``launch-script``, which checks a run's options)."""
    pre.add_argument("--data", action="extend", nargs="+", default=None, metavar="PATH",
                     help="single-cell counts (h5ad, 10x folder/h5, loom, CSV/TSV); several paths or repeat")
    pre.add_argument("--out", default=None, metavar="RUN", help="run folder to create (or resume)")
    pre.add_argument("--config", default=None, metavar="FILE.json",
                     help="job config (e.g. written by launch-script); options given here override it")
    pre.add_argument("--preset", choices=PRESETS, default=None, help="model size (default tiny)")
    pre.add_argument("--batch-size", type=int, default=None, metavar="N",
                     help="cells per contrastive batch (under torchrun: the global batch, split over the ranks)")
    pre.add_argument("--chunk-size", type=int, default=None, metavar="C",
                     help="cells per divide-and-conquer chunk (default: chosen from free memory)")
    pre.add_argument("--epochs", type=int, default=None, metavar="E", help="passes over the data (default 1)")
    pre.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N or mps (default auto; under "
                                                   "torchrun auto = one GPU per rank)")
    pre.add_argument("--seed", type=int, default=None)
    pre.add_argument("--max-len", type=int, default=None, metavar="L", help="genes kept per cell (top expressed)")
    pre.add_argument("--supervised-key", default=None, metavar="COL",
                     help="optional .obs column for the supervised CLS loss (e.g. tumour vs normal)")
    pre.add_argument("--init", default=None, metavar="RUN_OR_CKPT", help="start from this model")
    pre.add_argument("--resume", action="store_true", help="continue RUN from its last checkpoint")
    pre.add_argument("--live-cells", type=int, default=None, metavar="N", help=LIVE_HELP)
    pre.add_argument("--live-every", type=int, default=None, metavar="K",
                     help="steps between live-map refreshes (default 0: about 20 refreshes per run)")
    pre.add_argument("--label-key", default=None, metavar="COL",
                     help="column that colours and scores the live map (not trained on)")
    pre.add_argument("--batch-key", default=None, metavar="COL",
                     help="batch column (or _dataset = the input file): the live map reports batch mixing")
    st = pre.add_mutually_exclusive_group()
    st.add_argument("--stream", dest="stream", action="store_const", const="on", default=None,
                    help="stream cells from backed .h5ad files block by block, never loading X whole "
                         "(default: automatic when the data would not fit in memory)")
    st.add_argument("--no-stream", dest="stream", action="store_const", const="off",
                    help="load the data whole even when it looks too large")
    pre.add_argument("--shuffle-buffer", type=int, default=None, metavar="N",
                     help="streaming: cells held for shuffling (default 8192)")
    pre.add_argument("--block-cells", type=int, default=None, metavar="N",
                     help="streaming: rows per contiguous disk read (default 1024)")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: usable cores, <= 8)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the job's result as one JSON object")


def _clean(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def pretrain_config(args: argparse.Namespace) -> dict[str, Any]:
    """Job config for ``app.engine.celllm.pretrain:pretrain`` from the parsed options (over ``--config``)."""
    base: dict[str, Any] = {}
    if getattr(args, "config", None):
        from app.data.errors import DataError

        try:
            base = json.loads(Path(args.config).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read the job config ({exc})", args.config,
                            "Give a JSON file written by `celllm launch-script` (or by hand).") from exc
        if not isinstance(base, dict):
            raise DataError("the job config is not a JSON object", args.config, "Write {\"data\": [...], ...}.")
    cfg = {**base, **_clean({
        "data": [str(Path(d)) for d in args.data] if args.data else None,
        "run_dir": str(Path(args.out)) if args.out else None, "preset": args.preset,
        "batch_size": args.batch_size, "chunk_size": args.chunk_size, "epochs": args.epochs,
        "device": args.device, "seed": args.seed, "max_len": args.max_len,
        "supervised_key": args.supervised_key, "init": args.init, "resume": bool(args.resume) or None,
        "threads": args.threads, "stream": getattr(args, "stream", None),
        "shuffle_buffer": getattr(args, "shuffle_buffer", None), "block_cells": getattr(args, "block_cells", None),
        "live_cells": args.live_cells, "live_every": args.live_every, "label_key": args.label_key,
        "batch_key": args.batch_key,
    })}
    cfg.setdefault("preset", "tiny")
    cfg.setdefault("device", "auto")
    if not cfg.get("data") or not cfg.get("run_dir"):
        from app.data.errors import DataError

        raise DataError("pretraining needs input data and a run folder", getattr(args, "config", None),
                        "Pass --data PATH [PATH ...] and --out RUN (or a --config holding data and run_dir).")
    return cfg


def finetune_config(args: argparse.Namespace) -> dict[str, Any]:
    """Job config for ``app.engine.celllm.finetune:finetune`` from the parsed options."""
    return _clean({
        "data": str(args.data), "label_key": args.label_key, "labels": args.labels, "init": args.init,
        "run_dir": str(Path(args.out)), "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
        "patience": args.patience, "freeze": args.freeze, "seed": args.seed, "val_frac": args.val_frac,
        "test_frac": args.test_frac, "split_key": args.split_key, "max_len": args.max_len,
        "max_cells": args.max_cells, "device": args.device, "resume": bool(args.resume) or None,
        "threads": args.threads, "live_cells": args.live_cells, "batch_key": args.batch_key,
    })


def embed_config(args: argparse.Namespace) -> dict[str, Any]:
    """Job config for ``app.engine.celllm.embed:embed`` from the parsed options."""
    return _clean({
        "data": str(args.data), "model": args.model, "out": str(args.out), "labels": args.labels,
        "batch_size": args.batch_size, "max_len": args.max_len, "device": args.device, "threads": args.threads,
    })


def annotate_config(args: argparse.Namespace) -> dict[str, Any]:
    """Job config for ``app.engine.celllm.annotate:annotate`` from the parsed options."""
    return _clean({
        "model": str(args.model), "data": str(args.data), "out": str(args.out),
        "min_confidence": args.min_confidence, "labels": args.labels, "label_key": args.label_key,
        "gene_map": args.gene_map, "min_gene_match": args.min_gene_match, "reference": args.reference,
        "reference_labels": args.reference_labels, "reference_label_key": args.reference_label_key,
        "map": args.map, "batch_size": args.batch_size, "max_len": args.max_len, "device": args.device,
        "threads": args.threads,
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
        print(cancelled_words(result), file=sys.stderr)
        return 130
    return 0


def cancelled_words(result: dict) -> str:
    """What a stopped run kept: a forced stop saved nothing new, so say which checkpoint (if any) is left."""
    ck = result.get("checkpoint")
    if result.get("forced"):
        if ck:
            return (f"stopped forcefully (the job did not stop in time): no new checkpoint; the last one is {ck}. "
                    "Resume with `python -m app runs resume RUN`.")
        return "stopped forcefully (the job did not stop in time): there is no checkpoint; the run must start over."
    if ck:
        return f"cancelled: checkpoint {ck} kept; `python -m app runs resume RUN` (or --resume) continues"
    return "cancelled before the first checkpoint: nothing to resume; the run must start over"


PRETRAIN_TARGET = "app.engine.celllm.pretrain:pretrain"


def run_pretrain(args: argparse.Namespace) -> int:
    """``celllm pretrain``: a job child with a progress bar, or, when torchrun started this process, the job
    itself in this process as one rank (see ``_run_as_rank``)."""
    from app.engine.celllm.distributed import launched_by_torchrun

    config = pretrain_config(args)
    if launched_by_torchrun():
        return _run_as_rank(config, args)
    result = _run(PRETRAIN_TARGET, config, config["run_dir"], args)
    return _finish(result, args, f"pretrained model in {config['run_dir']}")


def _run_as_rank(config: dict[str, Any], args: argparse.Namespace) -> int:
    """One torchrun rank: join the group, let rank 0 prepare the run folder (new, or resumed from its
    checkpoint), run the pretrain job in THIS process (DDP inside), rank 0 records status and result.

    SIGINT/SIGTERM (Ctrl-C, or torchrun/Slurm stopping the job) ask every rank to stop at the next step with
    a checkpoint; a third signal interrupts at once.
    """
    import os
    import signal
    import time

    from app.data.errors import OmicsLabError
    from app.engine.celllm import distributed as dist_mod
    from app.engine.celllm.pretrain import pretrain
    from app.engine.events import Log, Progress
    from app.engine.reporter import Reporter
    from app.jobs.process import prepare_run

    info = dist_mod.init_distributed(str(config.get("device", "auto")))
    rd = None
    try:
        prepared: tuple[dict | None, str | None] = (None, None)
        if info.is_main:
            try:
                rd, child_cfg, _ = prepare_run(PRETRAIN_TARGET, config, config["run_dir"], status="running",
                                               device=str(config.get("device", "auto")))
                rd.set_status("running", pid=os.getpid(), device=str(info.device), world_size=info.world_size)
                rd.log(f"torchrun: {info.world_size} rank(s), backend {info.backend}, rank 0 pid {os.getpid()}")
                prepared = (child_cfg, None)
            except OmicsLabError as exc:
                prepared = (None, str(exc))
        child_cfg, error = dist_mod.broadcast_object(prepared, info)
        if error is not None:
            raise OmicsLabError(error if info.is_main else f"rank 0 could not prepare the run: {error}")
        quiet = bool(args.quiet) or bool(args.json)
        shown = {"t": 0.0}

        def sink(event: Any) -> None:  # rank 0 only (the job's RankReporter drops the other ranks' events)
            if isinstance(event, Log):
                if rd is not None:
                    rd.log(event.line)
                if not quiet:
                    print(event.line, file=sys.stderr, flush=True)
            elif isinstance(event, Progress) and not quiet:
                now = time.monotonic()
                if now - shown["t"] > 5 or event.step == event.total:
                    shown["t"] = now
                    print(f"step {event.step}/{event.total}", file=sys.stderr, flush=True)

        reporter = Reporter(sink)
        signals = {"n": 0}

        def on_signal(signum: int, _frame: Any) -> None:
            signals["n"] += 1
            if signals["n"] >= 3:
                raise KeyboardInterrupt
            reporter.request_stop()

        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, on_signal)
        try:
            result = pretrain(dict(child_cfg or {}), reporter)
        except BaseException as exc:
            if rd is not None:
                rd.set_status("failed", message=str(exc)[:500] or type(exc).__name__)
                rd.log(f"FAILED on rank 0: {type(exc).__name__}: {exc}")
            raise
        if rd is not None:
            cancelled = bool(result.get("cancelled"))
            rd.set_status("cancelled" if cancelled else "done")
            rd.log("cancelled" if cancelled else "done")
        if not info.is_main:
            return 130 if result.get("cancelled") else 0
        return _finish(result, args, f"pretrained model in {config['run_dir']} ({info.world_size} ranks)")
    finally:
        dist_mod.cleanup(info)


def run_launch_script(args: argparse.Namespace) -> int:
    """``celllm launch-script``: check the pretrain options, write SCRIPT.sh + SCRIPT.json."""
    from app.engine.celllm.launch_script import LaunchSpec, write_launch_script

    rest = list(args.pretrain_args)
    if rest and rest[0] == "--":
        rest = rest[1:]
    pre = argparse.ArgumentParser(prog="python -m app celllm launch-script ... --", add_help=False)
    add_pretrain_arguments(pre)
    _common(pre)
    pargs = pre.parse_args(rest)
    config = pretrain_config(pargs)
    spec = LaunchSpec(nodes=args.nodes, gpus_per_node=args.gpus_per_node, scheduler=args.scheduler,
                      partition=args.partition, account=args.account, time=args.time,
                      cpus_per_gpu=args.cpus_per_gpu, port=args.port, python=args.python)
    script, cfg_path = write_launch_script(args.out, config, spec)
    print(f"wrote {script} and {cfg_path}")
    print(("submit with: sbatch " if spec.resolved_scheduler() == "slurm" else "run with: bash ") + str(script))
    return 0


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


def run_annotate(args: argparse.Namespace) -> int:
    """``celllm annotate``: per-class counts, Unassigned cells and, with query labels, the transfer scores."""
    config = annotate_config(args)
    r = _run("app.engine.celllm.annotate:annotate", config, None, args)
    if r.get("cancelled"):
        return _finish(r, args, "")
    counts = ", ".join(f"{k} {v}" for k, v in r["counts"].items())
    lines = [r["gene_match_text"].splitlines()[0],
             f"{r['n_cells']} cells at confidence >= {r['min_confidence']:g}: {counts}"]
    sc, top, base = r.get("scores"), r.get("scores_top_label"), r.get("baseline")
    if sc and sc.get("n_scored"):
        lines.append(f"transfer accuracy {sc['accuracy']:.3f}  macro-F1 {sc['macro_f1']:.3f}  "
                     f"({sc['assigned_fraction']:.1%} assigned; accuracy of assigned cells "
                     f"{sc['accuracy_assigned']:.3f}; Unassigned counted as wrong)")
        lines.append(f"without threshold: accuracy {top['accuracy']:.3f}  macro-F1 {top['macro_f1']:.3f}")
        if base and "accuracy" in base:
            lines.append(f"baseline accuracy {base['accuracy']:.3f}  macro-F1 {base['macro_f1']:.3f}  "
                         f"(L1 logistic regression, {base['n_shared_genes']:,} shared genes)")
        if sc.get("unknown_classes"):
            lines.append("query classes the model never saw: " + ", ".join(sc["unknown_classes"]))
    lines += r.get("notes") or []
    lines.append("wrote " + ", ".join(r["files"].values()))
    return _finish(r, args, "\n".join(lines))
