"""``python -m app celllm pretrain|finetune|embed|annotate``: the CLI twins of the GUI's CellLM buttons.

Each subcommand builds the job config and runs the engine job through
``app.jobs.cli_runner.run_with_progress`` (a spawned job with a progress bar; Ctrl-C cancels gracefully and
keeps a checkpoint), exactly as the GUI runs it. ``--out RUN`` is the run folder.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from app.cli.options import add_config_options, config_from_args, help_text
from app.data.errors import DataError
from app.data.jsonsafe import dumps
from app.engine.celllm.job_configs import AnnotateConfig, EmbedConfig, EvaluateConfig, FinetuneConfig, PretrainConfig
from app.engine.jobconfig import spec_of
from app.engine.registry import job


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
    add_config_options(ft, FinetuneConfig)
    ev = ft.add_argument_group("repeated evaluation (any of these runs the celllm.evaluate job)")
    add_config_options(ev, EvaluateConfig, skip=tuple(f.name for f in dataclasses.fields(FinetuneConfig)))  # type: ignore[arg-type]
    _common(ft)
    ft.set_defaults(func=run_finetune)

    em = sub.add_parser("embed", help="write cell embeddings (and labels, if fine-tuned) into an .h5ad")
    add_config_options(em, EmbedConfig)
    _common(em)
    em.set_defaults(func=run_embed)

    an = sub.add_parser("annotate", help="label a new dataset with a fine-tuned model (confidence, Unassigned)",
                        description="Annotate a query dataset with a fine-tuned CellLM run: per-cell label and "
                                    "confidence, 'Unassigned' under --min-confidence, reference and query on one "
                                    "map, and, when the query has labels of its own, transfer accuracy beside "
                                    "the baseline. Writes OUT.h5ad, OUT_labels.csv, OUT_joint_map.csv/.png and "
                                    "OUT_annotate.json.")
    add_config_options(an, AnnotateConfig)
    _common(an)
    an.set_defaults(func=run_annotate)


def add_pretrain_arguments(pre: argparse.ArgumentParser) -> None:
    """The options of ``celllm pretrain`` (shared with ``launch-script``, which checks a run's options): one
    per ``PretrainConfig`` field, plus ``--config`` and ``--stream``/``--no-stream``."""
    pre.add_argument("--config", default=None, metavar="FILE.json",
                     help="job config (e.g. written by launch-script); options given here override it")
    add_config_options(pre, PretrainConfig, skip=("stream",), optional=("data", "run_dir"))
    stream = spec_of(PretrainConfig, "stream")
    st = pre.add_mutually_exclusive_group()
    st.add_argument("--stream", dest="stream", nargs="?", const="on", default=None, choices=stream.choices,
                    help=help_text(stream) + "; --stream alone = on")
    st.add_argument("--no-stream", dest="stream", action="store_const", const="off",
                    help="load the data whole even when it looks too large (= --stream off)")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the job's result as one JSON object")


def pretrain_config(args: argparse.Namespace) -> dict[str, Any]:
    """Job config for ``celllm pretrain`` from the parsed options (over ``--config``), validated."""
    base: dict[str, Any] = {}
    if getattr(args, "config", None):
        try:
            base = json.loads(Path(args.config).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read the job config ({exc})", args.config,
                            "Give a JSON file written by `celllm launch-script` (or by hand).") from exc
        if not isinstance(base, dict):
            raise DataError("the job config is not a JSON object", args.config, "Write {\"data\": [...], ...}.")
    return config_from_args(PretrainConfig, args, base).to_dict()


def finetune_config(args: argparse.Namespace) -> dict[str, Any]:
    """Job config for ``celllm finetune`` from the parsed options, validated."""
    return config_from_args(FinetuneConfig, args).to_dict()


def embed_config(args: argparse.Namespace) -> dict[str, Any]:
    """Job config for ``celllm embed`` from the parsed options, validated."""
    return config_from_args(EmbedConfig, args).to_dict()


def annotate_config(args: argparse.Namespace) -> dict[str, Any]:
    """Job config for ``celllm annotate`` from the parsed options, validated."""
    return config_from_args(AnnotateConfig, args).to_dict()


def _run(target: str, config: dict[str, Any], run_dir: str | None, args: argparse.Namespace) -> dict:
    from app.jobs.cli_runner import run_with_progress

    return run_with_progress(target, config, run_dir, quiet=bool(args.quiet))


def _finish(result: dict, args: argparse.Namespace, summary: str) -> int:
    if args.json:
        print(dumps(result))
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


PRETRAIN_TARGET = job("celllm.pretrain").target

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


def run_evaluate(args: argparse.Namespace) -> int:
    """``celllm finetune --repeats K [--scratch] [--label-fractions F ...]``: the repeated-evaluation table."""
    from app.engine.stats import Spread

    config = config_from_args(EvaluateConfig, args).to_dict()
    result = _run(job("celllm.evaluate").target, config, config["run_dir"], args)
    if result.get("cancelled"):
        return _finish(result, args, "")
    names = {"celllm": "CellLM", "baseline": "baseline", "scratch": "scratch"}
    lines = [f"{result['repeats']} seeded splits, {result['n_cells']} cells, {len(result['classes'])} classes",
             f"{'method':10s} {'macro-F1 (mean ± SD)':>22s} {'accuracy (mean ± SD)':>22s}"]
    for m, v in result["methods"].items():
        f1, acc = Spread(**v["macro_f1"]), Spread(**v["accuracy"])
        lines.append(f"{names.get(m, m):10s} {f1.text():>22s} {acc.text():>22s}")
    lines += list(result["verdicts"].values())
    for row in result.get("label_efficiency") or []:
        parts = [f"{names.get(m, m)} {Spread(**v['macro_f1']).text()}" for m, v in row["methods"].items()]
        lines.append(f"{row['fraction']:>6.0%} of the training labels: macro-F1 " + ", ".join(parts))
    lines.append(f"metrics: {Path(config['run_dir']) / 'metrics.json'}")
    return _finish(result, args, "\n".join(lines))


def run_finetune(args: argparse.Namespace) -> int:
    """``celllm finetune``: prints CellLM's and the baseline's test scores (over seeded splits with
    ``--repeats``, ``--scratch`` or ``--label-fractions``: ``run_evaluate``)."""
    if args.repeats is not None or args.scratch or args.label_fractions:
        return run_evaluate(args)
    config = finetune_config(args)
    result = _run(job("celllm.finetune").target, config, config["run_dir"], args)
    if result.get("cancelled"):
        return _finish(result, args, "")
    t, b = result["test"], result["baseline"]
    lines = [
        f"{result['n_train']} train / {result.get('n_val', 0)} val / {result['n_test']} test cells, "
        f"{len(result['classes'])} classes",
        f"CellLM   accuracy {t['accuracy']:.3f}  macro-F1 {t['macro_f1']:.3f}",
        f"baseline accuracy {b['accuracy']:.3f}  macro-F1 {b['macro_f1']:.3f}  ({b.get('method', 'baseline')})",
    ]
    if result.get("test_only_classes"):
        lines.append("classes in test but not in train: " + ", ".join(result["test_only_classes"]))
    lines.append(f"metrics: {Path(config['run_dir']) / 'metrics.json'}")
    return _finish(result, args, "\n".join(lines))


def run_embed(args: argparse.Namespace) -> int:
    """``celllm embed``."""
    config = embed_config(args)
    result = _run(job("celllm.embed").target, config, None, args)
    return _finish(result, args, f"wrote {result.get('n_cells')} cells x {result.get('dim')} dims to {config['out']}")


def run_annotate(args: argparse.Namespace) -> int:
    """``celllm annotate``: per-class counts, Unassigned cells and, with query labels, the transfer scores."""
    config = annotate_config(args)
    r = _run(job("celllm.annotate").target, config, None, args)
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
                         f"(logistic regression, {base['n_shared_genes']:,} shared genes)")
        if sc.get("unknown_classes"):
            lines.append("query classes the model never saw: " + ", ".join(sc["unknown_classes"]))
    lines += r.get("notes") or []
    lines.append("wrote " + ", ".join(r["files"].values()))
    return _finish(r, args, "\n".join(lines))
