"""``python -m app gp cv|train|predict``: genomic prediction from the command line (the GUI's twin).

Each subcommand builds the job config of ``app.engine.gp.jobs`` and runs it through
``app.jobs.cli_runner.run_with_progress`` (a spawned child with a progress bar; Ctrl-C cancels), then
prints a results table. Bad input ends in one ``error: ...`` message and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from app.data.errors import DataError

MODEL_CHOICES = "gblup, dnngp, deepgs, dlgwas or all (comma-separate several; any case)"
_KNOWN = ("gblup", "dnngp", "deepgs", "dlgwas", "all")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``gp`` with its ``cv``, ``train`` and ``predict`` subcommands."""
    p = subparsers.add_parser(
        "gp", help="genomic prediction: cross-validate, train, predict (GBLUP, DNNGP, DeepGS, DLGWAS)",
        description="Genomic prediction from genotypes (PLINK .bed, VCF, HapMap, numeric) and a phenotype table.")
    sub = p.add_subparsers(dest="gp_command", metavar="STEP")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    cv = sub.add_parser("cv", help="k-fold cross-validation of one or all models on the same folds",
                        description="Cross-validate models on the same seeded folds; writes RUN/metrics.json, "
                                    "RUN/predictions.csv and RUN/importance.csv and prints a table.")
    _data_args(cv)
    cv.add_argument("--folds", type=int, default=5, help="folds per repeat (default 5)")
    cv.add_argument("--repeats", type=int, default=1, help="repeats with reshuffled folds (default 1)")
    cv.add_argument("--group", default=None, metavar="COL",
                    help="phenotype column (e.g. family, population): a group never spans train and test")
    cv.add_argument("--out", default=None, metavar="RUN", help="run folder (default: a new one under the runs folder)")
    _fit_args(cv)
    cv.set_defaults(func=run_cv)

    tr = sub.add_parser("train", help="fit on every phenotyped line; save models and GEBVs of all lines",
                        description="Fit the models on all phenotyped lines; writes RUN/models/NAME, RUN/gebv.csv "
                                    "(every genotyped line), RUN/gebv_unphenotyped.csv and RUN/importance.csv.")
    _data_args(tr)
    tr.add_argument("--out", required=True, metavar="RUN", help="run folder to create")
    _fit_args(tr)
    tr.set_defaults(func=run_train)

    pr = sub.add_parser("predict", help="predict new lines with a trained run",
                        description="Predict new lines with the models of a `gp train` run (markers are matched "
                                    "by ID; absent markers are imputed, swapped alleles recoded).")
    pr.add_argument("--model", required=True, metavar="RUN", help="folder of a `gp train` run (or RUN/models/NAME)")
    pr.add_argument("--geno", required=True, metavar="PATH", help="genotypes of the lines to predict (any format)")
    pr.add_argument("--out", required=True, metavar="CSV", help="predictions table to write (ID + one column/model)")
    pr.add_argument("--models", default=None, metavar="NAMES", help="only these of the run's models")
    _orientation_arg(pr)
    pr.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    _common(pr)
    pr.set_defaults(func=run_predict)


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--geno", required=True, metavar="PATH",
                   help="genotypes: PLINK .bed (or prefix), VCF(.gz), HapMap .hmp.txt or a numeric matrix")
    p.add_argument("--pheno", required=True, metavar="PATH",
                   help="phenotype table (CSV/TSV/whitespace, TASSEL, .fam); joined to the genotypes by ID")
    p.add_argument("--trait", required=True, metavar="NAME",
                   help="trait column (any case) or its 1-based column number (wheat.Y: E1..E4 or 1..4)")
    p.add_argument("--model", default="gblup", metavar="MODEL", help=MODEL_CHOICES + " (default gblup)")
    p.add_argument("--id-column", default=None, metavar="COL", help="phenotype column holding the line IDs")
    _orientation_arg(p)


def _orientation_arg(p: argparse.ArgumentParser) -> None:
    from app.data.genotype.readers import ORIENTATIONS

    p.add_argument("--orientation", choices=ORIENTATIONS, default=None,
                   help="numeric matrices: samples_x_markers (lines are rows) or markers_x_samples (default auto: "
                        "the axis whose IDs join the phenotypes, then the corner cell's word, then the shape)")


def _fit_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--epochs", type=int, default=None, metavar="N", help="deep models: at most N epochs")
    p.add_argument("--batch-size", type=int, default=None, metavar="N", help="deep models: batch size")
    p.add_argument("--lr", type=float, default=None, help="deep models: learning rate")
    p.add_argument("--params", default=None, metavar="JSON",
                   help='per-model parameters, e.g. \'{"DNNGP": {"preset": "v3"}}\'')
    p.add_argument("--seed", type=int, default=0, help="fold and training seed (default 0)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    p.add_argument("--min-maf", type=float, default=None, help="drop markers with a lower minor-allele frequency")
    p.add_argument("--min-call-rate", type=float, default=None, help="drop markers called in fewer lines")
    p.add_argument("--max-markers", type=int, default=None, metavar="N", help="quick run: N evenly spaced markers")
    p.add_argument("--max-lines", type=int, default=None, metavar="N", help="quick run: N random phenotyped lines")
    _common(p)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=None, help="CPU threads for the job (default 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--inline", action="store_true",
                   help="run the job in this process instead of a child process (debugging, profiling, scripts "
                        "that already isolate runs); Ctrl-C then stops at once")
    p.add_argument("--json", action="store_true", help="print the job's result as one JSON object")


def _clean(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def _check_models(text: str) -> list[str]:
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    bad = [t for t in names if t not in _KNOWN]
    if bad or not names:
        raise DataError(f"unknown model {', '.join(bad) or repr(text)}", None, f"use {MODEL_CHOICES}")
    return names


def _check_path(path: str, what: str) -> None:
    p = Path(path)
    if not (p.exists() or p.with_name(p.name + ".bed").exists()):
        raise DataError(f"{what} not found", p, "check the path")


def _check_pheno(args: argparse.Namespace) -> None:
    """Trait and group column checked here (phenotype tables are small), so a typo is reported at once,
    before a job process starts."""
    from app.data.genotype import read_phenotypes
    from app.engine.gp.jobs import resolve_trait

    pheno = read_phenotypes(args.pheno, id_column=args.id_column)
    resolve_trait(pheno, args.trait)
    group = getattr(args, "group", None)
    if group and group not in pheno.columns:
        raise DataError(f"group column {group!r} not found in the phenotype table", args.pheno,
                        f"available columns: {', '.join(map(str, pheno.columns))}")


def _params(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        val = json.loads(text)
    except ValueError as exc:
        raise DataError(f"--params is not valid JSON ({exc})", None, 'e.g. \'{"DNNGP": {"preset": "v3"}}\'') from None
    if not isinstance(val, dict) or not all(isinstance(v, dict) for v in val.values()):
        raise DataError("--params must map model names to objects", None, 'e.g. \'{"DeepGS": {"epochs": 50}}\'')
    return val


def fit_config(args: argparse.Namespace) -> dict[str, Any]:
    """Job config for ``cv`` / ``train`` from the parsed options (validated before any child starts)."""
    models = _check_models(args.model)
    _check_path(args.geno, "genotype file")
    _check_path(args.pheno, "phenotype file")
    _check_pheno(args)
    for name in ("folds", "repeats"):
        v = getattr(args, name, None)
        if v is not None and v < (2 if name == "folds" else 1):
            raise DataError(f"--{name} must be at least {2 if name == 'folds' else 1}, got {v}")
    for name in ("epochs", "batch_size", "max_markers", "max_lines", "threads"):
        v = getattr(args, name, None)
        if v is not None and v < 1:
            raise DataError(f"--{name.replace('_', '-')} must be at least 1, got {v}")
    return _clean({
        "geno": str(args.geno), "pheno": str(args.pheno), "trait": args.trait, "models": models,
        "id_column": args.id_column, "orientation": args.orientation, "folds": getattr(args, "folds", None),
        "repeats": getattr(args, "repeats", None),
        "group": getattr(args, "group", None), "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
        "params": _params(args.params), "seed": args.seed, "device": args.device, "min_maf": args.min_maf,
        "min_call_rate": args.min_call_rate, "max_markers": args.max_markers, "max_lines": args.max_lines,
        "threads": args.threads, "run_dir": str(Path(args.out)) if args.out else None,
    })


def _run(target: str, config: dict[str, Any], run_dir: str | None, args: argparse.Namespace) -> dict[str, Any]:
    if getattr(args, "inline", False):
        return _run_inline(target, config, run_dir, args)
    from app.jobs.cli_runner import run_with_progress

    return run_with_progress(target, config, run_dir, quiet=bool(args.quiet))


def _run_inline(target: str, config: dict[str, Any], run_dir: str | None, args: argparse.Namespace) -> dict[str, Any]:
    """The same job function, run folder and result file as a child job would have, in this process."""
    from app.data.errors import OmicsLabError
    from app.engine.events import Event, Log
    from app.engine.gp import jobs
    from app.engine.reporter import Cancelled, Reporter
    from app.jobs.process import prepare_run

    rd, cfg, _ = prepare_run(target, config, run_dir, device=str(config.get("device", "cpu")), status="running")

    def show(ev: Event) -> None:
        if isinstance(ev, Log):
            rd.log(ev.line)
            if not args.quiet:
                print(ev.line if ev.level == "info" else f"{ev.level}: {ev.line}", file=sys.stderr)

    if args.threads:
        from app.engine.device import set_threads

        set_threads(args.threads)
    fn = getattr(jobs, target.rpartition(":")[2])
    try:
        value = fn(cfg, Reporter(sink=show))
    except Cancelled:
        rd.set_status("cancelled")
        return {"cancelled": True, "run_dir": str(rd.path)}
    except OmicsLabError as exc:
        rd.set_status("failed", message=str(exc))
        raise
    rd.write_result(value)
    rd.set_status("done")
    return value


def _fmt(v: Any, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _join_line(result: dict[str, Any]) -> str:
    """How the genotypes met the phenotype table, in one line."""
    j = result.get("join") or {}
    return (f"joined {j.get('n_both')} genotyped lines to phenotype rows (by {j.get('how')}); "
            f"{j.get('n_geno_only')} genotyped without a phenotype row, {j.get('n_pheno_only')} phenotype rows "
            f"without genotypes, {j.get('n_trait_missing')} with no value for the trait")


def results_table(result: dict[str, Any]) -> str:
    """The CV results as a plain-text table (one row per model)."""
    head = (f"{result.get('trait')}: {result.get('n_lines')} lines x {result.get('n_markers')} markers, "
            f"{result.get('n_folds')}-fold x {result.get('repeats')} repeat(s)"
            + (f", grouped by {result['group']} ({result.get('n_groups')} groups)" if result.get("group") else ""))
    cols = f"{'model':<8} {'pearson r':>9} {'sd':>6} {'spearman':>8} {'rmse':>9} {'ndcg@1%':>8} {'ndcg@10%':>8} " \
           f"{'seconds':>8}"
    lines = [head, _join_line(result), cols, "-" * len(cols)]
    for name, m in (result.get("models") or {}).items():
        lines.append(f"{name:<8} {_fmt(m.get('pearson_mean')):>9} {_fmt(m.get('pearson_sd')):>6} "
                     f"{_fmt(m.get('spearman_mean')):>8} {_fmt(m.get('rmse_mean'), 4):>9} "
                     f"{_fmt(m.get('ndcg1_mean')):>8} {_fmt(m.get('ndcg10_mean')):>8} {m.get('seconds', 0):>8.1f}")
    for name, m in (result.get("models") or {}).items():
        if m.get("warnings"):
            lines.append(f"warning: {name}: {m['warnings'][-1]}"
                         + (f" (+{len(m['warnings']) - 1} more)" if len(m["warnings"]) > 1 else ""))
    lines.append(f"metrics: {result.get('metrics_json')}")
    lines.append(f"out-of-fold predictions: {result.get('predictions_csv')}")
    if result.get("importance_csv"):
        lines.append(f"marker importance: {result['importance_csv']}")
    return "\n".join(lines)


def _finish(result: dict[str, Any], args: argparse.Namespace, summary: str) -> int:
    if result.get("cancelled"):
        print("cancelled", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(result, default=str))
    else:
        print(summary)
    return 0


def run_cv(args: argparse.Namespace) -> int:
    """``gp cv``."""
    config = fit_config(args)
    result = _run("app.engine.gp.jobs:cv", config, config.get("run_dir"), args)
    return _finish(result, args, "" if result.get("cancelled") else results_table(result))


def run_train(args: argparse.Namespace) -> int:
    """``gp train``."""
    config = fit_config(args)
    result = _run("app.engine.gp.jobs:train", config, config["run_dir"], args)
    if result.get("cancelled"):
        return _finish(result, args, "")
    lines = [f"trained {', '.join(result['models'])} on {result['n_train']} lines x {result['n_markers']} markers "
             f"(trait {result['trait']})", _join_line(result)]
    for name, f in (result.get("fits") or {}).items():
        vc = f.get("varcomp") or []
        extra = f", REML h2 {vc[0]['h2']:.3f}" if vc and vc[0].get("h2") is not None else ""
        lines.append(f"  {name}: {f['seconds']:.1f} s{extra}" + (f"; warning: {f['warnings'][-1]}" if f["warnings"]
                                                                 else ""))
    lines.append(f"GEBVs of all {result['n_genotyped']} genotyped lines: {result['gebv_csv']}")
    lines.append(f"GEBVs of the {result['n_unphenotyped']} lines without a phenotype: "
                 f"{result['gebv_unphenotyped_csv']}")
    if result.get("importance_csv"):
        lines.append(f"marker importance: {result['importance_csv']}")
    lines.append(f"predict new lines: python -m app gp predict --model {result['run_dir']} --geno PATH --out CSV")
    return _finish(result, args, "\n".join(lines))


def predict_config(args: argparse.Namespace) -> dict[str, Any]:
    """Job config for ``predict``."""
    if not Path(args.model).is_dir():
        raise DataError("model run folder not found", args.model, "give the --out folder of `gp train`")
    from app.engine.gp.jobs import find_train_run

    find_train_run(args.model)  # a wrong folder is reported before a job starts
    _check_path(args.geno, "genotype file")
    if args.models:
        _check_models(args.models)
    return _clean({"model": str(args.model), "geno": str(args.geno), "out": str(args.out), "models": args.models,
                   "orientation": args.orientation, "device": args.device, "threads": args.threads})


def run_predict(args: argparse.Namespace) -> int:
    """``gp predict``."""
    config = predict_config(args)
    result = _run("app.engine.gp.jobs:predict", config, None, args)
    if result.get("cancelled"):
        return _finish(result, args, "")
    summary = (f"predicted {result['n_lines']} lines with {', '.join(result['models'])} (trait {result['trait']}); "
               f"{result['align']['text']}\nwrote {result['predictions_csv']}")
    return _finish(result, args, summary)
