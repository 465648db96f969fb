"""Cell embeddings (and, for a fine-tuned model, predicted labels) from a CellLM model.

``embed_adata(adata, model_path)`` is the notebook call; ``embed(config, reporter)`` is the job function
behind ``python -m app celllm embed`` and the GUI. Outputs follow the AnnData conventions:
``obsm['X_celllm']``, ``obs['celllm_label']``, ``obs['celllm_confidence']``, ``uns['omicslab']``; the counts
in ``.X``/``layers`` are never touched.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from app.data.errors import DataError
from app.data.jsonsafe import json_safe
from app.engine.celllm.job_configs import EmbedConfig
from app.engine.reporter import Reporter, ensure_reporter
from app.engine.results import EmbedResult
from app.models.celllm.heads import ClassifierHead
from app.resources import CELLLM_TINY

HEAD_FILE = "head.safetensors"
H5AD_GZIP_LEVEL = 1
"""gzip level of the written .h5ad: 1 wrote a 20k-cell file in half the time of h5py's default 4, same size."""
MODEL_SUBDIR = "model"


# --------------------------------------------------------------------------------------------------
# model folders
# --------------------------------------------------------------------------------------------------
def resolve_model_dir(path: str | Path | None) -> Path:
    """Where the model files are for a run folder, a model folder or a checkpoint file.

    A fine-tuning or pretraining run folder keeps its final model in ``RUN/model``; a model folder (like the
    shipped ``app/resources/models/celllm-tiny``) holds it directly. ``None`` means the shipped tiny model.
    """
    p = Path(path) if path is not None else CELLLM_TINY  # the shipped pretrained model
    if not p.exists():
        hint = ("The shipped tiny model is missing: reinstall OmicsLab or pass --init/--model."
                if path is None else "Pass a run folder, a model folder or a checkpoint that exists.")
        raise DataError("model not found", p, hint)
    if p.is_dir() and (p / MODEL_SUBDIR).is_dir():
        return p / MODEL_SUBDIR
    return p


@dataclass
class LoadedModel:
    """A CellLM model ready for inference, with its vocabulary and (when fine-tuned) its head."""

    model: torch.nn.Module
    config: Any
    vocab: list[str]
    extra: dict
    path: Path
    head: torch.nn.Module | None = None
    classes: list[str] | None = None
    pooling: str = "cls"
    readout: Any = None  # readout.Readout: the linear path of a ``cls+linear`` fine-tuned model


def model_dim(config: Any) -> int:
    """Embedding width from a CellLM config (dataclass or dict)."""
    return int(config["dim"] if isinstance(config, dict) else config.dim)


def load_for_inference(path: str | Path | None, device: torch.device) -> LoadedModel:
    """Load model + vocabulary (+ head when the folder has one) via CellLM-core's ``model_io``."""
    from app.engine.celllm.model_io import load_model
    from app.engine.checkpoint import load_tensors

    mdir = resolve_model_dir(path)
    model, config, vocab, extra = load_model(mdir, device)
    model.eval()
    extra = dict(extra or {})
    lm = LoadedModel(model, config, list(vocab), extra, mdir, pooling=str(extra.get("pooling", "cls")))
    head_dir = mdir if mdir.is_dir() else mdir.parent
    if (head_dir / HEAD_FILE).is_file():
        tensors, meta = load_tensors(head_dir / HEAD_FILE, device="cpu")
        classes = list(meta["classes"])
        head = ClassifierHead(model_dim(config), len(classes))
        head.load_state_dict({k.removeprefix("head."): v for k, v in tensors.items()})
        lm.head, lm.classes = head.to(device).eval(), classes
        lm.pooling = str(meta.get("pooling", lm.pooling))
        from app.engine.celllm.readout import load_readout

        lm.readout = load_readout(head_dir, device)
    return lm


# --------------------------------------------------------------------------------------------------
# tokenising and batching
# --------------------------------------------------------------------------------------------------
def match_genes(var_names: Any, vocab: list[str], reporter: Reporter | None = None, adata: Any = None) -> Any:
    """Harmonise the data's genes with the model vocabulary; warn under 50 % match, refuse 0 %.

    With ``adata``, its own second gene ID (e.g. ``var['gene_names']`` beside placeholder var_names) is used
    as ``inspect`` and the window use it, so all three report the same match.
    """
    from app.data.singlecell import gene_id_map, harmonise_genes

    rep = ensure_reporter(reporter)
    gm = harmonise_genes(list(map(str, var_names)), vocab, id_map=gene_id_map(adata) if adata is not None else None)
    rate = float(gm.match_rate)
    rep.log(f"gene match: {rate:.1%} of the data's genes are in the model vocabulary")
    if int(np.sum(np.asarray(gm.data_to_vocab) >= 0)) == 0:
        raise DataError("none of the data's genes are in the model's vocabulary", None,
                        "Use gene symbols (or Ensembl IDs the vocabulary knows) as variable names.")
    if rate < 0.5:
        rep.log(f"warning: only {rate:.1%} of genes match the model vocabulary; results may be poor",
                level="warning")
    return gm


def check_cells_have_counts(counts: Any, data_to_vocab: np.ndarray, where: Any = None) -> None:
    """Refuse data in which no cell has a count in any of the model's genes: every cell would be the same
    empty sequence, and training or embedding it would report a meaningless result."""
    import scipy.sparse as sp

    known = np.asarray(data_to_vocab).ravel() >= 0
    if sp.issparse(counts):
        x = sp.csr_matrix(counts)
        # the first cells nearly always decide; no column slice of the whole matrix (seconds at 100k cells)
        parts = (x[: min(x.shape[0], 1000)], x)
        totals = (float(p.data[known[p.indices]].sum(dtype=np.float64)) for p in parts)
    else:
        totals = iter([float(np.asarray(counts)[:, known].sum())])
    if not any(np.isfinite(t) and t > 0 for t in totals):
        raise DataError(f"every one of the {counts.shape[0]:,} cells has zero counts in the {int(known.sum()):,} genes "
                        "the model knows: there is nothing to learn or embed", where,
                        "Check that this is the count matrix (not an empty layer or a filtered-out copy); the "
                        "Data tab / `python -m app inspect` shows the counts per cell.")


CPU_BATCH_TOKENS = 8192
"""Padded tokens per inference batch on a CPU (at most ``batch_size`` cells): a batch of the shipped model's
activations then stays in the caches. Measured on the 2-core VM (1 thread, 513-token cells): 16 cells a batch
~1.3x the cells/s of 64."""


def infer(lm: LoadedModel, cells: Any, device: torch.device, batch_size: int = 64,
          reporter: Reporter | None = None, features: Any = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Embeddings [N, dim] (float32) and, with a head, class probabilities [N, K], in input order.

    A model with a linear readout (``lm.readout``) needs ``features`` (``readout.Features`` of the same cells,
    from ``lm.readout.features(counts, var_names)``): its logits are added to the head's.

    ``cells``: ``tokenize.Tokens`` or a list of ``(gene_ids, bins)``. Eval mode, ``torch.inference_mode``,
    batches of cells of similar length (less padding, same result: padding never changes a cell's output).
    A Performer model runs ``FastCellLM`` (the same numbers within float rounding, a fraction of the work).
    On a CPU the batches are spread over torch's thread count (``set_threads``: the job's threads) as
    workers of one intra-op thread each: the model's operations are too small to split well.
    """
    from concurrent.futures import ThreadPoolExecutor

    from app.engine.celllm.tokenize import Tokens, collate, length_batches, pad_values, token_batches
    from app.models.celllm.inference import FastCellLM

    rep = ensure_reporter(reporter)
    lm.model.eval()
    if lm.head is not None:
        lm.head.eval()
    tok = Tokens.from_cells(cells)
    n = len(tok)
    if lm.head is not None and lm.readout is not None and features is None:
        raise ValueError("this model has a linear readout: pass the cells' features (lm.readout.features)")
    dim = model_dim(lm.config) if lm.config is not None else int(lm.model.config.dim)
    if n == 0:
        k = len(lm.classes or [])
        return np.zeros((0, dim), np.float32), (np.zeros((0, k), np.float32) if lm.head else None)
    cpu = device.type == "cpu"
    batches = (token_batches(tok.lengths, batch_size, CPU_BATCH_TOKENS) if cpu
               else length_batches(tok.lengths, batch_size))
    fast = FastCellLM(lm.model) if FastCellLM.supports(lm.model) else None
    codes = fast.prepare(tok.ids, tok.bins) if fast is not None else None
    emb = np.empty((n, dim), np.float32)
    probs = np.empty((n, len(lm.classes or [])), np.float32) if lm.head is not None else None

    def run(rows: np.ndarray) -> None:
        with torch.inference_mode():  # per thread: inference mode is thread-local
            if fast is not None:
                c, m = pad_values(codes, tok.ptr, rows)
                e = fast.embed(c.to(device, non_blocking=True), m.to(device, non_blocking=True), lm.pooling)
            else:
                g, x, m = (t.to(device, non_blocking=True) for t in collate(tok.take(rows)))
                e = lm.model.embed(g, x, m, pooling=lm.pooling)
            emb[rows] = e.float().cpu().numpy()  # straight into input order
            if probs is not None:
                logits = lm.head(e).float()
                if lm.readout is not None:
                    logits = logits + lm.readout.module(torch.from_numpy(features.rows(rows)).to(device))
                probs[rows] = torch.softmax(logits, dim=-1).cpu().numpy()

    workers = min(torch.get_num_threads(), len(batches)) if cpu else 1
    threads = torch.get_num_threads()
    try:
        if workers > 1:
            torch.set_num_threads(1)  # one intra-op thread per worker; restored below
            with ThreadPoolExecutor(workers, thread_name_prefix="celllm-infer") as pool:
                pending = [pool.submit(run, rows) for rows in batches]
                try:
                    for b, fut in enumerate(pending):
                        rep.check_cancel()  # raises Cancelled: a partial embedding is useless
                        fut.result()
                        rep.progress(b + 1, len(batches))
                finally:
                    for fut in pending:
                        fut.cancel()
        else:
            for b, rows in enumerate(batches):
                rep.check_cancel()
                run(rows)
                rep.progress(b + 1, len(batches))
    finally:
        torch.set_num_threads(threads)
    return emb, probs


# --------------------------------------------------------------------------------------------------
# public calls
# --------------------------------------------------------------------------------------------------
def embed_adata(adata: Any, model_path: str | Path | None = None, batch_size: int = 64,
                device: str = "auto", max_len: int | None = None, reporter: Reporter | None = None,
                copy: bool = True) -> Any:
    """Embed every cell of ``adata`` with a CellLM model (notebook entry point).

    Writes ``obsm['X_celllm']``, with a fine-tuned model also ``obs['celllm_label']`` and
    ``obs['celllm_confidence']`` (softmax maximum), and ``uns['omicslab']['celllm_embed']``. Counts are read
    via ``counts_matrix`` and never modified. Returns the (copied unless ``copy=False``) AnnData.
    """
    from app.data.singlecell import counts_matrix
    from app.engine.device import device_info, resolve_device

    rep = ensure_reporter(reporter)
    dev = resolve_device(device)
    rep.device(device_info(dev))
    lm = load_for_inference(model_path, dev)
    gm = match_genes(adata.var_names, lm.vocab, rep, adata)
    if max_len is None:  # the length the model was trained with, if it recorded one
        max_len = lm.extra.get("max_len") or (lm.config.get("max_len") if isinstance(lm.config, dict)
                                              else getattr(lm.config, "max_len", None))
    t0 = time.time()
    counts = counts_matrix(adata)
    check_cells_have_counts(counts, gm.data_to_vocab)
    from app.engine.celllm.tokenize import tokenize_counts

    cells = tokenize_counts(counts, np.asarray(gm.data_to_vocab), max_len=max_len,
                            workers=torch.get_num_threads() if dev.type == "cpu" else 1)
    feats = lm.readout.features(counts, adata.var_names) if lm.readout is not None and lm.head is not None else None
    t1 = time.time()
    emb, probs = infer(lm, cells, dev, batch_size, rep, feats)
    t2 = time.time()
    out = adata.copy() if copy else adata
    out.obsm["X_celllm"] = emb
    params: dict[str, Any] = {
        "model_path": str(lm.path), "pooling": lm.pooling, "batch_size": batch_size, "device": str(dev),
        "max_len": max_len, "gene_match_rate": float(gm.match_rate), "n_cells": int(out.n_obs),
        "dim": int(emb.shape[1]), "seconds": round(time.time() - t0, 3),
        "tokenise_seconds": round(t1 - t0, 3), "infer_seconds": round(t2 - t1, 3),
    }
    if probs is not None and lm.classes is not None:
        import pandas as pd

        out.obs["celllm_label"] = pd.Categorical([lm.classes[i] for i in probs.argmax(1)],
                                                 categories=lm.classes)
        out.obs["celllm_confidence"] = probs.max(1).astype(np.float32)
        params["classes"] = list(lm.classes)
    om = dict(out.uns.get("omicslab", {}) or {})
    om["celllm_embed"] = json_safe(params, h5ad=True)
    out.uns["omicslab"] = om
    return out


def embed(config: EmbedConfig | dict, reporter: Reporter | None = None) -> EmbedResult:
    """Job function ``app.engine.celllm.embed:embed``; every setting is a field of ``EmbedConfig`` (a dict is
    validated into one). With ``run_dir`` the embedding is also saved there as .npy (the window maps it)."""
    from app.data.export import check_h5ad_writable, write_h5ad_atomic
    from app.data.singlecell import read_singlecell
    from app.engine.device import set_threads

    cfg = EmbedConfig.coerce(config)
    rep = ensure_reporter(reporter)
    # --threads N embeds batches N at a time, one intra-op thread each (the count changes no embedding). The
    # default is the usable cores (as the GP jobs of many fits): on a quiet 2-core box (load 2.0) bench embed
    # ran 100k cells end to end at 2,038 cells/s with 2 workers vs 1,248 with 1. On a busy machine (load ~5)
    # two were slower than one (466-540 vs 593-685 cells/s): there --threads 1 is the better choice.
    set_threads(cfg.threads, many_fits=True)
    out_path = Path(cfg.out)
    t0 = time.time()
    adata = read_singlecell(cfg.data, labels=cfg.labels)
    rep.log(f"read {adata.n_obs} cells x {adata.n_vars} genes from {cfg.data}")
    check_h5ad_writable(adata, cfg.data)  # before embedding, not after
    t1 = time.time()
    res = embed_adata(adata, cfg.model, batch_size=cfg.batch_size, device=cfg.device, max_len=cfg.max_len,
                      reporter=rep, copy=False)
    t2 = time.time()
    from app.data.singlecell.read import format_of

    # X was read from this file and is never changed here: copy it as stored rather than compress it again
    x_from = Path(cfg.data) if format_of(Path(cfg.data)) == "h5ad" else None
    write_h5ad_atomic(res, out_path, compression_opts=H5AD_GZIP_LEVEL, x_from=x_from)
    rep.artifact("embedding_h5ad", str(out_path))
    params = res.uns["omicslab"]["celllm_embed"]
    stages = {"read": t1 - t0, "tokenise": params["tokenise_seconds"], "infer": params["infer_seconds"],
              "write": time.time() - t2}
    stages["other"] = time.time() - t0 - sum(stages.values())  # model loading, gene matching, checks
    result = {"out": str(out_path), "n_cells": int(res.n_obs), "dim": int(res.obsm["X_celllm"].shape[1]),
              "gene_match_rate": params["gene_match_rate"], "has_labels": "celllm_label" in res.obs,
              "stages_s": {k: round(float(v), 2) for k, v in stages.items()}}
    if cfg.run_dir:
        result["embedding_npy"] = str(save_embedding_array(cfg.run_dir, res.obsm["X_celllm"]))
        rep.artifact("embedding", result["embedding_npy"])
    return EmbedResult.from_dict(result)


def save_embedding_array(run_dir: str | Path, emb: np.ndarray, name: str = "X_celllm") -> Path:
    """Save the embedding as .npy in the run folder (the GUI memory-maps it)."""
    try:
        from app.engine.run_dir import RunDir
    except ImportError:  # jobs helper's RunDir not present: plain atomic .npy
        from app.data.atomic import atomic_path

        path = Path(run_dir) / f"{name}.npy"
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, emb)
        return path
    try:
        rd = RunDir.open(run_dir)
    except Exception:  # not a run folder yet (notebook use): make one
        rd = RunDir.create(run_dir, "embed", {"name": name})
    return Path(rd.save_array(name, emb))
