"""``python -m app runs list|show|resume``: browse run folders and resume a run from its last checkpoint."""

from __future__ import annotations

import argparse
import datetime as _dt
import json
from typing import Any

from app.data.errors import DataError
from app.data.jsonsafe import dumps


def _when(ts: Any) -> str:
    try:
        return _dt.datetime.fromtimestamp(float(ts)).strftime("%Y-%m-%d %H:%M")
    except (TypeError, ValueError, OSError):
        return "?"


def cmd_list(args: argparse.Namespace) -> int:
    """List runs, newest first."""
    from app.engine.run_dir import default_runs_root, list_runs

    root = args.root or default_runs_root()
    runs = [rd.summary() for rd in list_runs(root)]
    if args.json:
        print(dumps({"root": str(root), "runs": runs}))
        return 0
    if not runs:
        print(f"no runs in {root}")
        return 0
    print(f"runs in {root}:")
    name_w = max(len(r["name"]) for r in runs)
    print(f"{'NAME':<{name_w}}  {'KIND':<10} {'STATUS':<10} {'CREATED':<16} {'ROWS':>5} {'CKPT':>6}")
    for r in runs:
        ck = "-" if r["last_checkpoint_step"] is None else str(r["last_checkpoint_step"])
        print(f"{r['name']:<{name_w}}  {r['kind'][:10]:<10} {r['status']:<10} {_when(r['created']):<16} "
              f"{r['metrics_rows']:>5} {ck:>6}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """Show one run: status, config, last metrics, result and the end of its log."""
    from app.engine.run_dir import find_run

    rd = find_run(args.run, args.root)
    info = rd.summary()
    metrics = rd.read_metrics()
    out = {**info, "config": rd.read_config(), "result": rd.read_result(),
           "last_metrics": metrics[-1] if metrics else None,
           "checkpoint": str(rd.last_checkpoint()) if rd.last_checkpoint() else None,
           "log_tail": rd.tail_log(args.lines)}
    from app.engine.celllm import live

    out["live"] = live.read_index(rd.path)
    if args.live_png:
        from app.engine.celllm.live_png import write_live_pngs

        out["live_png"] = [str(p) for p in write_live_pngs(rd.path, args.live_png, colour=args.colour)]
    if args.json:
        print(dumps(out))
        return 0
    print(f"run:        {info['path']}")
    print(f"job:        {info['target'] or info['kind']}")
    print(f"status:     {info['status']}" + (f" ({info['message']})" if info.get("message") else ""))
    print(f"created:    {_when(info['created'])}")
    print(f"metrics:    {len(metrics)} rows" + (f"; last {json.dumps(metrics[-1])}" if metrics else ""))
    print(f"checkpoint: {out['checkpoint'] or 'none'}")
    if out["result"] is not None:
        print("result:     " + dumps(out["result"])[:2000])
    print("config:     " + dumps(out["config"]))
    table = live.quality_table(rd.path)
    if table:
        print("live map quality per refresh (PCA-HVG = the reference on the same cells):")
        for line in table:
            print("  " + line)
    if out.get("live_png"):
        print(f"live map PNGs: {len(out['live_png'])} in {args.live_png}")
    if out["log_tail"]:
        print(f"last {len(out['log_tail'])} log lines:")
        for line in out["log_tail"]:
            print("  " + line)
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    """Restart the run's job from its last checkpoint, with its recorded config (``prepare_run`` refuses a
    finished run and a job OmicsLab does not know)."""
    from app.engine.run_dir import find_run
    from app.jobs.cli_runner import run_with_progress

    rd = find_run(args.run, args.root)
    target = rd.target
    if not target:
        raise DataError("this run folder does not record which job made it (run.json has no target)", rd.path,
                        "Resume it with the command that started it, adding --resume.")
    if rd.status in ("running", "starting") and rd.process_alive() and not args.force:
        raise DataError(f"this run is still running (process {rd.read_run_info().get('pid')})", rd.path,
                        "Cancel it first, or add --force if that process is not this job.")
    config = rd.read_config()
    if args.device:
        config["device"] = args.device
    if args.threads:
        config["threads"] = args.threads
    result = run_with_progress(target, config, rd.path, quiet=bool(args.quiet), resume=True)
    if args.json:
        print(dumps(result))
    else:
        state = "cancelled (rerun `runs resume` to continue)" if result.get("cancelled") else "finished"
        print(f"{rd.path.name}: {state}")
    return 130 if result.get("cancelled") else 0


def register(subparsers: Any) -> None:
    """Add ``runs`` and its subcommands."""
    p = subparsers.add_parser("runs", help="list, show and resume training runs",
                              description="Browse run folders (default: the user data folder, or "
                                          "$OMICSLAB_RUNS_DIR) and resume a run from its last checkpoint.")
    p.set_defaults(func=lambda a: (p.print_help(), 0)[1])
    sub = p.add_subparsers(dest="runs_command", metavar="ACTION")

    lp = sub.add_parser("list", help="list runs, newest first")
    lp.add_argument("--root", help="runs folder (default: the user data folder or $OMICSLAB_RUNS_DIR)")
    lp.add_argument("--json", action="store_true", help="print one JSON object")
    lp.set_defaults(func=cmd_list)

    sp = sub.add_parser("show", help="show one run's status, config, metrics, result and log")
    sp.add_argument("run", help="run folder path, or a run name from `runs list`")
    sp.add_argument("--root", help="runs folder used to find a run by name")
    sp.add_argument("--lines", type=int, default=15, help="log lines to show (default 15)")
    sp.add_argument("--json", action="store_true", help="print one JSON object")
    sp.add_argument("--live-png", default=None, metavar="DIR",
                    help="write a PNG of the live cell map per refresh into DIR (UMAP, each initialised from the "
                         "previous refresh's layout so cells move rather than jump)")
    sp.add_argument("--colour", default="label", choices=("label", "batch", "predicted", "confidence"),
                    help="what colours the --live-png maps (default label)")
    sp.set_defaults(func=cmd_show)

    rp = sub.add_parser("resume", help="continue a run from its last checkpoint")
    rp.add_argument("run", help="run folder path, or a run name from `runs list`")
    rp.add_argument("--root", help="runs folder used to find a run by name")
    rp.add_argument("--device", help="override the recorded device (auto, cpu, cuda, cuda:N, mps)")
    rp.add_argument("--threads", type=int, help="override the recorded CPU thread count")
    rp.add_argument("--quiet", action="store_true", help="no progress bar")
    rp.add_argument("--force", action="store_true", help="resume even if the run looks like it is still running")
    rp.add_argument("--json", action="store_true", help="print the result as one JSON object")
    rp.set_defaults(func=cmd_resume)
