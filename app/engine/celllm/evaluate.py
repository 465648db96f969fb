"""Repeated evaluation of CellLM fine-tuning: K seeded stratified splits, a from-scratch control and a
label-efficiency curve, each beside the baseline on exactly the same cells.

One split of a few hundred cells tests a few dozen: which method "wins" flips with the seed. So this job
runs the product's own fine-tuning (``finetune.finetune``, unchanged) once per repeat and method, and reports
each metric's mean and SD over repeats and the paired difference CellLM minus baseline (and CellLM minus
from-scratch) with a 95 % interval (``app.engine.stats``).

- **Repeats.** Repeat ``r`` uses split seed ``seed + r`` (stratified train/val/test, as a one-split run with
  that seed). Every method of a repeat sees the same train, validation and test cells.
- **From scratch** (``scratch``): the same architecture and vocabulary as the starting model, random
  initial weights (seeded), the same fine-tuning recipe and splits: does pretraining help on these data?
- **Label efficiency** (``label_fractions``): the training cells of each repeat subsampled per class to
  each fraction (seeded, at least one cell per class); validation and test cells unchanged.
- **Test pool** (``test_pool``, for benchmarks): test cells drawn only from these cells (e.g. the cells
  pretraining never saw, ``heldout.held_out``); train and validation from the rest.

Run folder: ``runs/r{r}_{method}[_f{pct}]/`` (each a complete fine-tuning run folder), ``metrics.json``
(summary: per-method mean/SD, paired differences, verdict sentences, per-repeat rows),
``repeats.csv`` (one row per repeat, method and fraction) and, with fractions, ``label_efficiency.json``.
"""

from __future__ import annotations

import csv
import dataclasses
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.data.errors import DataError
from app.engine.celllm.job_configs import EvaluateConfig
from app.engine.reporter import Reporter, ensure_reporter
from app.engine.results import EvaluateResult

SPLIT_COLUMN = "_omicslab_split"
LABEL_COLUMN = "_omicslab_label"
FRACTIONS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0)
"""The label-efficiency curve's default fractions of the training labels."""
METRICS = ("macro_f1", "accuracy")


@dataclass(frozen=True)
class RepeatSplit:
    """Cell indices of one repeat's split (into the labelled cells)."""

    seed: int
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def repeat_splits(labels: np.ndarray, repeats: int, seed: int = 0, *, val_frac: float = 0.15,
                  test_frac: float = 0.15, test_pool: np.ndarray | None = None) -> list[RepeatSplit]:
    """``repeats`` seeded stratified splits (seed ``seed + r``). With ``test_pool`` (a boolean mask), test
    cells come from the pool only, ``test_frac`` of each class overall where the pool allows."""
    from app.engine.celllm.splits import stratified_split

    labels = np.asarray(labels)
    if repeats < 1:
        raise DataError(f"repeats must be at least 1 (got {repeats})", None, "Use --repeats 3 or more.")
    out = []
    for r in range(repeats):
        s = seed + r
        if test_pool is None:
            sp_ = stratified_split(labels, val_frac=val_frac, test_frac=test_frac, seed=s)
            out.append(RepeatSplit(s, np.sort(sp_.train), np.sort(sp_.val), np.sort(sp_.test)))
            continue
        rng = np.random.default_rng(s)
        train, val, test = [], [], []
        for cls in sorted(set(labels.tolist())):
            idx = np.flatnonzero(labels == cls)
            pool = rng.permutation(idx[test_pool[idx]])
            n_test = min(len(pool), max(1, round(len(idx) * test_frac))) if len(idx) >= 3 else 0
            t = pool[:n_test]
            rest = rng.permutation(np.setdiff1d(idx, t))
            n_val = max(1, round(len(idx) * val_frac)) if len(rest) >= 2 else 0
            test.append(t)
            val.append(rest[:n_val])
            train.append(rest[n_val:])
        out.append(RepeatSplit(s, *(np.sort(np.concatenate(p)).astype(np.int64) for p in (train, val, test))))
    return out


def subsample_train(labels: np.ndarray, train: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """``fraction`` of each class's training cells (rounded, at least one cell per class), seeded."""
    if not 0 < fraction <= 1:
        raise DataError(f"label fraction {fraction:g} is not in (0, 1]", None, "Use fractions such as 0.1,0.5,1.")
    if fraction >= 1:
        return np.sort(train)
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    keep = []
    for cls in sorted(set(labels[train].tolist())):
        idx = train[labels[train] == cls]
        keep.append(rng.choice(idx, size=max(1, round(len(idx) * fraction)), replace=False))
    return np.sort(np.concatenate(keep))


def random_init_model(init: str | Path | None, out_dir: Path, seed: int) -> Path:
    """A model folder with ``init``'s architecture and vocabulary but freshly initialised weights (seeded)."""
    import torch

    from app.engine.celllm.embed import resolve_model_dir
    from app.engine.celllm.model_io import load_model, save_model
    from app.models.celllm.model import CellLM

    _, cfg, vocab, extra = load_model(resolve_model_dir(init), "cpu")
    torch.manual_seed(seed)
    model = CellLM(cfg)
    save_model(out_dir, model, cfg, list(vocab), {**dict(extra or {}), "random_init_seed": seed,
                                                  "pretrain": None})
    return out_dir


def _labelled_data(config: EvaluateConfig, rep: Reporter) -> tuple[Any, np.ndarray]:
    """Read the data once, drop unlabelled cells (as fine-tuning does). Returns (adata, labels)."""
    from app.engine.celllm.finetune import load_labelled

    got = load_labelled(config, rep)
    return got.adata, np.asarray(got.labels).astype(str)


OWN_SETTINGS = frozenset({"data", "labels", "label_key", "run_dir", "seed", "split_key", "max_cells", "resume"})
"""Fine-tuning settings this job sets per sub-run itself (the split file, its label and split columns, the
repeat's seed, the sub-run's folder); every other fine-tuning setting is passed through unchanged."""


def sub_run_settings(config: EvaluateConfig) -> dict[str, Any]:
    """The fine-tuning settings every sub-run shares: each of ``FinetuneConfig``'s fields taken from
    ``config`` by name (``live_cells`` included: ``EvaluateConfig`` defaults it to 0), except ``OWN_SETTINGS``."""
    from app.engine.celllm.job_configs import FinetuneConfig

    return {f.name: getattr(config, f.name) for f in dataclasses.fields(FinetuneConfig)
            if f.name not in OWN_SETTINGS}


def _write_split_file(adata: Any, labels: np.ndarray, idx: dict[str, np.ndarray], path: Path) -> None:
    """An .h5ad of only the cells of this run, with the label and train/val/test columns fine-tuning reads."""
    import anndata as ad

    from app.data.singlecell import counts_matrix

    rows = np.concatenate([idx["train"], idx["val"], idx["test"]])
    names = np.array(["train"] * len(idx["train"]) + ["val"] * len(idx["val"]) + ["test"] * len(idx["test"]))
    order = np.argsort(rows, kind="stable")
    rows, names = rows[order], names[order]
    sub = ad.AnnData(counts_matrix(adata)[rows])
    sub.obs_names = np.asarray(adata.obs_names)[rows].astype(str)
    sub.var_names = np.asarray(adata.var_names).astype(str)
    sub.obs[LABEL_COLUMN] = labels[rows]
    sub.obs[SPLIT_COLUMN] = names
    sub.write_h5ad(path)


def _summary(rows: list[dict[str, Any]], methods: list[str], fraction: float = 1.0) -> dict[str, Any]:
    """Per-method mean/SD and paired differences (CellLM minus each other method) at one label fraction."""
    from app.engine.stats import paired_difference, spread

    at = [r for r in rows if r["fraction"] == fraction]
    seeds = sorted({r["seed"] for r in at})
    table: dict[str, dict[str, list[float]]] = {m: {k: [] for k in METRICS} for m in methods}
    for s in seeds:
        for m in methods:
            hit = [r for r in at if r["seed"] == s and r["method"] == m]
            for k in METRICS:
                table[m][k].append(float(hit[0][k]) if hit else float("nan"))
    out: dict[str, Any] = {"fraction": fraction, "seeds": seeds, "methods": {}, "differences": {},
                           "verdicts": {}}
    for m in methods:
        out["methods"][m] = {k: spread(v).to_dict() for k, v in table[m].items()}
    names = {"celllm": "CellLM", "baseline": "the baseline", "scratch": "CellLM from scratch"}
    for other in (m for m in methods if m != "celllm"):
        out["differences"][f"celllm_minus_{other}"] = {
            k: paired_difference(table["celllm"][k], table[other][k]).to_dict() for k in METRICS}
        d = paired_difference(table["celllm"]["macro_f1"], table[other]["macro_f1"])
        out["verdicts"][f"celllm_vs_{other}"] = "macro-F1: " + d.verdict("CellLM", names[other])
    return out


def evaluate_repeats(config: EvaluateConfig | dict, reporter: Reporter | None = None, *,
                     test_pool: np.ndarray | None = None) -> EvaluateResult:
    """Job function ``app.engine.celllm.evaluate:evaluate_repeats``; its settings are the fields of
    ``job_configs.EvaluateConfig`` (the fine-tuning settings plus ``repeats``, ``scratch``,
    ``label_fractions``). ``test_pool`` (programmatic use, e.g. ``bench annotate``): a boolean mask over the
    labelled cells, where test cells may come from. Sub-runs get no live map unless ``live_cells`` is set
    (its default here is 0). Returns the summary (also ``run_dir/metrics.json``).
    """
    from app.data.jsonsafe import write_json
    from app.engine.celllm.finetune import finetune

    rep = ensure_reporter(reporter)
    t0 = time.time()
    cfg = EvaluateConfig.coerce(config)
    if not cfg.run_dir:
        raise DataError("no run folder given", None, "Pass --out RUN (a folder for the runs and metrics).")
    if cfg.split_key:
        raise DataError("repeated evaluation draws its own seeded splits", None,
                        "Drop --split-key, or run one fine-tune with your split column instead of --repeats.")
    run_path = Path(cfg.run_dir)
    run_path.mkdir(parents=True, exist_ok=True)
    repeats, seed = cfg.repeats, cfg.seed
    fractions = sorted({float(f) for f in cfg.label_fractions} | {1.0})
    with_scratch = cfg.scratch
    methods = ["celllm", "baseline"] + (["scratch"] if with_scratch else [])
    adata, labels = _labelled_data(cfg, rep)
    splits = repeat_splits(labels, repeats, seed, val_frac=cfg.val_frac, test_frac=cfg.test_frac,
                           test_pool=test_pool)
    passthrough = sub_run_settings(cfg)
    rows: list[dict[str, Any]] = []
    n_runs = repeats * len(fractions) * (2 if with_scratch else 1)
    done = 0
    with tempfile.TemporaryDirectory(prefix="omicslab_eval_") as tmp:
        scratch_dirs: dict[int, Path] = {}
        for r, sp_ in enumerate(splits):
            for f in fractions:
                train = subsample_train(labels, sp_.train, f, sp_.seed)
                data_file = Path(tmp) / f"r{r}_f{f:g}.h5ad"
                _write_split_file(adata, labels, {"train": train, "val": sp_.val, "test": sp_.test}, data_file)
                inits: list[tuple[str, Any]] = [("celllm", cfg.init)]
                if with_scratch:
                    if r not in scratch_dirs:
                        scratch_dirs[r] = random_init_model(cfg.init, Path(tmp) / f"scratch_r{r}", sp_.seed)
                    inits.append(("scratch", str(scratch_dirs[r])))
                for method, init in inits:
                    rep.check_cancel()
                    tag = f"r{r}_{method}" + ("" if f >= 1 else f"_f{round(f * 100):g}")
                    rep.log(f"[{done + 1}/{n_runs}] repeat {r + 1} (seed {sp_.seed}), {method}, "
                            f"{f:.0%} of the training labels ({len(train)} cells)")
                    sub = {**passthrough, "data": str(data_file), "label_key": LABEL_COLUMN,
                           "split_key": SPLIT_COLUMN, "seed": sp_.seed, "run_dir": str(run_path / "runs" / tag)}
                    if init is not None:
                        sub["init"] = init
                    m = finetune(sub, rep)
                    if m.get("cancelled"):
                        rep.log("cancelled: the summary covers the finished runs only", level="warning")
                        break
                    done += 1
                    base = {"seed": sp_.seed, "repeat": r, "fraction": f, "n_train": len(train),
                            "n_test": len(sp_.test), "run": tag}
                    rows.append({**base, "method": method, **{k: m["test"][k] for k in METRICS},
                                 "best_epoch": m.get("best_epoch")})
                    if method == "celllm":  # the baseline saw the same cells
                        rows.append({**base, "method": "baseline", **{k: m["baseline"][k] for k in METRICS},
                                     "best_epoch": None})
    summary = {
        "repeats": repeats, "seed": seed, "methods": methods, "init": str(cfg.init or "shipped"),
        "n_cells": len(labels), "classes": sorted(set(labels.tolist())),
        "test_pool": test_pool is not None, **_summary(rows, methods, 1.0),
        "label_efficiency": [_summary(rows, methods, f) for f in fractions] if len(fractions) > 1 else None,
        "rows": rows, "seconds": round(time.time() - t0, 1), "run_dir": str(run_path),
    }
    result = EvaluateResult.from_dict(summary)
    write_json(run_path / "metrics.json", result)
    rep.artifact("metrics", str(run_path / "metrics.json"))
    if len(fractions) > 1:
        write_json(run_path / "label_efficiency.json", summary["label_efficiency"])
        rep.artifact("label_efficiency", str(run_path / "label_efficiency.json"))
    _write_rows(run_path / "repeats.csv", rows)
    for v in summary["verdicts"].values():
        rep.log(v)
    return result


def _write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    from app.data.atomic import atomic_path

    cols = ["repeat", "seed", "fraction", "method", "macro_f1", "accuracy", "n_train", "n_test", "best_epoch", "run"]
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


__all__ = ["FRACTIONS", "RepeatSplit", "evaluate_repeats", "random_init_model", "repeat_splits",
           "subsample_train"]
