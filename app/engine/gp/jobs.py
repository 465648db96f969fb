"""Genomic-prediction jobs, run in a child process by ``app.jobs`` (GUI) or ``gp`` (CLI).

* ``cv(config, reporter)``: every chosen model on the same seeded (grouped) folds; writes
  ``RUN/metrics.json``, ``RUN/predictions.csv`` (out-of-fold) and ``RUN/importance.csv``.
* ``train(config, reporter)``: fit on all phenotyped lines; writes ``RUN/models/NAME/``, ``RUN/markers.csv``,
  ``RUN/gp_model.json``, ``RUN/gebv.csv`` (every genotyped line), ``RUN/gebv_unphenotyped.csv`` and
  ``RUN/importance.csv``. A model may be a blend, ``gblup+deepgs``: GBLUP and DeepGS fitted on all lines,
  averaged with the weight chosen on the networks' inner validation lines (training lines only), saved in
  ``RUN/models/GBLUP+DeepGS/`` (``ensemble.json`` holds the weight, which ``predict`` applies).
* ``predict(config, reporter)``: load a train run's models, put new genotypes on their markers
  (``align_markers``) and write a CSV of predictions with the line IDs.

Their settings (defaults, ranges, help) are the fields of ``GPCVConfig``, ``GPTrainConfig`` and
``GPPredictConfig`` (``app.engine.gp.job_configs``); a dict is validated into one. Every file is written
atomically.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from app.data.errors import DataError
from app.data.export import write_csv_atomic
from app.data.genotype import (
    GenotypeMatrix,
    JoinReport,
    align_markers,
    check_informative,
    join_phenotypes,
    pheno_id_candidates,
    read_genotypes,
    read_phenotypes,
    run_qc,
)
from app.data.jsonsafe import write_json
from app.engine.gp.base import MODEL_NAMES, FitFn, FittedModel
from app.engine.gp.cv import ModelSpec, make_folds, run_cv
from app.engine.gp.job_configs import (
    GPCVConfig,
    GPFitConfig,
    GPPredictConfig,
    GPTrainConfig,
    blend_part,
    ensemble_keys,
    model_keys,
)
from app.engine.reporter import Reporter, ensure_reporter
from app.engine.results import GPCVResult, GPPredictResult, GPTrainResult

DISPLAY = {"gblup": "GBLUP", "dnngp": "DNNGP", "deepgs": "DeepGS", "dlgwas": "DLGWAS"}
DEEP_OVERRIDES = ("epochs", "batch_size", "lr")  # job-level settings passed to every deep model
MODEL_INFO = "gp_model.json"
MARKERS_CSV = "markers.csv"


# --------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------


def resolve_models(models: Any) -> list[str]:
    """Model keys ("gblup", ...) from names in any case, a list or a comma string; "all"/"compare" = all;
    None = all (``model_keys`` of the job configs does the work).

    Raises:
        DataError: an unknown name or an empty list.
    """
    return list(model_keys(MODEL_NAMES if models is None else models))


def fit_function(key: str) -> FitFn:
    """The fit function of a model; the deep models (torch) are imported only when asked for."""
    if key == "gblup":
        from app.engine.gp.gblup import fit_gblup

        return fit_gblup
    try:
        from app.engine.gp import deep
    except ImportError as exc:  # the deep models are built separately; GBLUP must work without them
        raise DataError(f"the deep models are not available in this build ({exc})", None,
                        "use --model gblup") from exc
    return deep.FIT_FUNCTIONS[key]


def model_settings(config: GPFitConfig) -> dict[str, Any]:
    """The part of a job config ``model_params`` reads: ``DEEP_OVERRIDES`` and the per-model ``params``."""
    return {**{k: getattr(config, k) for k in DEEP_OVERRIDES}, "params": dict(config.params or {})}


def model_params(key: str, config: dict[str, Any]) -> dict[str, Any]:
    """Parameters for one model: the job's epochs/batch_size/lr (deep models only), then
    ``config["params"][NAME]`` (any case of the name). ``config``: those settings only (``model_settings``
    of a job config; a benchmark's or test's own dict), not the whole job config."""
    out: dict[str, Any] = {}
    if key != "gblup":
        out.update({k: config[k] for k in DEEP_OVERRIDES if config.get(k) is not None})
    extra = config.get("params") or {}
    for name, vals in extra.items():
        if str(name).lower() == key and isinstance(vals, dict):
            out.update(vals)
    return out


def display_name(key: str) -> str:
    """The display name of a model key: "deepgs" -> "DeepGS", the blend "gblup+deepgs" -> "GBLUP+DeepGS"."""
    part = blend_part(key)
    if part is None:
        return DISPLAY[key]
    from app.engine.gp.ensemble import ensemble_name

    return ensemble_name(DISPLAY[part])


def ensemble_spec(key: str) -> ModelSpec:
    """The CV entry of GBLUP + the deep model ``key`` (weights chosen inside each training fold)."""
    from app.engine.gp.ensemble import ensemble_name
    from app.engine.gp.gblup import fit_gblup

    return ModelSpec(ensemble_name(DISPLAY[key]), fit_gblup, {}, blend=("GBLUP", DISPLAY[key]))


def model_spec(key: str, config: dict[str, Any]) -> ModelSpec:
    """What the CV runs for one model: its fit, its parameters and, for a deep model, the fit of every
    fold at once (``deep.fit_folds``: networks stacked on a GPU or with ``params[NAME]["trainer"] =
    "stacked"``, one at a time otherwise)."""
    fit_many = None
    if key != "gblup":
        from app.engine.gp.deep import fold_fitter

        fit_many = fold_fitter(key)
    return ModelSpec(DISPLAY[key], fit_function(key), model_params(key, config), fit_many)


def load_model(folder: str | Path, device: str = "cpu") -> FittedModel:
    """A saved model folder of any kind (GBLUP or deep)."""
    from app.engine.gp.gblup import is_gblup_folder, load_gblup

    if is_gblup_folder(folder):
        return load_gblup(folder)
    from app.engine.gp.ensemble import is_ensemble_folder, load_ensemble

    if is_ensemble_folder(folder):
        return load_ensemble(folder, lambda part: load_model(part, device=device))
    from app.engine.gp.deep import load_deep

    return load_deep(folder, device=device)


# --------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------


def resolve_trait(pheno: pd.DataFrame, trait: Any) -> str:
    """The phenotype column meant by ``trait``: exact name, name in any case, or a 1-based column number
    (wheat599's ID-less ``wheat.Y`` reads as E1..E4, so ``2`` and ``e2`` both mean E2).

    Raises:
        DataError: no such trait (the message lists the numeric columns).
    """
    src = pheno.attrs.get("source")
    numeric = [str(c) for c in pheno.columns if pd.api.types.is_numeric_dtype(pheno[c])]
    if trait is None or str(trait).strip() == "":
        raise DataError("no trait chosen", src, f"pass --trait, one of: {', '.join(numeric)}")
    t = str(trait).strip()
    cols = [str(c) for c in pheno.columns]
    if t in cols:
        return t
    low = [c for c in cols if c.lower() == t.lower()]
    if len(low) == 1:
        return low[0]
    if t.isdigit() and 1 <= int(t) <= len(cols):
        return cols[int(t) - 1]
    raise DataError(f"trait {t!r} not found in the phenotype table", src,
                    f"available traits: {', '.join(numeric) or '(none numeric)'} (or a column number 1..{len(cols)})")


@dataclass
class Inputs:
    """Genotypes joined to one trait."""

    geno: GenotypeMatrix  # every genotyped line (after optional QC / marker subset)
    pheno: pd.DataFrame
    join: JoinReport
    trait: str
    ids: list[str]  # phenotyped lines with a value, genotype order
    y: np.ndarray  # their values
    groups: np.ndarray | None  # their group labels (grouped CV)
    notes: list[str]

    @property
    def geno_y(self) -> GenotypeMatrix:
        return self.geno.subset(samples=self.ids)


def _need(value: str | None, key: str, what: str) -> str:
    if value is None or str(value).strip() == "":
        raise DataError(f"no {what} given (setting {key!r})", None, f"choose the {what}")
    return str(value)


def load_inputs(config: GPFitConfig, reporter: Reporter | None = None) -> Inputs:
    """Read genotypes and phenotypes, pick the trait, join them and apply the optional QC / subsets
    (``group``: a ``GPCVConfig``'s grouped folds)."""
    rep = ensure_reporter(reporter)
    pheno = read_phenotypes(_need(config.pheno, "pheno", "phenotype table"), id_column=config.id_column)
    # a numeric matrix's sample axis is the one whose IDs join the phenotypes (unless an orientation is chosen)
    geno = read_genotypes(_need(config.geno, "geno", "genotype file"), numeric_orientation=config.orientation,
                          sample_ids=pheno_id_candidates(pheno))
    notes: list[str] = [n for n in geno.notes if n.startswith("orientation")]
    if config.min_maf is not None or config.min_call_rate is not None:
        geno, qc = run_qc(geno, min_call_rate=config.min_call_rate or 0.0, min_maf=config.min_maf or 0.0)
        notes.append(qc.to_text())
    mm = config.max_markers
    if mm and mm < geno.n_markers:
        m0 = geno.n_markers
        keep = np.unique(np.linspace(0, m0 - 1, mm).round().astype(int))
        geno = geno.subset(markers=keep)
        notes.append(f"quick run: {len(keep)} evenly spaced markers of {m0}")
    trait = resolve_trait(pheno, config.trait)
    join = join_phenotypes(geno, pheno, trait)
    assert join.y is not None
    has = np.isfinite(join.y)
    ids = [s for s, h in zip(join.samples, has, strict=True) if h]
    y = join.y[has]
    groups = None
    group = config.group if isinstance(config, GPCVConfig) else None  # train fits every line: no folds
    if group:
        g = join.values(pheno, group)[has]
        miss = pd.isna(g)
        if miss.any():  # a line without a group is its own group: it cannot share a fold with relatives
            g = np.array([f"__line_{i}" if m else str(v) for i, (v, m) in enumerate(zip(g, miss, strict=True))],
                         dtype=object)
            notes.append(f"{int(miss.sum())} line(s) without a {group} value: each is its own group")
        groups = np.asarray(g, dtype=object).astype(str)
    ml = config.max_lines
    if ml and ml < len(ids):
        rng = np.random.default_rng(config.seed)
        keep_i = np.sort(rng.choice(len(ids), ml, replace=False))
        ids = [ids[i] for i in keep_i]
        y = y[keep_i]
        groups = groups[keep_i] if groups is not None else None
        notes.append(f"quick run: {len(ids)} of the phenotyped lines (seeded random subset)")
    if len(ids) < 5:
        raise DataError(f"only {len(ids)} genotyped line(s) have a value for {trait}", pheno.attrs.get("source"),
                        "check the trait and that the phenotype IDs match the genotype IDs")
    check_informative(geno.subset(samples=ids), f"the {len(ids):,} phenotyped lines")
    rep.log(join.to_text())
    rep.log(f"trait {trait}: {len(ids)} lines with genotype and a value, {geno.n_markers} markers "
            f"({geno.coding} coding)")
    for n in notes:
        rep.log(n)
    return Inputs(geno=geno, pheno=pheno, join=join, trait=trait, ids=ids, y=y, groups=groups, notes=notes)


# --------------------------------------------------------------------------------------------------
# Output helpers
# --------------------------------------------------------------------------------------------------


def _run_dir(config: GPCVConfig | GPTrainConfig) -> Path:
    rd = Path(_need(config.run_dir, "run_dir", "run folder"))
    rd.mkdir(parents=True, exist_ok=True)
    return rd


def _importance_table(geno: GenotypeMatrix, importance: dict[str, np.ndarray]) -> pd.DataFrame:
    frames = []
    for name, imp in importance.items():
        frames.append(pd.DataFrame({"marker": geno.markers["id"].astype(str).to_numpy(),
                                    "chrom": geno.markers["chrom"].astype(str).to_numpy(),
                                    "pos": geno.markers["pos"].to_numpy(), "model": name,
                                    "importance": np.asarray(imp, dtype=np.float64)}))
    return pd.concat(frames, ignore_index=True)


def _compute(config: GPFitConfig | GPPredictConfig) -> str:
    """The job's device (as text, what the fit functions take); also sets torch's threads."""
    from app.engine.device import resolve_compute

    dev, _ = resolve_compute(config.device, config.threads, many_fits=True)
    return str(dev)


# --------------------------------------------------------------------------------------------------
# Jobs
# --------------------------------------------------------------------------------------------------


def cv(config: GPCVConfig | dict[str, Any], reporter: Reporter | None = None) -> GPCVResult:
    """Cross-validate the chosen models on the same folds; every setting is a field of ``GPCVConfig``."""
    config = GPCVConfig.coerce(config)
    rep = ensure_reporter(reporter)
    run = _run_dir(config)
    keys = list(config.models)
    blends = list(ensemble_keys(config.ensemble or ()))
    keys = list(dict.fromkeys([*keys, *(["gblup"] if blends else []), *blends]))  # an ensemble needs its parts
    settings = model_settings(config)
    specs = [model_spec(k, settings) for k in keys]
    specs += [ensemble_spec(k) for k in blends]
    inp = load_inputs(config, rep)
    n_folds, repeats, seed = config.folds, config.repeats, config.seed
    folds = make_folds(len(inp.ids), n_folds, repeats, seed, inp.groups)
    device = _compute(config)
    rep.log(f"cross-validation: {', '.join(s.name for s in specs)} on the same {n_folds} folds x {repeats} "
            f"repeat(s), seed {seed}" + (f", grouped by {config.group}" if inp.groups is not None else "")
            + f", device {device}")
    t0 = time.perf_counter()
    res = run_cv(inp.geno_y, inp.y, specs, folds, seed=seed, device=device, reporter=rep, all_geno=inp.geno)
    metrics = {
        "trait": inp.trait, "geno": config.geno, "pheno": config.pheno,
        "n_lines": len(inp.ids), "n_markers": inp.geno.n_markers, "coding": inp.geno.coding,
        "n_folds": n_folds, "repeats": repeats, "seed": seed, "group": config.group,
        "n_groups": len(set(inp.groups)) if inp.groups is not None else None, "device": device,
        "models": res.models, "folds": res.rows, "join": inp.join.to_dict(), "notes": inp.notes,
        "warnings": res.warnings, "seconds": round(time.perf_counter() - t0, 3),
    }
    mpath, ppath, ipath = run / "metrics.json", run / "predictions.csv", run / "importance.csv"
    write_json(mpath, metrics)
    write_csv_atomic(res.predictions, ppath, index=False)
    rep.artifact("metrics", str(mpath))
    rep.artifact("predictions", str(ppath))
    if res.importance:
        write_csv_atomic(_importance_table(inp.geno, res.importance), ipath, index=False)
        rep.artifact("importance", str(ipath))
    for name, s in res.models.items():
        rep.log(f"{name}: Pearson r {s['pearson_mean']:.3f} (SD {s['pearson_sd'] or 0:.3f}), "
                f"{s['seconds']:.1f} s" + (f"; {s['vs_gblup']['verdict']}" if s.get("vs_gblup") else ""))
    for name, s in res.models.items():
        if s["warnings"]:  # each was already logged live by the fit; here only the count
            rep.log(f"{name}: {len(s['warnings'])} warning(s) over the folds (listed in metrics.json)",
                    level="warning")
    out = dict(metrics)
    out.update({"metrics_json": str(mpath), "predictions_csv": str(ppath),
                "importance_csv": str(ipath) if res.importance else None, "run_dir": str(run)})
    return GPCVResult.from_dict(out)


def _fit_for_train(key: str, fitted: dict[str, FittedModel], geno_y: GenotypeMatrix, inp: Inputs,
                   config: GPTrainConfig, seed: int, device: str, rep: Reporter) -> FittedModel:
    """Fit one model of a train run on every training line; a blend takes its already fitted parts and
    chooses its weight on the deep networks' inner validation lines (training lines only)."""
    part = blend_part(key)
    if part is None:
        return fit_function(key)(geno_y, inp.y.copy(), params=model_params(key, model_settings(config)), seed=seed,
                                 device=device, reporter=rep, all_geno=inp.geno)
    from app.engine.gp.ensemble import fit_ensemble
    from app.engine.gp.gblup import fit_gblup

    return fit_ensemble(display_name(key), geno_y, inp.y.copy(), fitted["gblup"], fitted[part], fit_gblup=fit_gblup,
                        seed=seed)


def train(config: GPTrainConfig | dict[str, Any], reporter: Reporter | None = None) -> GPTrainResult:
    """Fit the chosen models on every phenotyped line, save them and write GEBVs of every genotyped line;
    every setting is a field of ``GPTrainConfig``."""
    config = GPTrainConfig.coerce(config)
    rep = ensure_reporter(reporter)
    run = _run_dir(config)
    keys = list(config.models)
    inp = load_inputs(config, rep)
    seed, device = config.seed, _compute(config)
    geno_y = inp.geno_y
    gebv = pd.DataFrame({"ID": inp.geno.samples})
    assert inp.join.y is not None
    known = dict(zip(inp.join.samples, inp.join.y, strict=True))
    used = set(inp.ids)
    gebv["phenotyped"] = [bool(np.isfinite(known.get(s, np.nan))) for s in inp.geno.samples]
    gebv["training"] = [s in used for s in inp.geno.samples]  # differs only with max_lines
    gebv["observed"] = [known.get(s, np.nan) for s in inp.geno.samples]
    importance: dict[str, np.ndarray] = {}
    info: dict[str, Any] = {}
    models_dir = run / "models"
    # a blend needs its parts fitted first (on the same lines); a part not asked for is fitted, not saved
    parts = [p for p in (blend_part(k) for k in keys) if p is not None]
    order = list(dict.fromkeys([*[k for k in keys if blend_part(k) is None], *(["gblup"] if parts else []),
                                *parts, *[k for k in keys if blend_part(k) is not None]]))
    fitted: dict[str, FittedModel] = {}
    secs: dict[str, float] = {}
    rep.progress(0, len(order))
    for i, k in enumerate(order):
        rep.check_cancel()
        name = display_name(k)
        t0 = time.perf_counter()
        model = _fit_for_train(k, fitted, geno_y, inp, config, seed, device, rep)
        fitted[k] = model
        secs[k] = time.perf_counter() - t0
        if blend_part(k) is not None:  # a blend's cost includes its parts'
            secs[k] += secs["gblup"] + secs[str(blend_part(k))]
        if k not in keys:
            rep.progress(i + 1, len(order))
            continue
        model.save(models_dir / name)
        gebv[name] = np.asarray(model.predict(inp.geno), dtype=np.float64).reshape(-1)
        imp = model.importance()
        if imp is not None:
            importance[name] = np.asarray(imp, dtype=np.float64).reshape(inp.geno.n_markers, -1).mean(axis=1)
        info[name] = {"seconds": round(secs[k], 3), "warnings": list(model.notes.warnings),
                      "folder": str(models_dir / name)}
        if k == "gblup":
            info[name]["varcomp"] = getattr(model, "varcomp", None)
        elif blend_part(k) is not None:
            info[name].update(weight_deep=model.notes.info["weight_deep"],
                              inner_val_lines=model.notes.info["inner_val_lines"])
            rep.log(f"{name}: weight {model.notes.info['weight_deep']:.2f} on {display_name(blend_part(k))}, "
                    f"chosen on {model.notes.info['inner_val_lines']} inner validation lines of the training lines")
        for w in model.notes.warnings:
            rep.log(f"{name}: {w}", level="warning")
        rep.progress(i + 1, len(order))
    markers = inp.geno.markers[["id", "chrom", "pos", "ref", "alt"]].astype({"id": str, "chrom": str})
    write_csv_atomic(markers, run / MARKERS_CSV, index=False)
    gpath, npath = run / "gebv.csv", run / "gebv_unphenotyped.csv"
    write_csv_atomic(gebv, gpath, index=False)
    new = gebv[~gebv["phenotyped"]].drop(columns=["phenotyped", "training", "observed"])
    write_csv_atomic(new, npath, index=False)
    ipath = run / "importance.csv"
    if importance:
        write_csv_atomic(_importance_table(inp.geno, importance), ipath, index=False)
    doc = {"format": "omicslab-gp-run", "version": 1, "trait": inp.trait, "models": [display_name(k) for k in keys],
           "coding": inp.geno.coding, "n_train": len(inp.ids), "n_markers": inp.geno.n_markers,
           "n_genotyped": inp.geno.n_samples, "n_unphenotyped": len(new), "seed": seed,
           "geno": config.geno, "pheno": config.pheno, "join": inp.join.to_dict(),
           "notes": inp.notes, "fits": info}
    write_json(run / MODEL_INFO, doc)
    rep.artifact("gebv", str(gpath))
    rep.log(f"trained {', '.join(display_name(k) for k in keys)} on {len(inp.ids)} lines; GEBVs of "
            f"{inp.geno.n_samples} lines ({len(new)} without a phenotype) in {gpath}")
    return GPTrainResult.from_dict({**doc, "run_dir": str(run), "models_dir": str(models_dir), "gebv_csv": str(gpath),
                   "gebv_unphenotyped_csv": str(npath), "importance_csv": str(ipath) if importance else None})


def find_train_run(model: str | Path) -> tuple[Path, list[str] | None]:
    """(train run folder, model names or None for all) from a run folder or one of its model folders."""
    p = Path(model)
    if (p / MODEL_INFO).is_file():
        return p, None
    if (p.parent.parent / MODEL_INFO).is_file() and p.parent.name == "models":
        return p.parent.parent, [p.name]
    raise DataError("not a genomic-prediction train run (no gp_model.json)", p,
                    "give the --out folder of `python -m app gp train` (or one of its models/NAME folders)")


def predict(config: GPPredictConfig | dict[str, Any], reporter: Reporter | None = None) -> GPPredictResult:
    """Predict new lines with a train run's models; every setting is a field of ``GPPredictConfig``."""
    config = GPPredictConfig.coerce(config)
    rep = ensure_reporter(reporter)
    run, only = find_train_run(_need(config.model, "model", "trained model (a train run folder)"))
    doc = json.loads((run / MODEL_INFO).read_text(encoding="utf-8"))
    names = only or list(doc["models"])
    if config.models:
        want = {display_name(k) for k in model_keys(config.models, blends=True)}
        missing = sorted(want - set(doc["models"]))
        if missing:
            raise DataError(f"the run has no {', '.join(missing)} model", run,
                            f"it has: {', '.join(doc['models'])}")
        names = [n for n in names if n in want]
    out = Path(_need(config.out, "out", "output CSV"))
    markers = pd.read_csv(run / MARKERS_CSV, dtype={"id": str, "chrom": str, "ref": str, "alt": str},
                          keep_default_na=False)
    geno = read_genotypes(_need(config.geno, "geno", "genotype file"), numeric_orientation=config.orientation)
    ref = markers["ref"].tolist() if (markers["ref"] != "").any() else None
    alt = markers["alt"].tolist() if ref is not None else None
    aligned, report = align_markers(geno, markers["id"].tolist(), ref, alt)
    rep.log(f"{geno.n_samples} lines: " + report.to_text())
    if aligned.coding != doc.get("coding", aligned.coding):
        rep.log(f"the new genotypes read as {aligned.coding!r} coding, the model was trained on "
                f"{doc['coding']!r}: using the model's", level="warning")
        aligned.coding = str(doc["coding"])
    device = _compute(config)
    table = pd.DataFrame({"ID": aligned.samples})
    rep.progress(0, len(names))
    for i, name in enumerate(names):
        rep.check_cancel()
        model = load_model(run / "models" / name, device=device)
        table[name] = np.asarray(model.predict(aligned), dtype=np.float64).reshape(-1)
        rep.progress(i + 1, len(names))
    write_csv_atomic(table, out, index=False)
    rep.artifact("predictions", str(out))
    return GPPredictResult.from_dict({"predictions_csv": str(out), "n_lines": aligned.n_samples, "models": names,
                   "trait": doc.get("trait"), "train_run": str(run), "align": {
                       "n_reference": report.n_reference, "n_matched": report.n_matched,
                       "n_absent": report.n_absent, "n_flipped": report.n_flipped, "text": report.to_text()}})


__all__ = ["DISPLAY", "Inputs", "cv", "display_name", "ensemble_spec", "find_train_run", "fit_function", "load_inputs",
           "load_model", "model_params", "model_settings", "model_spec", "predict", "resolve_models", "resolve_trait",
           "train"]
