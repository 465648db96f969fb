"""The window's model: plain Python, no Qt (napari's model/view split).

``AppState`` holds what the scientist has loaded and done (dataset, summary, chosen task and settings,
runs, embeddings, predictions, manual labels, genomic-prediction results). It is an evented dataclass
(psygnal's ``SignalGroupDescriptor``): assigning a field emits ``state.events.<field>`` with the new and
the old value, so views subscribe to exactly what they show (``state.events.layout.connect(redraw)``) and
write back by assigning. Changes that touch many fields at once (a new dataset, a phenotype table) emit one
compound event (``dataset``, ``phenotypes``) instead of a burst of field events. Everything here is
testable without a display, and the export functions build their outputs from it.

Why psygnal's dataclass descriptor and not ``EventedModel``: ``EventedModel`` needs pydantic, and the
state holds AnnData, DataFrames and arrays that pydantic would have to be told to leave alone; the
descriptor gives the same "assign = event" contract on a plain dataclass with one small dependency.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from psygnal import Signal, SignalGroup, SignalGroupDescriptor

from app.data.jsonsafe import json_safe
from app.engine.jobconfig import JobConfig, field_specs
from app.engine.registry import job
from app.resources import CELLLM_TINY

SC_JOBS = {"finetune": "celllm.finetune", "pretrain": "celllm.pretrain", "embed": "celllm.embed"}
SC_TASKS = {task: (job(name).title, job(name).target) for task, name in SC_JOBS.items()}
GP_MODELS = ("GBLUP", "DNNGP", "DeepGS", "DLGWAS")
GP_TASKS = {"compare": "Compare all"} | {m.lower(): m for m in GP_MODELS}
GP_TARGET = job("gp.cv").target
GP_TRAIN_TARGET = job("gp.train").target  # the final model(s) on every phenotyped line + GEBVs of all
EVAL_JOB = "celllm.evaluate"  # "Evaluate (K repeats)": the fine-tune settings over K seeded splits
EVAL_TARGET = job(EVAL_JOB).target


def form_defaults(config: type[JobConfig]) -> dict[str, Any]:
    """The Advanced form's starting values: the config's own defaults (its fields marked ``advanced``).

    A setting whose default is None ("by preset", "all", "model default") starts at 0 / "", which the form
    shows as that special value and ``job_spec`` turns back into None (only where 0 is not itself valid)."""
    out: dict[str, Any] = {}
    for s in field_specs(config):
        if not s.advanced:
            continue
        d = s.default
        if d is None:
            d = 0.0 if s.kind == "float" else 0 if s.kind == "int" else ""
        out[s.name] = d
    return out


# defaults shown in the Advanced section: read from the job configs (app.engine.*.job_configs), never written here
SC_DEFAULTS: dict[str, dict[str, Any]] = {task: form_defaults(job(name).config) for task, name in SC_JOBS.items()}
GP_DEFAULTS: dict[str, Any] = form_defaults(job("gp.cv").config)


def eval_specs() -> list[Any]:
    """The repeated evaluation's own settings (repeats, from-scratch control, label fractions): the fields
    ``EvaluateConfig`` adds to the fine-tuning ones (its "evaluation" group)."""
    return [sp for sp in field_specs(job(EVAL_JOB).config) if sp.group == "evaluation"]


EVAL_DEFAULTS: dict[str, Any] = {sp.name: sp.default for sp in eval_specs()}


def _none_means_default(config: type[JobConfig], params: dict[str, Any]) -> dict[str, Any]:
    """Form values -> config values: 0 / "" become None only for a setting where None has a meaning and 0 is
    not a valid value (``lr`` 0 = "by preset"); everywhere else 0 means 0 (patience 0, test fraction 0)."""
    specs = {s.name: s for s in field_specs(config)}
    out = dict(params)
    for k, v in params.items():
        s = specs.get(k)
        if s is None or not s.nullable or isinstance(v, bool):
            continue
        zero_invalid = s.min is not None and (s.min > 0 or (s.min == 0 and s.min_exclusive))
        if v == "" or (v == 0 and zero_invalid and s.kind in ("int", "float")):
            out[k] = None
    return out


def gp_model_defaults(task: str) -> dict[str, Any]:
    """Scalar hyper-parameters of one deep GP model (``app.engine.gp.deep.DEFAULTS``), keyed
    ``"dnngp.dropout1"``; {} for GBLUP, "compare" or when the deep models are not installed."""
    if task not in ("dnngp", "deepgs", "dlgwas"):
        return {}
    try:
        from app.engine.gp.deep import DEFAULTS
    except Exception:  # a build without the deep models: GBLUP still works
        return {}
    return {f"{task}.{k}": v for k, v in DEFAULTS.get(task, {}).items()
            if isinstance(v, bool | int | float | str) and k not in GP_DEFAULTS}


class StateEvents(SignalGroup):
    """The compound events of ``AppState``; psygnal adds one signal per field beside them."""

    dataset = Signal()  # a new dataset replaced everything (kind, data, summary, layout, labels...)
    phenotypes = Signal()  # a phenotype table was joined (pheno, pheno_path, traits, trait, join)


# big values are compared by identity: an element-wise comparison of two AnnData/arrays on every assignment
# would cost more than the redraw it saves (and DataFrame/ndarray "==" is not a truth value)
_BY_IDENTITY = ("summary", "adata", "gene_match", "geno", "qc", "causal", "cell_qc", "pheno", "join", "runs", "current",
                "embedding", "layout", "predictions", "manual", "metrics", "gp_result", "gp_final", "params",
                "eval_params", "evaluation")


@dataclass
class RunRecord:
    """One training run as the GUI knows it."""

    path: str
    kind: str
    target: str
    config: dict[str, Any]
    status: str = "running"
    result: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return Path(self.path).name


@dataclass
class AppState:
    """Everything the window shows, as plain data; assigning a field emits ``events.<field>``."""

    kind: str | None = None  # "singlecell" | "genotype"
    path: str | None = None  # what the user opened
    data_path: str | None = None  # the file jobs read (the demo is written to a cache file)
    summary: Any = None  # SingleCellSummary | dict (genotype)
    adata: Any = None
    label_key: str | None = None
    labels_path: str | None = None  # a labels table added in the window (the job joins it by cell ID)
    model_dir: str = str(CELLLM_TINY)
    gene_match: Any = None
    geno: Any = None
    qc: Any = None  # genotype QC
    causal: pd.DataFrame | None = None  # the simulated demo's causal markers (circled on the importance plot)
    cell_qc: dict[str, Any] | None = None  # single-cell QC arrays (counts/genes per cell) for the histograms
    pheno: pd.DataFrame | None = None
    pheno_path: str | None = None
    orientation: str = "auto"  # numeric genotype matrices: the Data tab's Layout choice (jobs read it so too)
    trait: str | None = None
    traits: list[str] = field(default_factory=list)
    join: Any = None
    task: str = "finetune"
    params: dict[str, Any] = field(default_factory=dict)
    eval_params: dict[str, Any] = field(default_factory=lambda: dict(EVAL_DEFAULTS))  # "Evaluate (K repeats)"
    device: str = "auto"
    compare_models: list[str] = field(default_factory=lambda: list(GP_MODELS))  # "compare": which ones
    runs: list[RunRecord] = field(default_factory=list)
    current: RunRecord | None = None
    embedding: np.ndarray | None = None  # cells x dim (X_celllm), aligned to adata.obs_names
    layout: np.ndarray | None = None  # cells x 2 (X_umap or a preview)
    layout_kind: str = ""  # "pca preview" | "umap" | "dataset X_umap"
    predictions: pd.DataFrame | None = None  # index obs_names: celllm_label, celllm_confidence
    manual: np.ndarray | None = None  # object array of manual labels ("" = none)
    metrics: dict[str, Any] | None = None  # finetune metrics.json
    gp_result: dict[str, Any] | None = None
    gp_final: dict[str, Any] | None = None  # result of the GP train job (models folder, gebv_csv)
    evaluation: dict[str, Any] | None = None  # a repeated evaluation's metrics.json (celllm.evaluate)
    events: ClassVar[SignalGroupDescriptor] = SignalGroupDescriptor(
        signal_group_class=StateEvents, equality_operators=dict.fromkeys(_BY_IDENTITY, operator.is_))

    # -- dataset -----------------------------------------------------------------------------------
    def clear_results(self) -> None:
        """Forget everything derived from the previous dataset."""
        self.embedding = self.layout = self.predictions = self.manual = None
        self.metrics = self.gp_result = self.gp_final = self.gene_match = self.evaluation = None
        self.layout_kind = ""

    def set_singlecell(self, path: str, data_path: str, adata: Any, summary: Any, gene_match: Any = None,
                       cell_qc: dict[str, Any] | None = None) -> None:
        """A single-cell dataset was read (in a worker). Emits ``dataset`` once, no field events."""
        with self.events.blocked():
            self.clear_results()
            self.kind, self.path, self.data_path, self.adata, self.summary = (
                "singlecell", path, data_path, adata, summary)
            self.geno = self.qc = self.pheno = self.join = self.causal = None
            self.gene_match, self.cell_qc = gene_match, cell_qc
            cols = list(getattr(summary, "label_columns", {}) or {})
            self.label_key = pick_label_column(cols)
            self.labels_path = None
            self.manual = np.full(adata.n_obs, "", dtype=object)
            if self.task not in SC_TASKS:
                self.task = "finetune"
            if "X_umap" in getattr(adata, "obsm", {}):
                self.layout = np.asarray(adata.obsm["X_umap"], dtype=np.float32)[:, :2]
                self.layout_kind = "dataset X_umap"
        self.events.dataset.emit()

    def set_genotype(self, path: str, geno: Any, qc: Any, summary: dict[str, Any],
                     causal: pd.DataFrame | None = None) -> None:
        """A genotype matrix was read and QC'd (in a worker). Emits ``dataset`` once, no field events."""
        with self.events.blocked():
            self.clear_results()
            self.kind, self.path, self.data_path, self.geno, self.qc, self.summary = (
                "genotype", path, path, geno, qc, summary)
            self.causal = causal
            self.adata = self.label_key = self.labels_path = self.cell_qc = None
            if self.task not in GP_TASKS:
                self.task = "compare"
        self.events.dataset.emit()

    def set_phenotypes(self, path: str, pheno: pd.DataFrame, trait: str | None,
                       traits: list[str] | None = None) -> None:
        """A phenotype table was added; ``trait`` defaults to the first numeric column (``traits``: the
        columns a user may pick, ID columns left out)."""
        numeric = traits if traits is not None else [c for c in pheno.columns
                                                      if pd.api.types.is_numeric_dtype(pheno[c])]
        with self.events.blocked():
            self.pheno_path, self.pheno = path, pheno
            self.traits = list(numeric)
            self.trait = trait if trait in numeric else (numeric[0] if numeric else None)
        self.events.phenotypes.emit()

    @property
    def n_items(self) -> int:
        """Cells or samples."""
        if self.adata is not None:
            return int(self.adata.n_obs)
        if self.geno is not None:
            return len(self.geno.samples)
        return 0

    def obs_columns(self) -> list[str]:
        """Columns a user can colour the embedding by (categorical first)."""
        if self.adata is None:
            return []
        cols = list(self.adata.obs.columns)
        extra = []
        if self.predictions is not None:
            extra += [c for c in self.predictions.columns if c not in cols]
        if self.manual is not None and (self.manual != "").any():
            extra.append("manual_label")
        return cols + extra

    def column_values(self, name: str) -> np.ndarray:
        """Values of an obs column, a prediction column or the manual labels, one per cell."""
        if name == "manual_label" and self.manual is not None:
            return np.where(self.manual == "", "(none)", self.manual).astype(object)
        if self.predictions is not None and name in self.predictions.columns:
            return self.predictions[name].to_numpy()
        return self.adata.obs[name].to_numpy()

    # -- jobs --------------------------------------------------------------------------------------
    def job_spec(self, run_dir: str | None = None, *, evaluate: bool = False) -> tuple[str, dict[str, Any]]:
        """(target, config) for the chosen task and settings: exactly what a CLI twin would pass.

        ``evaluate``: the fine-tune's settings repeated over seeded splits (``celllm.evaluate``, the CLI's
        ``celllm finetune --repeats K``) with ``eval_params`` (repeats, scratch, label fractions)."""
        p = dict(self.params)
        if evaluate and not (self.kind == "singlecell" and self.task == "finetune"):
            raise ValueError("repeated evaluation is for fine-tuning: choose 'Fine-tune CellLM' on the Model tab")
        if self.kind == "singlecell":
            if self.task not in SC_TASKS:
                raise ValueError(f"unknown single-cell task {self.task!r}")
            entry = job(EVAL_JOB if evaluate else SC_JOBS[self.task])
            if evaluate:
                p.update(self.eval_params)
            p = _none_means_default(entry.config, p)
            cfg: dict[str, Any] = {"data": self.data_path, "device": self.device, "threads": p.pop("threads", None)}
            if self.task == "finetune":
                cfg.update(label_key=self.label_key, init=self.model_dir, labels=self.labels_path)
            elif self.task == "embed":
                cfg.update(model=self.model_dir, out=str(Path(run_dir) / "embedded.h5ad") if run_dir else None)
            cfg.update(p)
        elif self.kind == "genotype":
            entry = job("gp.cv")
            models = list(self.compare_models or GP_MODELS) if self.task == "compare" else [GP_TASKS[self.task]]
            per_model: dict[str, dict[str, Any]] = {}
            for k in [k for k in p if "." in k]:  # "dnngp.dropout1" -> params {"dnngp": {"dropout1": ..}}
                name, key = k.split(".", 1)
                per_model.setdefault(name, {})[key] = p.pop(k)
            p = _none_means_default(entry.config, p)
            cfg = {"geno": self.data_path, "pheno": self.pheno_path, "trait": self.trait, "models": models,
                   "device": self.device, **p}
            if self.orientation != "auto":
                cfg["orientation"] = self.orientation
            if per_model:
                cfg["params"] = per_model
        else:
            raise ValueError("open a dataset first")
        if run_dir:
            cfg["run_dir"] = run_dir
        cfg = {k: v for k, v in cfg.items() if v is not None}
        # validated by the job's config now (a clear message before any run folder), placeholders for the
        # paths a run adds later
        probe = {"run_dir": "(run folder)", **({"out": "(run folder)/embedded.h5ad"} if self.task == "embed" else {})}
        entry.config.from_dict({**probe, **cfg})
        return entry.target, cfg

    def add_run(self, rec: RunRecord) -> None:
        """A run started (or was reopened)."""
        self.current = rec
        self.runs = [r for r in self.runs if r.path != rec.path] + [rec]

    def update_run(self, rec: RunRecord, status: str, result: dict[str, Any] | None = None) -> None:
        """A run's status changed (done / failed / cancelled): the ``runs`` event fires."""
        rec.status = status
        if result is not None:
            rec.result = result
        self.runs = list(self.runs)  # a new list: listeners of ``runs`` hear about the in-place change

    # -- results -----------------------------------------------------------------------------------
    def set_embedding(self, emb: np.ndarray, predictions: pd.DataFrame | None = None) -> None:
        """Embeddings (and predictions) for every cell of the dataset."""
        if predictions is not None:  # first: listeners of ``embedding`` see the predictions that came with it
            self.predictions = predictions
        self.embedding = np.asarray(emb, dtype=np.float32)

    def set_layout(self, xy: np.ndarray, kind: str) -> None:
        """A 2-D layout (preview or refined UMAP)."""
        self.layout_kind = kind  # first: listeners of ``layout`` read the kind of the new layout
        self.layout = np.asarray(xy, dtype=np.float32)

    def assign_manual(self, indices: np.ndarray, label: str) -> int:
        """Give ``label`` to the selected cells (empty label clears). Returns how many changed."""
        if self.manual is None:
            raise ValueError("no single-cell dataset is open")
        idx = np.asarray(indices, dtype=np.int64)
        self.manual[idx] = label.strip()
        self.events.manual.emit(self.manual, self.manual)  # changed in place: no assignment to announce it
        return int(idx.size)

    def annotated_adata(self) -> Any:
        """The dataset with everything the session added, per the AnnData conventions: obsm X_celllm and
        X_umap, obs celllm_label/celllm_confidence/manual_label, uns['omicslab'] (run parameters, metrics).
        Counts are left as read."""
        if self.adata is None:
            raise ValueError("no single-cell dataset is open")
        ad = self.adata.copy() if not getattr(self.adata, "isbacked", False) else self.adata.to_memory()
        if self.embedding is not None:
            ad.obsm["X_celllm"] = self.embedding
        if self.layout is not None and self.layout_kind != "dataset X_umap":
            ad.obsm["X_umap"] = self.layout
        if self.predictions is not None:
            for c in self.predictions.columns:
                ad.obs[c] = self.predictions[c].reindex(ad.obs_names).to_numpy()
        if self.manual is not None:
            ad.obs["manual_label"] = pd.Categorical(self.manual.astype(str))
        om = dict(ad.uns.get("omicslab", {}) or {})
        om["gui"] = {"source": self.path, "label_key": self.label_key or "", "layout": self.layout_kind,
                     "model": self.model_dir}
        if self.current is not None:
            om["run"] = {"path": self.current.path, "target": self.current.target,
                         "config": json_safe(self.current.config, h5ad=True)}
        if self.metrics is not None:
            om["metrics"] = json_safe({k: v for k, v in self.metrics.items() if k in (
                "best_epoch", "best_val_macro_f1", "history", "gene_match_rate", "classes")}, h5ad=True)
        ad.uns["omicslab"] = om
        return ad

    def labels_table(self) -> pd.DataFrame:
        """Per-cell labels: the chosen label column, predictions and manual labels."""
        if self.adata is None:
            raise ValueError("no single-cell dataset is open")
        df = pd.DataFrame(index=pd.Index(self.adata.obs_names, name="cell"))
        if self.label_key and self.label_key in self.adata.obs:
            df[self.label_key] = self.adata.obs[self.label_key].astype(str).to_numpy()
        if self.predictions is not None:
            df = df.join(self.predictions)
        if self.manual is not None:
            df["manual_label"] = self.manual.astype(str)
        return df

    def gp_tables(self) -> dict[str, pd.DataFrame]:
        """Genomic-prediction tables from the CV result: per-fold r, summary, predictions (GEBV)."""
        r = self.gp_result or {}
        out: dict[str, pd.DataFrame] = {}
        folds = gp_fold_table(r)
        if not folds.empty:
            out["cv_pearson_r"] = folds
            out["cv_summary"] = folds.groupby("model")["r"].agg(["mean", "std", "count"])
            out["cv_table"] = gp_wide_table(folds)
        preds = gp_predictions(r)
        if preds is not None:
            out["gebv"] = preds
        return out


def pick_label_column(cols: list[str]) -> str | None:
    """The likeliest cell-type column among categorical obs columns."""
    for pref in ("cell_type", "celltype", "cell_types", "bulk_labels", "labels", "label", "cluster", "louvain"):
        for c in cols:
            if c.lower() == pref:
                return c
    for c in cols:
        if "type" in c.lower() or "label" in c.lower():
            return c
    return cols[0] if cols else None


def gp_fold_table(result: dict[str, Any]) -> pd.DataFrame:
    """Pearson r per model and fold (columns model, repeat, fold, r) from a GP CV result.

    Reads the per-fold rows of ``app.engine.gp.jobs:cv`` (``"folds": [{"model", "repeat", "fold",
    "pearson", ...}]``); a result with only the per-model summaries falls back to
    ``"models": {NAME: {"pearson_folds": [...]}}`` (folds numbered in order, one repeat)."""
    rows: list[dict[str, Any]] = []
    for f in result.get("folds", []) or []:
        if isinstance(f, dict):
            r = f.get("pearson", f.get("r"))
            rows.append({"model": str(f.get("model", "?")), "repeat": int(f.get("repeat", 1) or 1),
                         "fold": int(f.get("fold", len(rows) + 1)), "r": np.nan if r is None else float(r)})
    if not rows and isinstance(result.get("models"), dict):
        for name, m in result["models"].items():
            if isinstance(m, dict):
                for i, r in enumerate(m.get("pearson_folds") or []):
                    rows.append({"model": str(name), "repeat": 1, "fold": i + 1,
                                 "r": np.nan if r is None else float(r)})
    return pd.DataFrame(rows, columns=["model", "repeat", "fold", "r"])


def gp_wide_table(folds: pd.DataFrame) -> pd.DataFrame:
    """One row per model, one column per fold ("fold 3" or "r2 f3" with repeats), then mean and sd;
    best model first."""
    if folds.empty:
        return pd.DataFrame()
    many = folds["repeat"].nunique() > 1
    label = folds.apply(lambda r: f"r{r['repeat']} f{r['fold']}" if many else f"fold {r['fold']}", axis=1)
    f = folds.assign(col=label)
    order = list(dict.fromkeys(f.sort_values(["repeat", "fold"])["col"]))
    wide = f.pivot_table(index="model", columns="col", values="r", aggfunc="first")[order]
    wide["mean"] = folds.groupby("model")["r"].mean()
    wide["sd"] = folds.groupby("model")["r"].std(ddof=1)
    return wide.sort_values("mean", ascending=False)


def gp_predictions(result: dict[str, Any]) -> pd.DataFrame | None:
    """Out-of-fold predictions (sample, model, fold, observed, predicted) when the run wrote them."""
    path = result.get("predictions_csv") or result.get("predictions")
    if isinstance(path, str) and Path(path).is_file():
        return pd.read_csv(path)
    return None
