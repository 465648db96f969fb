"""``python -m app gp cv|train|predict``: genomic prediction from the command line (the GUI's twin).

Each subcommand builds the job config of ``app.engine.gp.jobs`` and runs it through
``app.jobs.cli_runner.run_with_progress`` (a spawned child with a progress bar; Ctrl-C cancels), then
prints a results table. Bad input ends in one ``error: ...`` message and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from app.cli.options import add_config_options, config_from_args
from app.data.errors import DataError
from app.data.jsonsafe import dumps
from app.engine.gp.job_configs import GPCVConfig, GPPredictConfig, GPTrainConfig
from app.engine.registry import job


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
    add_config_options(cv, GPCVConfig)
    _common(cv)
    cv.set_defaults(func=run_cv)

    tr = sub.add_parser("train", help="fit on every phenotyped line; save models and GEBVs of all lines",
                        description="Fit the models on all phenotyped lines; writes RUN/models/NAME, RUN/gebv.csv "
                                    "(every genotyped line), RUN/gebv_unphenotyped.csv and RUN/importance.csv.")
    add_config_options(tr, GPTrainConfig)
    _common(tr)
    tr.set_defaults(func=run_train)

    pr = sub.add_parser("predict", help="predict new lines with a trained run",
                        description="Predict new lines with the models of a `gp train` run (markers are matched "
                                    "by ID; absent markers are imputed, swapped alleles recoded).")
    add_config_options(pr, GPPredictConfig)
    _common(pr)
    pr.set_defaults(func=run_predict)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--inline", action="store_true",
                   help="run the job in this process instead of a child process (debugging, profiling, scripts "
                        "that already isolate runs); Ctrl-C then stops at once")
    p.add_argument("--json", action="store_true", help="print the job's result as one JSON object")


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


def fit_config(args: argparse.Namespace) -> dict[str, Any]:
    """Job config for ``cv`` / ``train`` from the parsed options (validated before any child starts)."""
    cls = GPCVConfig if hasattr(args, "folds") else GPTrainConfig
    cfg = config_from_args(cls, args)
    _check_path(cfg.geno, "genotype file")
    _check_path(cfg.pheno, "phenotype file")
    _check_pheno(args)
    return cfg.to_dict()


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
    many = int(result.get("repeats") or 1) > 1
    sd_head = "sd rep" if many else "sd"  # with repeats: SD of the repeat means (the split noise)
    w = max([8, *(len(str(n)) for n in (result.get("models") or {}))])  # ensembles have long names
    cols = f"{'model':<{w}} {'pearson r':>9} {sd_head:>6} {'spearman':>8} {'rmse':>9} {'ndcg@1%':>8} " \
           f"{'ndcg@10%':>8} {'seconds':>8}  {'r - GBLUP (95 % CI)':<22}"
    lines = [head, _join_line(result), cols, "-" * len(cols)]
    for name, m in (result.get("models") or {}).items():
        sd = ((m.get("over_repeats") or {}).get("pearson") or {}).get("sd") if many else m.get("pearson_sd")
        vs = m.get("vs_gblup") or {}
        diff = "" if vs.get("mean") is None else (
            f"{vs['mean']:+.3f}" + (f" ± {vs['half_width']:.3f}" if vs.get("half_width") is not None else ""))
        lines.append(f"{name:<{w}} {_fmt(m.get('pearson_mean')):>9} {_fmt(sd):>6} "
                     f"{_fmt(m.get('spearman_mean')):>8} {_fmt(m.get('rmse_mean'), 4):>9} "
                     f"{_fmt(m.get('ndcg1_mean')):>8} {_fmt(m.get('ndcg10_mean')):>8} {m.get('seconds', 0):>8.1f}  "
                     f"{diff:<22}".rstrip())
    for m in (result.get("models") or {}).values():
        if (m.get("vs_gblup") or {}).get("verdict"):
            lines.append(m["vs_gblup"]["verdict"])
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
        print(dumps(result))
    else:
        print(summary)
    return 0


def run_cv(args: argparse.Namespace) -> int:
    """``gp cv``."""
    config = fit_config(args)
    result = _run(job("gp.cv").target, config, config.get("run_dir"), args)
    return _finish(result, args, "" if result.get("cancelled") else results_table(result))


def run_train(args: argparse.Namespace) -> int:
    """``gp train``."""
    config = fit_config(args)
    result = _run(job("gp.train").target, config, config["run_dir"], args)
    if result.get("cancelled"):
        return _finish(result, args, "")
    lines = [f"trained {', '.join(result['models'])} on {result['n_train']} lines x {result['n_markers']} markers "
             f"(trait {result['trait']})", _join_line(result)]
    for name, f in (result.get("fits") or {}).items():
        vc = f.get("varcomp") or []
        extra = f", REML h2 {vc[0]['h2']:.3f}" if vc and vc[0].get("h2") is not None else ""
        if f.get("weight_deep") is not None:  # a blend: its weight, chosen on inner validation lines
            extra = (f", weight {f['weight_deep']:.2f} on the deep model (chosen on {f['inner_val_lines']} inner "
                     "validation lines)")
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
    cfg = config_from_args(GPPredictConfig, args)
    if not Path(cfg.model).is_dir():
        raise DataError("model run folder not found", cfg.model, "give the --out folder of `gp train`")
    from app.engine.gp.jobs import find_train_run

    find_train_run(cfg.model)  # a wrong folder is reported before a job starts
    _check_path(cfg.geno, "genotype file")
    return cfg.to_dict()


def run_predict(args: argparse.Namespace) -> int:
    """``gp predict``."""
    config = predict_config(args)
    result = _run(job("gp.predict").target, config, None, args)
    if result.get("cancelled"):
        return _finish(result, args, "")
    summary = (f"predicted {result['n_lines']} lines with {', '.join(result['models'])} (trait {result['trait']}); "
               f"{result['align']['text']}\nwrote {result['predictions_csv']}")
    return _finish(result, args, summary)
