"""``python -m app bench gp [--json]``: genomic-prediction accuracy and speed, the figures issue #15/#16 ask for.

Default (``--suite speed``), in one run:

1. wheat599 E1 (599 lines x 1,279 DArT markers), every model plus the deep + GBLUP ensembles, 5 folds x 5
   repeats on the same seeded folds, with the default trainer (``auto``: on a CPU each network alone, one per
   torch thread on worker threads; on a GPU every fold x repeat x network stacked): wall time, each model's
   mean ± SD of r over repeats and its paired difference to GBLUP with a 95 % interval.
2. The per-fold path as it was (one network at a time on ONE thread) on repeat 1 only: wall time and each
   deep model's r; ``ratio`` = repeats x that time / the fast run's time, and each deep model's r from the
   fast run's repeat 1 beside it (goal: within 0.02; on a CPU the two paths train the same networks).
3. One repeat (5 folds) of a simulated 2,000-line x 1,000-marker panel with the default trainer (the per-fold
   path took 1,501 s on a quiet 2-core box; ``--synthetic-per-fold`` measures it here too).

``--suite panels`` cross-validates every trait of ``--datasets`` (wheat599, rice44k; maize282 and sorghum
too) with ``--repeats`` and ``--ensemble``, one row per trait: mean ± SD over repeats, difference to GBLUP.
``--markdown`` prints the README's table; ``--from-json A.json B.json ...`` merges saved ``--json`` outputs of
several runs (e.g. one deep model per run, GBLUP in each: same seed, same folds) into that table.

Seconds are fit + predict time; the runner adds the load average and core count (the figures mean little
without them). The README's GBLUP reference values are 10-fold x 5 repeats, shown for orientation only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA = Path(os.environ.get("OMICSLAB_SHARED_DATA", REPO.parent / "shared" / "data"))

# name -> (folder, genotype file, phenotype file, traits, README GBLUP r (10-fold x 5) per trait)
DATASETS: dict[str, tuple[str, str, str, tuple[str, ...], dict[str, float]]] = {
    "wheat599": ("wheat599_numeric", "wheat.X", "wheat.Y", ("E1", "E2", "E3", "E4"),
                 {"E1": 0.512, "E2": 0.505, "E3": 0.389, "E4": 0.472}),
    "rice44k": ("rice44k_plink", "UNL", "44kPhenos.csv", ("Plant.height",), {"Plant.height": 0.750}),
    "maize282": ("maize282_hapmap", "mdp_genotype.hmp.txt", "mdp_traits.txt", ("EarHT", "dpoll", "EarDia"),
                 {"EarHT": 0.519, "dpoll": 0.729, "EarDia": 0.500}),
    "sorghum": ("sorghum_sbdiv_vcf", "example_genotypes.vcf.gz", "example_phenotypes.csv",
                ("PlantHeight", "DaysToFlower"), {"PlantHeight": 0.687, "DaysToFlower": 0.650}),
}


def _parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m app bench gp", description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--suite", choices=("speed", "panels"), default="speed",
                    help="speed: the issue's wheat599 E1 5x5 + per-fold + synthetic run (default); panels: "
                         "one row per trait of --datasets")
    ap.add_argument("--datasets", default="wheat599,rice44k",
                    help=f"panels suite: comma-separated, of: {', '.join(DATASETS)} (default wheat599,rice44k)")
    ap.add_argument("--traits", default=None, help="only these traits (comma-separated; default: each dataset's)")
    ap.add_argument("--models", default="all", help="gblup, dnngp, deepgs, dlgwas or all (default all)")
    ap.add_argument("--ensemble", default="all", help="deep models to blend with GBLUP (default all; none)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=None, help="cap the deep models' epochs (default: theirs)")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda, auto")
    ap.add_argument("--threads", type=int, default=None,
                    help="CPU threads: one network per thread (default: as gp cv, the usable cores, <= 8)")
    ap.add_argument("--no-per-fold", action="store_true", help="speed suite: skip the per-fold reference run")
    ap.add_argument("--no-synthetic", action="store_true", help="speed suite: skip the 2,000-line panel")
    ap.add_argument("--synthetic-per-fold", action="store_true",
                    help="speed suite: also time the per-fold path on the 2,000-line panel (~25 min quiet)")
    ap.add_argument("--synthetic-lines", type=int, default=2000)
    ap.add_argument("--synthetic-markers", type=int, default=1000)
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="the shared data folder (holds genotype/)")
    ap.add_argument("--markdown", action="store_true", help="panels suite: print the README's table (markdown)")
    ap.add_argument("--from-json", nargs="+", default=None, metavar="JSON",
                    help="panels suite: run nothing; merge these saved --json outputs (rows of one trait from "
                         "several runs, e.g. one deep model each) and print the README's table")
    return ap.parse_args(argv)


def _config(args: argparse.Namespace, trainer: str | None = None) -> dict[str, Any]:
    cfg: dict[str, Any] = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr}
    if trainer is not None:
        cfg["params"] = {k: {"trainer": trainer} for k in ("dnngp", "deepgs", "dlgwas")}
    return cfg


def blend_weights(rows: list[dict[str, Any]], model: str) -> dict[str, Any] | None:
    """A blend's weight on the deep model as each fold chose it (in repeat, fold order), its mean, min and
    max, and the number of inner validation lines it was chosen on per fold; None for a model that is not a
    blend. ``rows`` are ``run_cv``'s per-fold rows."""
    mine = [r for r in rows if r["model"] == model and r.get("weight_deep") is not None]
    if not mine:
        return None
    w = [float(r["weight_deep"]) for r in mine]
    n = [int(r["inner_val_lines"]) for r in mine]
    return {"per_fold": w, "mean": round(sum(w) / len(w), 4), "min": min(w), "max": max(w),
            "inner_val_lines_per_fold": n, "inner_val_lines_mean": round(sum(n) / len(n), 1),
            "inner_val_lines_min": min(n), "inner_val_lines_max": max(n)}


def best_epochs(rows: list[dict[str, Any]], model: str) -> dict[str, Any] | None:
    """A deep model's early stopping, fold by fold (in repeat, fold order): the epoch each network restored
    (``per_fold``: one list per fold, one entry per network of its ensemble), the epochs it ran, the cap, and
    their spread: an early stop shows here, not only in the fit's warnings. None for a model without networks
    (GBLUP, a blend: its deep model has its own entry). ``rows`` are ``run_cv``'s per-fold rows."""
    mine = [r for r in rows if r["model"] == model and r.get("best_epoch") is not None]
    if not mine:
        return None
    best = [[int(e) for e in r["best_epoch"]] for r in mine]
    ran = [[int(e) for e in r["epochs_run"]] for r in mine]
    flat = sorted(e for fold in best for e in fold)
    cap = mine[0].get("max_epochs")
    out: dict[str, Any] = {"per_fold": best, "epochs_run_per_fold": ran, "max_epochs": cap,
                           "min": flat[0], "median": float(statistics.median(flat)), "max": flat[-1],
                           "n_networks": len(flat)}
    if cap is not None:  # stopped by patience before the cap (a network that ran the cap was not stopped)
        out["n_stopped_early"] = sum(1 for fold in ran for e in fold if e < int(cap))
    return out


def cv_models(geno: Any, y: Any, args: argparse.Namespace, *, repeats: int, trainer: str | None = None,
              ensemble: str | None = None, all_geno: Any = None) -> dict[str, Any]:
    """One CV of the chosen models (and ensembles) on seeded folds: wall time and per-model figures."""
    from app.engine.gp.cv import make_folds, run_cv
    from app.engine.gp.job_configs import ensemble_keys
    from app.engine.gp.jobs import ensemble_spec, model_spec, resolve_models

    keys = resolve_models(args.models)
    blends = [k for k in ensemble_keys(args.ensemble if ensemble is None else ensemble) if k in keys]
    if blends and "gblup" not in keys:
        keys = ["gblup", *keys]
    cfg = _config(args, trainer)
    specs = [model_spec(k, cfg) for k in keys] + [ensemble_spec(k) for k in blends]
    folds = make_folds(len(y), args.folds, repeats, args.seed)
    t0 = time.perf_counter()
    res = run_cv(geno, y, specs, folds, seed=args.seed, device=args.device, all_geno=all_geno)
    wall = time.perf_counter() - t0
    models: dict[str, Any] = {}
    for name, s in res.models.items():
        rep_r = s["over_repeats"]["pearson"]
        vs = s.get("vs_gblup")
        models[name] = {
            "pearson_mean": s["pearson_mean"], "pearson_sd_folds": s["pearson_sd"],
            "pearson_mean_over_repeats": rep_r["mean"], "pearson_sd_over_repeats": rep_r["sd"],
            "pearson_repeat_means": s["pearson_repeat_means"], "spearman_mean": s["spearman_mean"],
            "ndcg10_mean": s["ndcg10_mean"], "seconds": round(s["seconds"], 2), "n_warnings": len(s["warnings"]),
            "vs_gblup": None if vs is None else {k: vs[k] for k in ("mean", "sd", "low", "high", "half_width", "n",
                                                                    "distinguishable", "verdict")}}
        bw = blend_weights(res.rows, name)
        if bw is not None:
            models[name]["blend_weights"] = bw
        be = best_epochs(res.rows, name)
        if be is not None:
            models[name]["best_epochs"] = be
    return {"folds": args.folds, "repeats": repeats, "trainer": trainer or "auto", "wall_seconds": round(wall, 1),
            "models": models}


def _wheat_e1(args: argparse.Namespace) -> Any:
    folder, geno_f, pheno_f, _, _ = DATASETS["wheat599"]
    return _inputs(Path(args.data) / "genotype" / folder, geno_f, pheno_f, "E1")


def _inputs(folder: Path, geno_f: str, pheno_f: str, trait: str) -> Any:
    """One panel's genotypes joined to one trait, read as ``gp cv`` reads them."""
    from app.engine.gp.job_configs import GPCVConfig
    from app.engine.gp.jobs import load_inputs

    return load_inputs(GPCVConfig.from_dict({"geno": str(folder / geno_f), "pheno": str(folder / pheno_f),
                                             "trait": trait}))


def synthetic_panel(n_lines: int, n_markers: int, seed: int = 15) -> tuple[Any, Any]:
    """A simulated breeding population (``app.data.genotype.population``): genotypes and the trait."""
    from app.data.genotype.population import simulate_population

    geno, pheno, _ = simulate_population(n_lines=n_lines, n_markers=n_markers, seed=seed,
                                         n_families=max(20, n_lines // 20))
    y = pheno.loc[list(geno.samples), "trait"].to_numpy(dtype=float)
    return geno, y


def _one_thread(fn: Any) -> Any:
    """``fn()`` with torch on one intra-op thread (the per-fold reference path as it ran before)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn()
    finally:
        torch.set_num_threads(before)


def speed_suite(args: argparse.Namespace, say: Any) -> dict[str, Any]:
    """The issue's figures: wheat599 E1 5 x 5 with the default trainer, the per-fold path on repeat 1 (one
    network at a time, one thread), the 2,000-line panel."""
    inp = _wheat_e1(args)
    out: dict[str, Any] = {"dataset": "wheat599", "trait": inp.trait, "n_lines": len(inp.ids),
                           "n_markers": inp.geno.n_markers}
    fast = cv_models(inp.geno_y, inp.y, args, repeats=args.repeats, all_geno=inp.geno)
    out["fast"] = fast
    say(f"wheat599 E1 {args.folds}x{args.repeats} default trainer: {fast['wall_seconds']:.0f} s; " + ", ".join(
        f"{n} {m['pearson_mean']:.3f}" for n, m in fast["models"].items()))
    if not args.no_per_fold:
        per = _one_thread(lambda: cv_models(inp.geno_y, inp.y, args, repeats=1, trainer="sequential",
                                            ensemble="none", all_geno=inp.geno))
        out["per_fold_repeat1"] = per
        ratio = round(per["wall_seconds"] * args.repeats / fast["wall_seconds"], 2)
        out["ratio_per_fold_x_repeats_over_fast"] = ratio
        diffs = {}
        for name, m in per["models"].items():
            if name == "GBLUP":
                continue
            first = fast["models"][name]["pearson_repeat_means"][0]
            diffs[name] = {"per_fold_r": m["pearson_mean"], "fast_repeat1_r": first,
                           "difference": None if first is None else round(first - m["pearson_mean"], 4)}
        out["deep_r_fast_minus_per_fold_repeat1"] = diffs
        say(f"per-fold path (1 thread), repeat 1: {per['wall_seconds']:.0f} s (x{args.repeats} = "
            f"{per['wall_seconds'] * args.repeats:.0f} s; ratio {ratio}); "
            + ", ".join(f"{n} {d['per_fold_r']:.3f} vs {d['fast_repeat1_r']:.3f}" for n, d in diffs.items()))
    if not args.no_synthetic:
        geno, y = synthetic_panel(args.synthetic_lines, args.synthetic_markers)
        syn = {"n_lines": geno.n_samples, "n_markers": geno.n_markers,
               "fast": cv_models(geno, y, args, repeats=1, ensemble="none", all_geno=geno)}
        say(f"synthetic {geno.n_samples}x{geno.n_markers}, 1 repeat: {syn['fast']['wall_seconds']:.0f} s")
        if args.synthetic_per_fold:
            syn["per_fold"] = _one_thread(lambda: cv_models(geno, y, args, repeats=1, trainer="sequential",
                                                            ensemble="none", all_geno=geno))
            say(f"synthetic per-fold path (1 thread): {syn['per_fold']['wall_seconds']:.0f} s")
        out["synthetic"] = syn
    return out


def run_row(dataset: str, trait: str, args: argparse.Namespace) -> dict[str, Any]:
    """Cross-validate every chosen model on one dataset and trait; returns one result row."""
    folder, geno_f, pheno_f, _, refs = DATASETS[dataset]
    t0 = time.perf_counter()
    inp = _inputs(Path(args.data) / "genotype" / folder, geno_f, pheno_f, trait)
    load_s = time.perf_counter() - t0
    res = cv_models(inp.geno_y, inp.y, args, repeats=args.repeats, all_geno=inp.geno)
    models = res["models"]
    row: dict[str, Any] = {"dataset": dataset, "trait": inp.trait, "n_lines": len(inp.ids),
                           "n_markers": inp.geno.n_markers, "load_seconds": round(load_s, 2),
                           "wall_seconds": res["wall_seconds"], "models": models,
                           "readme_gblup_10x5": refs.get(inp.trait)}
    deep = [m["pearson_mean"] for n, m in models.items() if n != "GBLUP"]
    if "GBLUP" in models and deep:
        row["best_deep_minus_gblup"] = round(max(deep) - models["GBLUP"]["pearson_mean"], 4)
    return row


def _pm(m: dict[str, Any]) -> str:
    mean, sd = m.get("pearson_mean_over_repeats"), m.get("pearson_sd_over_repeats")
    return "-" if mean is None else f"{mean:.3f}" + (f" ± {sd:.3f}" if sd is not None else "")


def _vs(m: dict[str, Any]) -> str:
    vs = m.get("vs_gblup")
    if not vs or vs.get("mean") is None:
        return ""
    return f"{vs['mean']:+.3f}" + (f" ± {vs['half_width']:.3f}" if vs.get("half_width") is not None else "")


def _notes(m: dict[str, Any]) -> str:
    bw, be = m.get("blend_weights"), m.get("best_epochs")
    if be:
        cap = be.get("max_epochs")
        text = f"best epoch {be['min']}-{be['max']} (median {be['median']:g})" + (f" of {cap}" if cap else "")
        if be.get("n_stopped_early") is not None:
            text += f"; {be['n_stopped_early']} of {be['n_networks']} networks stopped early"
        return text
    if not bw:
        return ""
    return (f"w {bw['mean']:.2f} ({bw['min']:.2f}-{bw['max']:.2f}) on {bw['inner_val_lines_mean']:.0f} inner "
            "val lines")


def model_table(models: dict[str, Any]) -> str:
    """One line per model: r mean ± SD over repeats, difference to GBLUP ± 95 % half-width, seconds; for a
    blend, its mean weight on the deep model (min-max over folds) and the inner validation lines per fold; for
    a deep model, the range of its networks' restored epochs and how many stopped early."""
    lines = [f"  {'model':<14} {'r (mean ± SD over repeats)':>27} {'r - GBLUP (95 % CI)':>21} {'seconds':>8}"]
    for name, m in models.items():
        lines.append(f"  {name:<14} {_pm(m):>27} {_vs(m):>21} {m['seconds']:>8.1f}  {_notes(m)}".rstrip())
    return "\n".join(lines)


def _speed_text(out: dict[str, Any]) -> str:
    st = out["fast"]
    lines = [f"wheat599 {out['trait']} ({out['n_lines']} lines x {out['n_markers']} markers), {st['folds']} folds x "
             f"{st['repeats']} repeats, default trainer: {st['wall_seconds']:.0f} s wall (goal <= 600 s on 2 cores)",
             model_table(st["models"])]
    lines += [f"  {m['vs_gblup']['verdict']}" for m in st["models"].values() if m.get("vs_gblup")]
    if "per_fold_repeat1" in out:
        per = out["per_fold_repeat1"]
        lines.append(f"per-fold path (one network at a time, 1 thread), repeat 1 only: {per['wall_seconds']:.0f} s; "
                     f"x{st['repeats']} repeats / default = {out['ratio_per_fold_x_repeats_over_fast']}x")
        for name, d in out["deep_r_fast_minus_per_fold_repeat1"].items():
            lines.append(f"  {name:<8} repeat-1 r: per-fold {d['per_fold_r']:.3f}, default "
                         f"{d['fast_repeat1_r']:.3f} (difference {d['difference']:+.3f}; goal within 0.02)")
    if "synthetic" in out:
        syn = out["synthetic"]
        lines.append(f"simulated panel {syn['n_lines']} lines x {syn['n_markers']} markers, {syn['fast']['folds']} "
                     f"folds x 1 repeat, default trainer: {syn['fast']['wall_seconds']:.0f} s (per-fold path "
                     "measured quiet: 1,501 s; goal <= 500 s)")
        lines.append(model_table(syn["fast"]["models"]))
        if "per_fold" in syn:
            lines.append(f"  per-fold path here: {syn['per_fold']['wall_seconds']:.0f} s")
    return "\n".join(lines)


PANEL_COLUMNS = ("GBLUP", "DNNGP", "DeepGS", "DLGWAS", "GBLUP+DNNGP", "GBLUP+DeepGS", "GBLUP+DLGWAS")


def merge_panel_runs(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of several panels-suite outputs merged by (dataset, trait): each model's figures with the load
    average of the run that measured it. GBLUP is in every run (the paired difference needs it on the same
    folds); the same seed gives the same folds (repeat k's folds do not depend on how many repeats ran), so
    its repeat means must agree across runs; the row keeps the GBLUP of the run with the most repeats.

    Raises:
        ValueError: runs of one trait on different folds (GBLUP's repeat means differ).
    """
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for doc in docs:
        load = (doc.get("machine") or {}).get("load_1m_mean")
        for row in doc.get("rows") or []:
            key = (row["dataset"], row["trait"])
            m = merged.setdefault(key, {**{k: row[k] for k in ("dataset", "trait", "n_lines", "n_markers")},
                                        "readme_gblup_10x5": row.get("readme_gblup_10x5"), "models": {}})
            for name, fig in row["models"].items():
                old = m["models"].get(name)
                if name == "GBLUP" and old is not None:
                    a, b = old["pearson_repeat_means"], fig["pearson_repeat_means"]
                    if max(abs(x - y) for x, y in zip(a, b, strict=False)) > 1e-6:
                        raise ValueError(f"{key}: GBLUP differs between runs (different folds or seeds)")
                    if len(b) <= len(a):
                        continue
                m["models"][name] = {**fig, "load_1m_mean": load, "folds": doc.get("folds"),
                                     "repeats": doc.get("repeats")}
    return list(merged.values())


def _cell(m: dict[str, Any] | None, repeats: int) -> str:
    if m is None:
        return "not run"
    out = _pm(m)
    vs = m.get("vs_gblup")
    if vs and vs.get("mean") is not None:
        out += f" ({vs['mean']:+.3f} [{vs['low']:+.3f}, {vs['high']:+.3f}])"
    bw = m.get("blend_weights")
    if bw:  # the blend's mean weight on the deep model over folds
        out += f" (w {bw['mean']:.2f})"
    k = len(m.get("pearson_repeat_means") or [])
    if k != repeats:  # fewer repeats than GBLUP's: its difference is paired on its own repeats
        out += f", {k} repeats"
    return out


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The README's GP table: one row per panel and trait; each model's r mean ± SD over repeats and, beside
    it, its paired difference to GBLUP with the 95 % interval (a blend: and its mean weight on the deep model,
    ``w``); the load average of the runs."""
    head = ["panel", "trait", "lines x markers", *PANEL_COLUMNS, "load (1-min mean)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        # the deep runs' load (GBLUP's seconds are small under any load); GBLUP's when it ran alone
        timed = [m for n, m in r["models"].items() if n != "GBLUP"] or list(r["models"].values())
        loads = sorted({m["load_1m_mean"] for m in timed if m.get("load_1m_mean") is not None})
        load = "-" if not loads else (f"{loads[0]:.1f}" if len(loads) == 1 else f"{loads[0]:.1f}-{loads[-1]:.1f}")
        k = len((r["models"].get("GBLUP") or {}).get("pearson_repeat_means") or [])
        cells = [r["dataset"], r["trait"], f"{r['n_lines']} x {r['n_markers']:,}",
                 *[_cell(r["models"].get(c), k) for c in PANEL_COLUMNS], load]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; prints a table (or one JSON object with --json)."""
    args = _parse(list(argv or []))
    from app.data.errors import OmicsLabError
    from app.engine.device import set_threads

    if args.from_json:
        try:
            docs = [json.loads(Path(f).read_text(encoding="utf-8")) for f in args.from_json]
            rows = merge_panel_runs(docs)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            print(f"error: cannot merge the saved runs ({exc}); give outputs of `bench gp --suite panels --json`",
                  file=sys.stderr)
            return 2
        print(markdown_table(rows))
        return 0
    threads = set_threads(args.threads, many_fits=True)
    names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    bad = [n for n in names if n not in DATASETS]
    if bad or not names:
        print(f"error: unknown dataset(s) {', '.join(bad) or '(none)'}; choose from {', '.join(DATASETS)}",
              file=sys.stderr)
        return 2
    if not (Path(args.data) / "genotype").is_dir():
        print(f"error: no shared data at {args.data} (need its genotype/ folder); pass --data", file=sys.stderr)
        return 2
    t0 = time.perf_counter()

    def say(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.0f} s] {msg}", file=sys.stderr, flush=True)

    out: dict[str, Any] = {"benchmark": "gp", "suite": args.suite, "folds": args.folds, "repeats": args.repeats,
                           "seed": args.seed, "device": args.device, "threads": threads, "epochs": args.epochs}
    only = {t.strip().lower() for t in args.traits.split(",")} if args.traits else None
    try:
        if args.suite == "speed":
            out.update(speed_suite(args, say))
        else:
            rows = []
            for ds in names:
                for trait in DATASETS[ds][3]:
                    if only is not None and trait.lower() not in only:
                        continue
                    rows.append(run_row(ds, trait, args))
                    say(f"{ds} {trait}: " + ", ".join(f"{n} {_pm(m)}" for n, m in rows[-1]["models"].items()))
            out["rows"] = rows
    except OmicsLabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out["total_seconds"] = round(time.perf_counter() - t0, 1)
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"gp bench ({args.suite}): seed {args.seed}, {args.device}, {threads} thread(s); r = Pearson r on held-out "
          "folds; seconds = fit + predict over the folds")
    if args.suite == "speed":
        print(_speed_text(out))
    elif args.markdown:
        print(markdown_table(merge_panel_runs([out])))
    else:
        for r in out["rows"]:
            ref = r.get("readme_gblup_10x5")
            print(f"{r['dataset']} {r['trait']} ({r['n_lines']} lines x {r['n_markers']} markers; README GBLUP 10x5 "
                  f"{'-' if ref is None else f'{ref:.3f}'}), {r['wall_seconds']:.0f} s")
            print(model_table(r["models"]))
    print(f"total {out['total_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
