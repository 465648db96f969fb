"""The live cell map: a fixed, seeded subsample of cells embedded while a model trains, with quality figures.

Fine-tuning refreshes it before the first step (refresh 0 = the starting model) and at every epoch end;
pretraining before the first step and every ``live_every`` steps (0 = about 20 refreshes per run) and at the
last step. Each refresh embeds the subsample in eval mode (the training RNG is left untouched), writes one
array, appends one row of quality figures to ``metrics.jsonl`` and reports events. ``live_cells`` (default
5,000, all cells when fewer; 0 = off) sets the subsample, stratified by label when there is one.

Files (``RUN/live/``; every file is written atomically, ``index.json`` last, so a reader that sees a refresh
in the index finds its arrays complete)::

    cells.json      once: {"n_cells", "cell_ids": [...], "labels": [...] | null, "label_key",
                    "batches": [...] | null, "batch_key", "classes": [...] | null, "kind": "finetune" | "pretrain"}
    reference.npy   once: PCA of log-normalised HVGs of the same cells, float32 [n, <= 50] (the baseline map)
    emb-KKKK.npy    refresh K: cell embeddings, float32 [n, dim], rows = cells.json's cell_ids
    probs-KKKK.npy  refresh K, fine-tuning only: class probabilities, float32 [n, len(classes)]
    index.json      {"refreshes": [{"refresh": K, "epoch": E, "step": S, "emb": "emb-KKKK.npy",
                    "probs": "probs-KKKK.npy" | null, "seconds": s, "quality": {...}}, ...],
                    "reference": {"method": "pca_hvg", "file": "reference.npy", "quality": {...}} | null}

Fine-tuning's refresh K is the state after epoch K; pretraining's K counts refreshes (``step`` says when).

``metrics.jsonl`` rows (besides the training rows): ``{"kind": "live", "refresh": K, "epoch": E, "step": S,
<quality>}`` per refresh, and once ``{"kind": "live_reference", "method": "pca_hvg", <quality>}``. Quality
keys (``app.engine.embedding_quality``): ``uniformity``; with labels ``silhouette``, ``knn_accuracy``; with a
batch column ``ilisi`` (and ``graph_connectivity`` with labels too); contrastive pretraining adds
``alignment``. A figure that cannot be computed is ``null``.

Events: ``Artifact("live_cells", RUN/live/cells.json)`` once, then per refresh ``Metrics(step, quality,
split="live", epoch=E)`` and ``Artifact("live_map", RUN/live/emb-KKKK.npy)`` (after index.json lists it);
the reference once as ``Metrics(0, quality, split="live_reference")``.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from app.engine.reporter import Reporter, ensure_reporter

if TYPE_CHECKING:
    from app.engine.celllm.job_configs import PretrainConfig

LIVE_DIR = "live"
DEFAULT_LIVE_CELLS = 5000
TARGET_REFRESHES = 20
"""Pretraining refreshes per run when ``live_every`` is 0 (the issue asks for 10-50)."""
ALIGNMENT_CELLS = 1000
"""Cells whose two dropout views measure alignment (contrastive pretraining only)."""


def live_subsample(n_total: int, n: int, labels: Any = None, seed: int = 0) -> np.ndarray:
    """Sorted indices of ``min(n, n_total)`` cells, seeded; with labels each label keeps its share (largest
    remainders get the leftover cells, every label present keeps at least one cell when room allows)."""
    n = int(min(max(n, 0), n_total))
    if n >= n_total:
        return np.arange(n_total)
    rng = np.random.default_rng(seed)
    if labels is None:
        return np.sort(rng.choice(n_total, n, replace=False))
    lab = np.asarray(labels, dtype=object).astype(str)
    groups = [np.flatnonzero(lab == c) for c in sorted(set(lab.tolist()))]
    exact = np.array([len(g) * n / n_total for g in groups])
    take = np.floor(exact).astype(int)
    if n >= len(groups):
        take = np.maximum(take, 1)
    while take.sum() > n:  # the at-least-one rule overshot: trim the largest
        take[int(np.argmax(take))] -= 1
    size = np.array([len(g) for g in groups])
    for i in np.argsort(-(exact - take), kind="stable"):  # leftovers: largest shortfall first, within size
        if take.sum() >= n:
            break
        take[i] += min(size[i] - take[i], 1)
    while take.sum() < n:  # still short (tiny groups full): fill from the groups with room
        i = int(np.argmax(size - take))
        take[i] += 1
    picked = [rng.choice(g, int(t), replace=False) for g, t in zip(groups, take) if t > 0]
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, np.int64)


def refresh_every(total_steps: int, live_every: int | None) -> int:
    """Pretraining steps between refreshes: ``live_every`` when set, else about ``TARGET_REFRESHES`` a run."""
    if live_every:
        return max(1, int(live_every))
    return max(1, math.ceil(int(total_steps) / TARGET_REFRESHES))


@contextlib.contextmanager
def _keep_torch_threads() -> Iterator[None]:
    """Restore torch's thread count afterwards: scikit-learn's thread-pool limits (silhouette, PCA) reset the
    OpenMP pool torch shares to its start-up size, which silently moved a 1-thread training run to 2 threads
    (measured: a 14x slower epoch loop on a busy 2-core machine)."""
    n = torch.get_num_threads()
    try:
        yield
    finally:
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)


def _finite(q: dict[str, float]) -> dict[str, float | None]:
    return {k: (float(v) if v is not None and np.isfinite(v) else None) for k, v in q.items()}


@dataclass
class LiveMap:
    """Writes the live map of one run (see the module docstring). Build it with the subsample's tokenised
    ``cells`` (and their raw ``counts`` for the reference map), then call ``refresh`` at each refresh point."""

    run_dir: Path
    model: torch.nn.Module
    cells: list
    cell_ids: list[str]
    device: torch.device
    pooling: str = "cls"
    labels: list[str] | None = None
    batches: list[str] | None = None
    label_key: str | None = None
    batch_key: str | None = None
    head: torch.nn.Module | None = None
    classes: list[str] | None = None
    readout: Any = None  # a cls+linear fine-tune's linear path (readout.Readout) and its subsample's features
    features: Any = None
    contrastive: bool = False
    kind: str = "finetune"
    batch_size: int = 128
    reporter: Reporter | None = None
    refreshes: list[dict[str, Any]] = field(default_factory=list)
    reference: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.run_dir = Path(self.run_dir)
        self.reporter = ensure_reporter(self.reporter)
        self.dir = self.run_dir / LIVE_DIR
        self.dir.mkdir(parents=True, exist_ok=True)

    # -- setup ------------------------------------------------------------------------------------
    def start(self, counts: Any = None, resume_step: int | None = None, resume_epoch: int | None = None) -> None:
        """Write ``cells.json`` and the PCA reference (once), or on a resume keep the refreshes made up to the
        checkpoint (``resume_step`` / ``resume_epoch``) and drop later ones."""
        with _keep_torch_threads():
            self._start(counts, resume_step, resume_epoch)

    def _start(self, counts: Any, resume_step: int | None, resume_epoch: int | None) -> None:
        from app.data.atomic import write_text_atomic

        old = read_index(self.run_dir) if (resume_step is not None or resume_epoch is not None) else None
        if old is not None:
            keep = [r for r in old.get("refreshes", [])
                    if (resume_step is None or int(r["step"]) <= resume_step)
                    and (resume_epoch is None or int(r["epoch"]) <= resume_epoch)]
            self.refreshes, self.reference = keep, old.get("reference")
        cells_json = {"kind": self.kind, "n_cells": len(self.cell_ids), "cell_ids": list(map(str, self.cell_ids)),
                      "labels": self.labels, "label_key": self.label_key, "batches": self.batches,
                      "batch_key": self.batch_key, "classes": self.classes}
        write_text_atomic(self.dir / "cells.json", json.dumps(cells_json))
        self.reporter.artifact("live_cells", str(self.dir / "cells.json"))
        if self.reference is None and counts is not None and len(self.cell_ids) >= 3:
            self._write_reference(counts)
        self._write_index()

    def _write_reference(self, counts: Any) -> None:
        from app.engine import embedding_quality as eq
        from app.engine.run_dir import RunDir

        try:
            ref = eq.pca_reference(counts)
        except Exception as exc:  # a reference is a nicety: never fail the training run for it
            self.reporter.log(f"live map: no PCA reference ({exc})", level="warning")
            return
        RunDir(self.run_dir).save_array(f"{LIVE_DIR}/reference", ref)
        q = _finite(eq.quality(ref, self.labels, self.batches))
        self.reference = {"method": "pca_hvg", "file": "reference.npy", "quality": q}
        RunDir(self.run_dir).append_metrics({"kind": "live_reference", "method": "pca_hvg", **q})
        self.reporter.metrics(0, {k: v for k, v in q.items() if v is not None}, split="live_reference")

    # -- one refresh ------------------------------------------------------------------------------
    def refresh(self, epoch: int, step: int) -> dict[str, float | None]:
        """Embed the subsample with the current weights (eval mode; training mode, RNG and torch's thread count
        restored after), write the arrays, append the quality row, report the events. Returns the figures."""
        with _keep_torch_threads():
            return self._refresh(epoch, step)

    @torch.no_grad()
    def _refresh(self, epoch: int, step: int) -> dict[str, float | None]:
        from app.engine import embedding_quality as eq
        from app.engine.celllm.embed import LoadedModel, infer
        from app.engine.run_dir import RunDir

        t0 = time.perf_counter()
        k = len(self.refreshes)
        was_training = self.model.training
        head_training = self.head.training if self.head is not None else False
        lm = LoadedModel(self.model, None, [], {}, self.run_dir, head=self.head, classes=self.classes,
                         pooling=self.pooling, readout=self.readout)
        try:
            emb, probs = infer(lm, self.cells, self.device, self.batch_size, features=self.features)
            align = self._alignment() if self.contrastive else None
        finally:
            self.model.train(was_training)
            if self.head is not None:
                self.head.train(head_training)
        rd = RunDir(self.run_dir)
        emb_name = f"emb-{k:04d}.npy"
        rd.save_array(f"{LIVE_DIR}/{emb_name[:-4]}", emb.astype(np.float32))
        probs_name = None
        if probs is not None:
            probs_name = f"probs-{k:04d}.npy"
            rd.save_array(f"{LIVE_DIR}/{probs_name[:-4]}", probs.astype(np.float32))
        q = eq.quality(emb, self.labels, self.batches)
        if align is not None:
            q["alignment"] = align
        q = _finite(q)
        seconds = round(time.perf_counter() - t0, 3)
        self.refreshes.append({"refresh": k, "epoch": int(epoch), "step": int(step), "emb": emb_name,
                               "probs": probs_name, "seconds": seconds, "quality": q})
        self._write_index()
        rd.append_metrics({"kind": "live", "refresh": k, "epoch": int(epoch), "step": int(step), **q})
        self.reporter.metrics(int(step), {kk: v for kk, v in q.items() if v is not None}, split="live",
                              epoch=int(epoch))
        self.reporter.artifact("live_map", str(self.dir / emb_name))
        return q

    def _alignment(self) -> float:
        """Wang & Isola alignment of two dropout views (train mode) of up to ``ALIGNMENT_CELLS`` cells; the
        global RNG is forked so the training run draws exactly what it would have drawn without it."""
        from app.engine import embedding_quality as eq
        from app.engine.celllm.tokenize import Tokens, collate

        cells = Tokens.from_cells(self.cells)[:ALIGNMENT_CELLS]
        devices = [self.device] if self.device.type == "cuda" else []
        za, zb = [], []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(0)
            self.model.train()
            for s in range(0, len(cells), self.batch_size):
                g, x, m = (t.to(self.device) for t in collate(cells[s:s + self.batch_size]))
                za.append(self.model.embed(g, x, m, pooling=self.pooling).float().cpu().numpy())
                zb.append(self.model.embed(g, x, m, pooling=self.pooling).float().cpu().numpy())
        return eq.alignment(np.concatenate(za), np.concatenate(zb))

    def _write_index(self) -> None:
        from app.data.atomic import write_text_atomic

        write_text_atomic(self.dir / "index.json",
                          json.dumps({"refreshes": self.refreshes, "reference": self.reference}))


# --------------------------------------------------------------------------------------------------
# reading (CLI, window)
# --------------------------------------------------------------------------------------------------
def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def read_index(run_dir: str | Path) -> dict[str, Any] | None:
    """``live/index.json`` of a run (None when the run has no live map)."""
    return _read_json(Path(run_dir) / LIVE_DIR / "index.json")


def read_cells(run_dir: str | Path) -> dict[str, Any] | None:
    """``live/cells.json`` of a run (None when absent)."""
    return _read_json(Path(run_dir) / LIVE_DIR / "cells.json")


def load_refresh(run_dir: str | Path, refresh: dict[str, Any], what: str = "emb") -> np.ndarray | None:
    """The array ``what`` ("emb" or "probs") of one refresh entry of ``index.json``, memory-mapped."""
    name = refresh.get(what)
    if not name:
        return None
    return np.load(Path(run_dir) / LIVE_DIR / name, mmap_mode="r", allow_pickle=False)


QUALITY_COLUMNS = ("silhouette", "knn_accuracy", "ilisi", "graph_connectivity", "alignment", "uniformity")


def quality_table(run_dir: str | Path) -> list[str]:
    """Lines of a plain-text table: one row per refresh (and the PCA reference), the quality columns the run
    has. Empty when the run has no live map."""
    idx = read_index(run_dir)
    if not idx or not idx.get("refreshes"):
        return []
    rows = idx["refreshes"]
    ref = idx.get("reference")
    cols = [c for c in QUALITY_COLUMNS if any(r["quality"].get(c) is not None for r in rows)]

    def fmt(v: Any) -> str:
        return f"{v:>12.3f}" if isinstance(v, int | float) else f"{'-':>12}"

    lines = [f"{'refresh':>7} {'epoch':>5} {'step':>7} " + " ".join(f"{c:>12}" for c in cols) + f" {'seconds':>8}"]
    for r in rows:
        lines.append(f"{r['refresh']:>7} {r['epoch']:>5} {r['step']:>7} "
                     + " ".join(fmt(r["quality"].get(c)) for c in cols) + f" {r.get('seconds', 0):>8.2f}")
    if ref:
        lines.append(f"{'PCA-HVG':>7} {'':>5} {'':>7} " + " ".join(fmt(ref["quality"].get(c)) for c in cols))
    return lines


# --------------------------------------------------------------------------------------------------
# the hooks the training jobs call
# --------------------------------------------------------------------------------------------------
def column_values(obs: Any, key: str | None, source: Any = None) -> list[str] | None:
    """An ``.obs`` column as strings (missing values as "nan"), None without a key; a clear error when absent."""
    if not key:
        return None
    if key not in obs.columns:
        from app.data.errors import DataError

        raise DataError(f"batch/label column {key!r} not found", source,
                        f"Choose one of: {', '.join(map(str, obs.columns)) or '(no columns)'}.")
    return [str(v) for v in obs[key].tolist()]


def for_finetune(run_dir: str | Path, *, n_cells: int, seed: int, model: torch.nn.Module, head: torch.nn.Module,
                 classes: list[str], cells: list, labels: np.ndarray, cell_ids: np.ndarray, counts: Any,
                 batches: list[str] | None, batch_key: str | None, label_key: str | None, device: torch.device,
                 pooling: str, reporter: Reporter, resume_epoch: int | None = None, readout: Any = None,
                 features: Any = None) -> LiveMap | None:
    """The live map of a fine-tuning run (None when ``n_cells`` is 0): a stratified subsample of all
    labelled cells (train, validation and test), with the head's class probabilities at each refresh."""
    if int(n_cells) <= 0:
        return None
    sub = live_subsample(len(cells), int(n_cells), labels, seed)
    lm = LiveMap(Path(run_dir), model, cells[sub], [str(c) for c in np.asarray(cell_ids)[sub]],
                 device, pooling, labels=[str(v) for v in np.asarray(labels)[sub]],
                 batches=[batches[i] for i in sub] if batches is not None else None, label_key=label_key,
                 batch_key=batch_key, head=head, classes=list(classes), kind="finetune", reporter=reporter,
                 readout=readout, features=features.take(sub) if features is not None else None)
    lm.start(counts[sub] if counts is not None else None, resume_epoch=resume_epoch)
    reporter.log(f"live map: {len(sub)} cells, refreshed at every epoch end (live_cells={n_cells})")
    return lm


def pretrain_live_data(cfg: PretrainConfig, datasets: list[dict[str, Any]], cells: list,
                       origin: list[tuple[int, int]], raw_labels: list[Any], vocab_size: int) -> dict[str, Any]:
    """The live map's cells for in-memory pretraining: a seeded subsample (stratified by ``label_key``, else
    by the supervised labels), their IDs, labels, batches (``batch_key``, or ``_dataset`` = the input file)
    and vocabulary-space counts for the PCA reference. ``datasets`` still hold their counts and obs."""
    import scipy.sparse as sp

    from app.engine.celllm.tokenize import vocab_counts

    label_key, batch_key = cfg.label_key, cfg.batch_key
    per_ds_labels = {k: column_values(d["obs"], label_key, d["path"]) for k, d in enumerate(datasets)} \
        if label_key else None
    per_ds_batches = None
    if batch_key == "_dataset":
        per_ds_batches = {k: [Path(d["path"]).name] * len(d["obs"]) for k, d in enumerate(datasets)}
    elif batch_key:
        per_ds_batches = {k: column_values(d["obs"], batch_key, d["path"]) for k, d in enumerate(datasets)}
    if per_ds_labels is not None:
        labels = [per_ds_labels[k][i] for k, i in origin]
    elif any(v is not None for v in raw_labels):
        labels = [str(v) for v in raw_labels]
        label_key = cfg.supervised_key
    else:
        labels = None
    sub = live_subsample(len(cells), int(cfg.live_cells), labels, int(cfg.seed))
    picked = [origin[j] for j in sub]
    ids = [f"{Path(datasets[k]['path']).name}:{datasets[k]['obs'].index[i]}" if len(datasets) > 1
           else str(datasets[k]["obs"].index[i]) for k, i in picked]
    blocks = []
    for k, d in enumerate(datasets):  # counts in vocabulary columns, rows in subsample order
        rows = [i for kk, i in picked if kk == k]
        if rows:
            blocks.append(vocab_counts(d["counts"][rows], d["d2v"], vocab_size))
    order = np.argsort(np.array([k for k, _ in picked], dtype=np.int64), kind="stable")
    counts = sp.vstack(blocks).tocsr()[np.argsort(order)] if blocks else None
    return {"cells": cells[sub], "cell_ids": ids,
            "labels": [labels[j] for j in sub] if labels is not None else None,
            "batches": [per_ds_batches[k][i] for k, i in picked] if per_ds_batches is not None else None,
            "label_key": label_key, "batch_key": batch_key, "counts": counts}
