"""Annotate a new dataset (the query) with a fine-tuned CellLM model, on one map with its reference.

``annotate(config, reporter)`` is the job function behind ``python -m app celllm annotate`` and the window's
"Annotate another dataset…" step. Steps:

1. load the fine-tuned model (its classifier head is required) and match the query's genes against the
   model's vocabulary: refuse under ``min_gene_match``, warn under 50 %;
2. embed every query cell, predict its label (``celllm_best_label``) and confidence (softmax maximum); cells
   under ``min_confidence`` become ``Unassigned`` in ``celllm_label``;
3. embed the reference (the fine-tune run's own data, or ``reference``) with the same model and lay reference
   and query out together on one 2-D map (PCA, refined by UMAP unless ``map="pca"``);
4. when the query has labels of its own (``label_key``: an .obs column or a column of ``labels``), score the
   predictions against them (accuracy, macro-F1, confusion), beside the baseline (``logistic_baseline``:
   CellTypist's recipe, fitted on the same reference training cells, on the genes both datasets share);
5. export (``export_annotation``): the annotated query .h5ad (``obs['celllm_label']``,
   ``obs['celllm_confidence']``, ``obs['celllm_best_label']``, ``obsm['X_celllm']``, ``obsm['X_joint_map']``,
   the threshold and scores in ``uns['omicslab']['celllm_annotate']``), ``OUT_labels.csv``,
   ``OUT_joint_map.csv`` (+ ``.png``) and ``OUT_annotate.json`` (the report).

``apply_threshold``, ``class_counts`` and ``score_transfer`` are cheap and Qt-free, so the window's slider
recomputes the Unassigned cells and the per-class counts live, and its export uses ``export_annotation``.
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
from app.engine.celllm.job_configs import AnnotateConfig
from app.engine.reporter import Reporter, ensure_reporter
from app.engine.results import AnnotateResult

UNASSIGNED = "Unassigned"
"""The label of cells whose confidence is under the threshold."""

MAP_CHOICES = ("umap", "pca")
WARN_GENE_MATCH = 0.5
"""Under this gene match rate the job warns that predictions may be poor."""


# --------------------------------------------------------------------------------------------------
# thresholds, counts, scores (cheap: the window calls them on every slider move)
# --------------------------------------------------------------------------------------------------
def apply_threshold(best_label: Any, confidence: Any, min_confidence: float) -> np.ndarray:
    """Per-cell label: the predicted class, or ``Unassigned`` where the confidence is under the threshold."""
    best = np.asarray(best_label, dtype=object).astype(str)
    conf = np.asarray(confidence, dtype=np.float64)
    return np.where(conf < float(min_confidence), UNASSIGNED, best).astype(object)


def class_counts(labels: Any, classes: list[str] | None = None) -> dict[str, int]:
    """Cells per label, in ``classes`` order (every class listed, even with 0 cells), then ``Unassigned``."""
    s = pd.Series(np.asarray(labels, dtype=object).astype(str)).value_counts()
    order = list(classes or sorted(set(s.index) - {UNASSIGNED}))
    out = {c: int(s.get(c, 0)) for c in order}
    out.update({c: int(n) for c, n in s.items() if c not in out and c != UNASSIGNED})
    out[UNASSIGNED] = int(s.get(UNASSIGNED, 0))
    return out


def score_transfer(true_labels: Any, predicted: Any, classes: list[str]) -> dict:
    """Scores of predictions against the query's own labels.

    Cells without a label (missing / "NA") are left out. ``Unassigned`` counts as a wrong answer in
    ``accuracy``; ``accuracy_assigned`` is over the assigned cells only and ``assigned_fraction`` says how
    many those are. Macro-F1 averages the F1 of the classes that occur in the query's labels (Unassigned is
    not a class of its own). ``unknown_classes``: query classes the model was never trained on (their cells
    are errors whatever the threshold).
    """
    from app.engine.celllm.splits import MISSING_LABELS, classification_scores

    true = pd.Series(np.asarray(true_labels, dtype=object))
    keep = ~(true.isna() | true.astype(str).str.strip().str.lower().isin(MISSING_LABELS)).to_numpy()
    t = true[keep].astype(str).str.strip().to_numpy()
    p = np.asarray(predicted, dtype=object).astype(str)[keep]
    if len(t) == 0:
        return {"n_scored": 0}
    out = classification_scores(t, p, [*list(classes), UNASSIGNED])
    true_classes = sorted(set(t.tolist()))
    out["macro_f1"] = float(np.mean([out["per_class_f1"].get(c, 0.0) for c in true_classes]))
    assigned = p != UNASSIGNED
    out["n_scored"] = len(t)
    out["assigned_fraction"] = float(assigned.mean())
    out["accuracy_assigned"] = float((t[assigned] == p[assigned]).mean()) if assigned.any() else float("nan")
    out["unknown_classes"] = sorted(set(true_classes) - set(classes))
    return out


# --------------------------------------------------------------------------------------------------
# model, reference, genes
# --------------------------------------------------------------------------------------------------
def find_run_folder(model: str | Path) -> Path | None:
    """The fine-tune run folder behind ``model`` (a run folder, or its ``model`` sub-folder); None when the
    model folder stands alone (copied elsewhere, or the shipped one)."""
    from app.engine.celllm.embed import MODEL_SUBDIR
    from app.engine.run_dir import RunDir

    p = Path(model)
    for cand in (p, p.parent):
        if (cand / MODEL_SUBDIR).is_dir() and RunDir.is_run_dir(cand):
            return cand
    return None


def reference_spec(config: AnnotateConfig, rep: Reporter) -> dict | None:
    """Where the reference cells are: ``config.reference`` (+ ``reference_labels`` /
    ``reference_label_key``), else the fine-tune run's own data. Also the run's training cells (split.json),
    so the baseline learns from exactly the cells the model learned from. None when unknown."""
    spec: dict[str, Any] = {}
    run = find_run_folder(config.model)
    run_cfg: dict = {}
    if run is not None:
        from app.engine.run_dir import RunDir

        run_cfg = RunDir.open(run).read_config()
        split_file = run / "split.json"
        if split_file.is_file():
            try:
                spec["train_cells"] = list(json.loads(split_file.read_text(encoding="utf-8")).get("train", []))
            except (OSError, ValueError):
                rep.log(f"could not read {split_file}; the baseline uses every labelled reference cell",
                        level="warning")
    if config.reference:
        if str(config.reference) != str(run_cfg.get("data")):
            spec.pop("train_cells", None)  # another dataset: its cells were never split
        spec.update(data=config.reference, labels=config.reference_labels,
                    label_key=config.reference_label_key or run_cfg.get("label_key"))
    elif run_cfg.get("data"):
        spec.update(data=run_cfg["data"], labels=run_cfg.get("labels"), label_key=run_cfg.get("label_key"))
    else:
        return None
    return spec


@dataclass
class Embedded:
    """One dataset run through the model."""

    emb: np.ndarray  # cells x dim
    probs: np.ndarray  # cells x classes
    gene_match: Any  # GeneMatch


def check_gene_match(gm: Any, floor: float, what: str, rep: Reporter) -> None:
    """Refuse under ``floor`` (what, where, what to do); warn under 50 %."""
    rate = float(gm.match_rate)
    rep.log(f"{what}: {gm.n_matched:,} of {gm.n_data:,} genes ({rate:.1%}) are in the model's vocabulary")
    if gm.n_matched == 0 or rate < floor:
        raise DataError(
            f"only {rate:.1%} of the {what}'s genes ({gm.n_matched:,} of {gm.n_data:,}) are in the model's "
            f"vocabulary, under the {floor:.0%} floor: predictions would be guesses",
            None, "Use the same species and kind of gene names as the reference (symbols or Ensembl IDs), or "
                  "pass --gene-map FILE (two columns: your gene ID, the model's gene name).\n" + gm.to_text())
    if rate < WARN_GENE_MATCH:
        rep.log(f"warning: only {rate:.1%} of the {what}'s genes match the model's vocabulary; labels may be "
                "poor", level="warning")


def embed_cells(lm: Any, adata: Any, dev: Any, *, max_len: int | None, batch_size: int, floor: float,
                what: str, id_map: dict | None, rep: Reporter) -> Embedded:
    """Gene match (refusing under ``floor``), tokenise and run the model + head over every cell."""
    from app.data.singlecell import counts_matrix, harmonise_genes
    from app.engine.celllm.embed import infer
    from app.engine.celllm.tokenize import tokenize_counts

    gm = harmonise_genes(list(map(str, adata.var_names)), lm.vocab, id_map=id_map)
    check_gene_match(gm, floor, what, rep)
    counts = counts_matrix(adata)
    cells = tokenize_counts(counts, np.asarray(gm.data_to_vocab), max_len=max_len)
    feats = None
    if lm.readout is not None and lm.head is not None:  # the linear path reads genes by name
        feats = lm.readout.features(counts, adata.var_names)
        if lm.readout.n_missing(feats):
            rep.log(f"linear readout: {lm.readout.n_missing(feats):,} of its {len(lm.readout.genes):,} genes are "
                    f"not in the {what}; imputed at the training mean", level="warning")
    emb, probs = infer(lm, cells, dev, batch_size, rep, feats)
    assert probs is not None  # the caller checked that the model has a head
    return Embedded(emb, probs, gm)


def _joined_key(adata: Any) -> str | None:
    """The label column a labels table was joined as (``read_singlecell(..., labels=...)`` reports it)."""
    return ((adata.uns.get("omicslab") or {}).get("labels") or {}).get("label_key")


def _subsample(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    from app.engine.celllm.finetune import stratified_subsample

    return stratified_subsample(labels, n, seed)


def joint_layout(emb: np.ndarray, method: str, seed: int, rep: Reporter) -> np.ndarray:
    """2-D map of all cells: the exact PCA preview, refined by UMAP (initialised from it) for ``umap``."""
    from app.engine.layout import pca_preview, umap_refine

    xy = pca_preview(emb, seed)
    if method == "umap" and len(emb) >= 5:
        rep.log(f"UMAP of {len(emb):,} reference + query cells")
        xy = umap_refine(emb, init=xy, seed=seed)
    return xy


def _transfer_baseline(ref: Any, ref_labels: np.ndarray, train_mask: np.ndarray, query: Any, q_labels: Any,
                       classes: list[str], n_genes: int, seed: int) -> dict:
    """The baseline (``logistic_baseline``) fitted on the reference training cells, scored on the query, on the genes
    both datasets share (matched by name after dropping Ensembl versions and case)."""
    import scipy.sparse as sp

    from app.data.genes import strip_version
    from app.data.singlecell import counts_matrix
    from app.engine.celllm.baseline import logistic_baseline

    def keyed(names: Any) -> pd.Index:
        return pd.Index([strip_version(str(g).strip()).upper() for g in names])

    rk, qk = keyed(ref.var_names), keyed(query.var_names)
    rk_u, qk_u = ~rk.duplicated(), ~qk.duplicated()
    shared = pd.Index(rk[rk_u]).intersection(pd.Index(qk[qk_u]))
    if len(shared) == 0:
        return {"error": "the reference and the query share no gene names"}
    ri = pd.Index(rk[rk_u]).get_indexer(shared)
    qi = pd.Index(qk[qk_u]).get_indexer(shared)
    r_cols, q_cols = np.flatnonzero(rk_u)[ri], np.flatnonzero(qk_u)[qi]
    x = sp.vstack([counts_matrix(ref)[:, r_cols], counts_matrix(query)[:, q_cols]]).tocsr()
    n_ref = ref.n_obs
    q_true = pd.Series(np.asarray(q_labels, dtype=object))
    from app.engine.celllm.splits import MISSING_LABELS

    q_ok = ~(q_true.isna() | q_true.astype(str).str.strip().str.lower().isin(MISSING_LABELS)).to_numpy()
    labels = np.concatenate([np.asarray(ref_labels, dtype=object).astype(str),
                             q_true.astype(str).str.strip().to_numpy()])
    train = np.flatnonzero(train_mask)
    test = n_ref + np.flatnonzero(q_ok)
    res = logistic_baseline(x, labels, train, test, classes, n_top_genes=n_genes, seed=seed)
    res.pop("predictions", None)
    res["n_shared_genes"] = len(shared)
    res["macro_f1"] = float(np.mean([res["per_class_f1"].get(c, 0.0) for c in sorted(set(labels[test]))]))
    res["method"] = f"{res['method']}, on the genes shared with the reference"
    return res


# --------------------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------------------
def output_paths(out: str | Path) -> dict[str, Path]:
    """The files written beside ``OUT.h5ad``."""
    out = Path(out)
    stem = out.with_suffix("")
    return {"h5ad": out, "labels_csv": Path(f"{stem}_labels.csv"), "joint_map_csv": Path(f"{stem}_joint_map.csv"),
            "joint_map_png": Path(f"{stem}_joint_map.png"), "report": Path(f"{stem}_annotate.json")}


def export_annotation(query: Any, joint_map: pd.DataFrame | None, report: dict, out: str | Path,
                      min_confidence: float, *, true_labels: Any = None) -> dict[str, str]:
    """Write the annotated query at ``min_confidence`` (every file atomically). Returns kind -> path.

    ``query`` must carry ``obs['celllm_best_label']`` and ``obs['celllm_confidence']``; ``celllm_label`` is
    recomputed for the threshold, ``report`` (updated: threshold, counts, scores) goes to
    ``uns['omicslab']['celllm_annotate']`` and ``OUT_annotate.json``.
    """
    from app.data.export import write_csv_atomic, write_h5ad_atomic
    from app.data.jsonsafe import json_safe, write_json

    paths = output_paths(out)
    if paths["h5ad"].suffix.lower() != ".h5ad":
        raise DataError("the output must be an .h5ad file", paths["h5ad"], "Pass --out NAME.h5ad.")
    classes = list(report.get("classes", []))
    labels = apply_threshold(query.obs["celllm_best_label"], query.obs["celllm_confidence"], min_confidence)
    query.obs["celllm_label"] = pd.Categorical(labels, categories=[*classes, UNASSIGNED])
    report = dict(report)
    report["min_confidence"] = float(min_confidence)
    report["counts"] = class_counts(labels, classes)
    report["n_unassigned"] = report["counts"][UNASSIGNED]
    if true_labels is not None:
        report["scores"] = score_transfer(true_labels, labels, classes)
    om = dict(query.uns.get("omicslab", {}) or {})
    om["celllm_annotate"] = json_safe(report, h5ad=True)
    query.uns["omicslab"] = om
    written = {"h5ad": str(write_h5ad_atomic(query, paths["h5ad"]))}
    table = pd.DataFrame({"celllm_label": labels, "celllm_confidence": query.obs["celllm_confidence"].to_numpy(),
                          "celllm_best_label": query.obs["celllm_best_label"].astype(str).to_numpy()},
                         index=pd.Index(query.obs_names.astype(str), name="cell"))
    if true_labels is not None:
        table["true_label"] = np.asarray(true_labels, dtype=object)
    written["labels_csv"] = str(write_csv_atomic(table, paths["labels_csv"]))
    if joint_map is not None:
        jm = joint_map.copy()
        is_q = (jm["dataset"] == "query").to_numpy()
        jm.loc[is_q, "label"] = labels
        written["joint_map_csv"] = str(write_csv_atomic(jm, paths["joint_map_csv"], index=False))
        png = plot_joint_map(jm, paths["joint_map_png"])
        if png is not None:
            written["joint_map_png"] = str(png)
    report["files"] = written
    write_json(paths["report"], report)
    written["report"] = str(paths["report"])
    return written


def plot_joint_map(jm: pd.DataFrame, path: Path) -> Path | None:
    """The joint map as a PNG (three panels: dataset, label, confidence); None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    from app.data.atomic import atomic_path

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8), constrained_layout=True)
    for ax, col, title in zip(axes, ("dataset", "label", "confidence"),
                              ("dataset", "label (reference: own; query: predicted)", "confidence"), strict=True):
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
        if col == "confidence":
            sc = ax.scatter(jm["x"], jm["y"], c=jm["confidence"], s=6, cmap="viridis", vmin=0, vmax=1)
            fig.colorbar(sc, ax=ax, shrink=0.8)
            continue
        for k, (name, part) in enumerate(jm.groupby(col, sort=True, observed=True)):
            colour = "#b0b0b0" if name == UNASSIGNED else f"C{k % 10}"
            ax.scatter(part["x"], part["y"], s=6, color=colour, label=str(name))
        ax.legend(markerscale=2, fontsize=8, loc="best")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------------
# the job
# --------------------------------------------------------------------------------------------------
def annotate(config: AnnotateConfig | dict, reporter: Reporter | None = None) -> AnnotateResult:
    """Job function ``app.engine.celllm.annotate:annotate``; every setting is a field of ``AnnotateConfig``
    (a dict is validated into one). Returns the report (also in ``OUT_annotate.json``).
    """
    from app.data.jsonsafe import json_safe
    from app.data.singlecell import read_gene_map, read_singlecell
    from app.engine.celllm.embed import load_for_inference
    from app.engine.device import device_info, resolve_compute

    rep = ensure_reporter(reporter)
    cfg = AnnotateConfig.coerce(config)
    out = Path(cfg.out)
    threshold = float(cfg.min_confidence)
    t0 = time.time()
    # as celllm embed: batches of cells embedded one per worker thread (the count changes no label), so the
    # default is the usable cores; on a busy machine --threads 1 is the better choice (see embed.embed)
    dev, _ = resolve_compute(str(cfg.device), cfg.threads, many_fits=True)
    seed = int(cfg.seed)
    rep.device(device_info(dev))
    lm = load_for_inference(cfg.model, dev)
    if lm.head is None or not lm.classes:
        raise DataError("this model has no cell-type classifier (it was not fine-tuned)", lm.path,
                        "Fine-tune it first (celllm finetune, or the window's Fine-tune button) and pass that run.")
    classes = list(lm.classes)
    max_len = cfg.max_len or lm.extra.get("max_len") or getattr(lm.config, "max_len", None)
    id_map = read_gene_map(cfg.gene_map) if cfg.gene_map else None
    kw = {"max_len": max_len, "batch_size": int(cfg.batch_size), "floor": float(cfg.min_gene_match),
          "id_map": id_map, "rep": rep}

    # query -------------------------------------------------------------------------------------------------
    label_key = cfg.label_key
    query = read_singlecell(cfg.data, labels=cfg.labels, label_key=label_key)
    rep.log(f"query: {query.n_obs:,} cells x {query.n_vars:,} genes from {cfg.data}")
    if cfg.labels:  # the table's column wins over a same-named .obs column (joined as NAME_labels)
        label_key = _joined_key(query) or label_key
    q = embed_cells(lm, query, dev, what="query", **kw)
    best = np.array(classes, dtype=object)[q.probs.argmax(1)]
    query.obsm["X_celllm"] = q.emb
    query.obs["celllm_best_label"] = pd.Categorical(best, categories=classes)
    query.obs["celllm_confidence"] = q.probs.max(1).astype(np.float32)
    true_q = query.obs[label_key].to_numpy() if label_key else None

    # reference ---------------------------------------------------------------------------------------------
    notes: list[str] = []
    ref_info: dict[str, Any] = {}
    joint = None
    baseline = None
    spec = reference_spec(cfg, rep)
    if spec is None:
        notes.append("no reference data known for this model (not a run folder, no --reference): the map "
                     "shows the query alone")
    else:
        try:
            ref = read_singlecell(spec["data"], labels=spec.get("labels"), label_key=spec.get("label_key"))
        except DataError as exc:
            ref = None
            notes.append(f"the reference could not be read ({exc}); the map shows the query alone")
        if ref is not None:
            rkey = (_joined_key(ref) if spec.get("labels") else None) or spec.get("label_key")
            ref_labels = (ref.obs[rkey].astype(object).where(ref.obs[rkey].notna(), "").astype(str).to_numpy()
                          if rkey and rkey in ref.obs.columns else np.full(ref.n_obs, "", dtype=object))
            rep.log(f"reference: {ref.n_obs:,} cells from {spec['data']}")
            train_cells = list(map(str, spec.get("train_cells") or []))
            train_mask = (np.isin(ref.obs_names.astype(str), train_cells) if train_cells
                          else np.ones(ref.n_obs, bool)) & np.isin(ref_labels, classes)
            if true_q is not None and len(set(ref_labels[train_mask].tolist())) >= 2:
                rep.log("fitting the baseline on the reference training cells, scoring it on the query")
                baseline = _transfer_baseline(ref, ref_labels, train_mask, query, true_q, classes,
                                              int(cfg.baseline_genes), seed)
            keep = np.arange(ref.n_obs)
            if ref.n_obs > int(cfg.max_reference_cells):
                keep = _subsample(ref_labels, int(cfg.max_reference_cells), seed)
                notes.append(f"the map shows {len(keep):,} of the {ref.n_obs:,} reference cells (stratified)")
            r_sub = ref[keep].copy()
            r = embed_cells(lm, r_sub, dev, what="reference", **kw)
            ref_info = {"data": str(spec["data"]), "labels": spec.get("labels"), "label_key": rkey,
                        "n_cells": int(ref.n_obs), "n_on_map": len(keep),
                        "gene_match": r.gene_match.to_dict()}
            r_pred = np.array(classes, dtype=object)[r.probs.argmax(1)]
            joint = pd.DataFrame({
                "cell": np.concatenate([r_sub.obs_names.astype(str), query.obs_names.astype(str)]),
                "dataset": ["reference"] * r_sub.n_obs + ["query"] * query.n_obs,
                "label": np.concatenate([ref_labels[keep], best]),
                "predicted": np.concatenate([r_pred, best]),
                "confidence": np.concatenate([r.probs.max(1), q.probs.max(1)]).astype(np.float32)})
            emb_all = np.concatenate([r.emb, q.emb])
    if joint is None:
        joint = pd.DataFrame({"cell": query.obs_names.astype(str), "dataset": "query", "label": best,
                              "predicted": best, "confidence": q.probs.max(1).astype(np.float32)})
        emb_all = q.emb
    rep.check_cancel()
    xy = joint_layout(emb_all, str(cfg.map), seed, rep)
    joint["x"], joint["y"] = xy[:, 0], xy[:, 1]
    query.obsm["X_joint_map"] = xy[(joint["dataset"] == "query").to_numpy()]

    report: dict[str, Any] = {
        "model": str(lm.path), "query": str(cfg.data), "classes": classes, "label_key": label_key,
        "gene_match": q.gene_match.to_dict(), "gene_match_text": q.gene_match.to_text(),
        "reference": ref_info or None, "map": str(cfg.map), "n_cells": int(query.n_obs),
        "scores_top_label": score_transfer(true_q, best, classes) if true_q is not None else None,
        "baseline": baseline, "notes": notes, "device": str(dev), "max_len": max_len,
    }
    for n in notes:
        rep.log(n, level="warning")
    files = export_annotation(query, joint, report, out, threshold, true_labels=true_q)
    for kind, path in files.items():
        rep.artifact(f"annotate_{kind}", path)
    result = json.loads(Path(files["report"]).read_text(encoding="utf-8"))
    result["seconds"] = round(time.time() - t0, 2)
    sc = result.get("scores")
    if sc and sc.get("n_scored"):
        rep.log(f"transfer: accuracy {sc['accuracy']:.3f}, macro-F1 {sc['macro_f1']:.3f} at threshold "
                f"{threshold:g} ({sc['assigned_fraction']:.1%} assigned)")
    return AnnotateResult.from_dict(json_safe(result))


__all__ = ["UNASSIGNED", "AnnotateConfig", "annotate", "apply_threshold", "class_counts", "export_annotation",
           "score_transfer"]
