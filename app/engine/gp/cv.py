"""Cross-validation for genomic prediction: seeded (grouped) k-fold splits, per-fold metrics, and the loop
that runs every chosen model on the same folds.

Honesty rules kept here: a model is fitted on the training lines of a fold and their phenotypes only (the
test fold's phenotypes are never passed to a fit, so z-scoring, early stopping or any tuning a model does
can only use training lines); every model sees the same folds; grouped CV keeps each group (family,
population) wholly inside one test fold so relatedness across folds does not inflate accuracy.

Metrics per fold: Pearson r, Spearman rho, RMSE and DeepGS's meanNDCG at the top 1 % and 10 %
(Ma et al. 2018; the R package's ``meanNDCG``), then mean and spread (SD over folds) per model, and over
repeats (each repeat's mean over its folds): mean, SD and, for every model beside GBLUP, the paired
difference to GBLUP with a 95 % interval over repeats (``app.engine.stats``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from app.data.errors import DataError
from app.data.genotype import GenotypeMatrix
from app.engine.events import Event, Log, Progress
from app.engine.gp.base import FitFn, FittedModel
from app.engine.reporter import Reporter, ensure_reporter
from app.engine.stats import paired_difference, spread

NDCG_ALPHAS = (1, 10)
METRICS = ("pearson", "spearman", "rmse", "ndcg1", "ndcg10")


# --------------------------------------------------------------------------------------------------
# Folds
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fold:
    """One train/test split: indices into the phenotyped lines."""

    repeat: int  # 0-based
    fold: int  # 0-based within the repeat
    train: np.ndarray
    test: np.ndarray


def _split_seed(seed: int, repeat: int) -> int:
    """A well-mixed 32-bit seed per (seed, repeat)."""
    return int(np.random.SeedSequence([int(seed), int(repeat)]).generate_state(1)[0])


def make_folds(n: int, folds: int = 5, repeats: int = 1, seed: int = 0,
               groups: Sequence[Any] | np.ndarray | None = None) -> list[Fold]:
    """``repeats`` x ``folds`` seeded splits of ``n`` lines (scikit-learn KFold / GroupKFold, shuffled).

    With ``groups`` (one label per line, e.g. family) no group is ever split between training and test;
    folds then differ in size with the groups' sizes. Each repeat reshuffles with its own seed, so the same
    ``seed`` always gives the same folds.

    Raises:
        DataError: fewer than 2 folds, or fewer lines / groups than folds.
    """
    from sklearn.model_selection import GroupKFold, KFold

    folds, repeats = int(folds), int(repeats)
    if folds < 2:
        raise DataError(f"cross-validation needs at least 2 folds, got {folds}", None, "use --folds 5 or 10")
    if repeats < 1:
        raise DataError(f"repeats must be at least 1, got {repeats}")
    if n < folds:
        raise DataError(f"{n} phenotyped lines cannot be split into {folds} folds", None,
                        "use fewer folds or more lines")
    out: list[Fold] = []
    idx = np.arange(n)
    if groups is not None:
        g = np.asarray(groups, dtype=object)
        if len(g) != n:
            raise DataError(f"{len(g)} group labels for {n} lines")
        _, codes = np.unique(g.astype(str), return_inverse=True)
        n_groups = int(codes.max()) + 1
        if n_groups < folds:
            raise DataError(f"grouped CV: {n_groups} groups cannot fill {folds} folds", None,
                            "use fewer folds, or a grouping column with more groups")
    for r in range(repeats):
        rs = _split_seed(seed, r)
        if groups is None:
            splits = KFold(n_splits=folds, shuffle=True, random_state=rs).split(idx)
        else:
            splits = GroupKFold(n_splits=folds, shuffle=True, random_state=rs).split(idx, groups=codes)
        for f, (tr, te) in enumerate(splits):
            out.append(Fold(r, f, np.sort(tr), np.sort(te)))
    return out


# --------------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------------


def _round_half_even_count(x: float) -> int:
    return int(np.round(x))  # numpy rounds half to even, like R's round()


def mean_ndcg(observed: np.ndarray, predicted: np.ndarray, alpha: float = 10.0) -> float:
    """DeepGS's meanNDCG@alpha: the mean of NDCG@1..NDCG@k over the top ``k = round(alpha n / 100)`` lines.

    As the DeepGS R package: both vectors are rescaled by ``(v - mean) / (max - min)``; lines are ranked by
    prediction (ties in input order); ``DCG@j = sum_{i<=j} y_(i) / log2(i + 1)`` with ``y_(i)`` the observed
    value of the i-th best predicted line, ``IDCG@j`` the same over the best observed lines,
    ``NDCG@j = DCG@j / IDCG@j``. Unlike the R code (which fails there) ``k`` is at least 1 when
    ``alpha n / 100`` rounds to 0. NaN when the observed values are all equal.
    """
    y = np.asarray(observed, dtype=np.float64)
    p = np.asarray(predicted, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 1:
        raise ValueError("observed and predicted must be 1-D and of the same length")
    n = len(y)
    if n == 0 or np.ptp(y) == 0:
        return float("nan")
    y = (y - y.mean()) / np.ptp(y)  # prediction rescaling does not change the ranking
    k = min(n, max(1, _round_half_even_count(alpha * n / 100.0)))
    by_pred = y[np.argsort(-p, kind="stable")][:k]
    by_obs = y[np.argsort(-y, kind="stable")][:k]
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    ndcg = np.cumsum(by_pred * disc) / np.cumsum(by_obs * disc)
    return float(np.mean(ndcg))


def fold_metrics(observed: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Pearson r, Spearman rho, RMSE, meanNDCG@1 % and @10 % of one test fold.

    A constant prediction (or constant observations) has no correlation: r and rho are reported as 0.0
    (the model ranks nothing) rather than NaN, so a collapsed model's mean is not flattered.
    """
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import root_mean_squared_error

    y = np.asarray(observed, dtype=np.float64)
    p = np.asarray(predicted, dtype=np.float64)
    if not np.isfinite(p).all():
        raise DataError("a model produced NaN/inf predictions", None, "see the model's warnings in the log")
    degenerate = len(y) < 3 or np.ptp(p) == 0 or np.ptp(y) == 0
    out = {
        "pearson": 0.0 if degenerate else float(pearsonr(y, p).statistic),
        "spearman": 0.0 if degenerate else float(spearmanr(y, p).statistic),
        "rmse": float(root_mean_squared_error(y, p)),
    }
    for a in NDCG_ALPHAS:
        out[f"ndcg{a}"] = mean_ndcg(y, p, a)
    return out


def summarize(rows: list[dict[str, Any]], model: str) -> dict[str, Any]:
    """Mean and SD over folds (all repeats) of each metric for ``model``, plus per-fold lists."""
    mine = [r for r in rows if r["model"] == model]
    out: dict[str, Any] = {"n_folds": len(mine)}
    for m in METRICS:
        v = np.array([r[m] for r in mine], dtype=np.float64)
        ok = v[np.isfinite(v)]
        out[f"{m}_mean"] = float(ok.mean()) if len(ok) else None
        out[f"{m}_sd"] = float(ok.std(ddof=1)) if len(ok) > 1 else None
        out[f"{m}_folds"] = [None if not np.isfinite(x) else float(x) for x in v]
    repeats = sorted({r["repeat"] for r in mine})
    out["n_repeats"] = len(repeats)
    out["over_repeats"] = {}
    for m in METRICS:
        per = repeat_means(mine, m)
        out[f"{m}_repeat_means"] = [None if not np.isfinite(x) else float(x) for x in per]
        out["over_repeats"][m] = spread(per).to_dict()
    out["seconds"] = float(sum(r["seconds"] for r in mine))
    return out


def repeat_means(rows: list[dict[str, Any]], metric: str) -> np.ndarray:
    """One value per repeat (in repeat order): the mean of ``metric`` over that repeat's folds (NaN folds
    left out; NaN when all are). ``rows`` are one model's."""
    out = []
    for k in sorted({r["repeat"] for r in rows}):
        v = np.array([r[metric] for r in rows if r["repeat"] == k], dtype=np.float64)
        v = v[np.isfinite(v)]
        out.append(float(v.mean()) if len(v) else float("nan"))
    return np.asarray(out, dtype=np.float64)


def versus(rows: list[dict[str, Any]], model: str, reference: str = "GBLUP",
           metric: str = "pearson") -> dict[str, Any] | None:
    """``model`` minus ``reference`` on ``metric``, paired repeat by repeat (both ran on the same folds), with
    the 95 % interval over repeats and the plain-words verdict; None when either did not run."""
    a = [r for r in rows if r["model"] == model]
    b = [r for r in rows if r["model"] == reference]
    if not a or not b or model == reference:
        return None
    d = paired_difference(repeat_means(a, metric), repeat_means(b, metric))
    return {"reference": reference, "metric": metric, **d.to_dict(), "verdict": d.verdict(model, reference)}


# --------------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------------


@dataclass
class ModelSpec:
    """A model to cross-validate: display name, fit function and its parameters."""

    name: str
    fit: FitFn | Callable[..., FittedModel]
    params: dict[str, Any] = field(default_factory=dict)
    # fits every fold at once: fit_many(trains, ys, seeds, *, params, device, reporter, all_geno) -> models
    fit_many: Callable[..., list[FittedModel]] | None = None
    # an ensemble: (GBLUP spec name, deep spec name) blended on each fold (``fit`` is then GBLUP's fit,
    # refitted without the deep networks' inner validation lines to choose the weight; app.engine.gp.ensemble)
    blend: tuple[str, str] | None = None


class _FitReporter(Reporter):
    """What a model's fit sees: cancellation, warnings and its training curves (metrics) pass through; its
    info lines and progress do not (a CV runs dozens of fits: the CV owns the progress bar, and the fits'
    info lines would bury the CV's own)."""

    def __init__(self, parent: Reporter) -> None:
        super().__init__()
        self._parent = parent

    def emit(self, event: Event) -> None:
        if isinstance(event, Progress) or (isinstance(event, Log) and event.level == "info"):
            return
        self._parent.emit(event)

    def should_stop(self) -> bool:
        return self._parent.should_stop()


class _StackedFitReporter(_FitReporter):
    """A fit of all folds at once: its progress moves the CV's bar across that model's share of the steps."""

    def __init__(self, parent: Reporter, start: int, span: int, total: int) -> None:
        super().__init__(parent)
        self._start, self._span, self._total = start, span, total

    def emit(self, event: Event) -> None:
        if isinstance(event, Progress) and event.total:
            frac = min(1.0, event.step / event.total)
            self._parent.progress(self._start + int(frac * self._span), self._total)
            return
        super().emit(event)


@dataclass
class CVResult:
    """Everything a CV run measured."""

    models: dict[str, dict[str, Any]]  # per model: summary (means, SDs, per-fold lists, seconds, warnings)
    rows: list[dict[str, Any]]  # one per (model, repeat, fold); a blend's also weight_deep, inner_val_lines;
    # a deep model's also best_epoch and epochs_run (one per network) and max_epochs
    predictions: pd.DataFrame  # ID, fold, repeat, model, observed, predicted (fold/repeat 1-based)
    importance: dict[str, np.ndarray]  # per model: mean over folds of importance(), for models with one
    warnings: list[str]


def run_cv(geno: GenotypeMatrix, y: np.ndarray, models: Sequence[ModelSpec], folds: Sequence[Fold], *,
           seed: int = 0, device: str = "cpu", reporter: Reporter | None = None,
           all_geno: GenotypeMatrix | None = None) -> CVResult:
    """Cross-validate each model on the same folds.

    Args:
        geno: genotypes of the phenotyped lines, in the order of ``y``.
        y: phenotypes (n,), NaN-free.
        models: what to fit.
        folds: from :func:`make_folds` over ``len(y)`` lines.
        seed: training seed base (fold ``i`` trains with ``seed * 1000 + i``, the same for every model).
        all_geno: every genotyped line (for DNNGP's transductive PCA; genotypes only, no phenotypes).

    Progress is one step per (fold, model); ``reporter.check_cancel()`` is honoured between fits (and
    inside deep fits, per epoch).
    """
    rep = ensure_reporter(reporter)
    fit_rep = _FitReporter(rep)
    yv = np.asarray(y, dtype=np.float64)
    if yv.ndim != 1 or len(yv) != geno.n_samples:
        raise DataError(f"{geno.n_samples} lines but phenotype of shape {yv.shape}")
    if not np.isfinite(yv).all():
        raise DataError("phenotypes given to cross-validation contain NaN", None, "drop lines without a value")
    total = len(folds) * len(models)
    rep.progress(0, total)
    fold_geno = [(geno.subset(samples=[geno.samples[j] for j in f.train]),
                  geno.subset(samples=[geno.samples[j] for j in f.test])) for f in folds]
    seeds = [int(seed) * 1000 + i for i in range(len(folds))]
    prefit: dict[str, list[FittedModel]] = {}
    prefit_s: dict[str, float] = {}
    batched = [spec for spec in models if spec.fit_many is not None and len(folds) > 1]
    for b, spec in enumerate(batched):
        rep.check_cancel()
        t0 = time.perf_counter()
        prefit[spec.name] = spec.fit_many([tr for tr, _ in fold_geno], [yv[f.train].copy() for f in folds], seeds,
                                          params=dict(spec.params), device=device,
                                          reporter=_StackedFitReporter(rep, b * len(folds), len(folds), total),
                                          all_geno=all_geno)
        prefit_s[spec.name] = (time.perf_counter() - t0) / len(folds)
    rows: list[dict[str, Any]] = []
    preds: list[pd.DataFrame] = []
    imp_sum: dict[str, np.ndarray] = {}
    imp_n: dict[str, int] = {}
    warn: dict[str, list[str]] = {m.name: [] for m in models}
    step = len(batched) * len(folds)  # the batched fits moved the bar this far
    for i, f in enumerate(folds):
        tr_geno, te_geno = fold_geno[i]
        y_tr = yv[f.train].copy()  # a copy: nothing a fit does can touch y
        fitted: dict[str, tuple[FittedModel, float]] = {}
        for k, spec in enumerate(models):
            rep.check_cancel()
            t0 = time.perf_counter()
            if spec.blend is not None:
                from app.engine.gp.ensemble import fit_ensemble

                (g_model, g_s), (d_model, d_s) = fitted[spec.blend[0]], fitted[spec.blend[1]]
                model = fit_ensemble(spec.name, tr_geno, y_tr, g_model, d_model, fit_gblup=spec.fit, seed=seeds[i])
                fit_s = g_s + d_s  # the blend costs both fits plus choosing the weight
            elif spec.name in prefit:
                model, fit_s = prefit[spec.name][i], prefit_s[spec.name]
            else:
                model = spec.fit(tr_geno, y_tr, params=dict(spec.params), seed=seeds[i], device=device,
                                 reporter=fit_rep, all_geno=all_geno)
                fit_s = 0.0
            p = np.asarray(model.predict(te_geno), dtype=np.float64).reshape(-1)
            secs = time.perf_counter() - t0 + fit_s  # a fit of all folds at once: each fold's equal share
            fitted[spec.name] = (model, secs)
            met = fold_metrics(yv[f.test], p)
            notes = getattr(model, "notes", None)
            for w in notes.warnings if notes is not None else []:
                warn[spec.name].append(f"repeat {f.repeat + 1} fold {f.fold + 1}: {w}")
            imp = model.importance()
            if imp is not None:
                imp = np.asarray(imp, dtype=np.float64).reshape(geno.n_markers, -1).mean(axis=1)
                imp_sum[spec.name] = imp_sum.get(spec.name, 0.0) + imp
                imp_n[spec.name] = imp_n.get(spec.name, 0) + 1
            row = {"model": spec.name, "repeat": f.repeat + 1, "fold": f.fold + 1, "n_train": len(f.train),
                   "n_test": len(f.test), **met, "seconds": round(secs, 4)}
            if spec.blend is not None and notes is not None:  # the weight this fold chose, and on how many lines
                row.update(weight_deep=notes.info.get("weight_deep"), inner_val_lines=notes.info.get("inner_val_lines"))
            if notes is not None and "best_epoch" in notes.info:  # a deep model: the epoch each network restored
                row.update(best_epoch=list(notes.info["best_epoch"]), epochs_run=list(notes.info["epochs_run"]),
                           max_epochs=notes.info.get("max_epochs"))
            rows.append(row)
            preds.append(pd.DataFrame({"ID": [geno.samples[j] for j in f.test], "fold": f.fold + 1,
                                       "repeat": f.repeat + 1, "model": spec.name, "observed": yv[f.test],
                                       "predicted": p}))
            if spec.name not in prefit:
                step += 1
                rep.progress(step, total)
            # one curve per model in the GUI (x = step), one postfix entry per model in the CLI bar
            rep.metrics(i * len(models) + k + 1, {"pearson": met["pearson"]}, split=spec.name)
    summaries: dict[str, dict[str, Any]] = {}
    all_warnings: list[str] = []
    for spec in models:
        s = summarize(rows, spec.name)
        n_const = sum(1 for r in rows if r["model"] == spec.name and r["pearson"] == 0.0 and r["spearman"] == 0.0)
        w = list(dict.fromkeys(warn[spec.name]))
        if n_const:
            w.append(f"{n_const} fold(s) with a constant prediction: r counted as 0")
        s["warnings"] = w
        s["vs_gblup"] = versus(rows, spec.name)
        summaries[spec.name] = s
        all_warnings.extend(f"{spec.name}: {x}" for x in w)
    importance = {k: v / imp_n[k] for k, v in imp_sum.items()}
    pred_df = pd.concat(preds, ignore_index=True) if preds else pd.DataFrame(
        columns=["ID", "fold", "repeat", "model", "observed", "predicted"])
    return CVResult(models=summaries, rows=rows, predictions=pred_df, importance=importance, warnings=all_warnings)


__all__ = ["METRICS", "NDCG_ALPHAS", "CVResult", "Fold", "ModelSpec", "fold_metrics", "make_folds", "mean_ndcg",
           "repeat_means", "run_cv", "summarize", "versus"]
