"""CellLM pretraining: masked expression modelling + divide-and-conquer contrastive learning (+ optional
supervised CLS loss), as the job function ``app.engine.celllm.pretrain:pretrain``.

Each cell is forwarded twice with independent dropout: view A with 15 % of its expressed genes' bins hidden
(the masked-expression loss is read from view A), view B unmasked. ``view="genes"`` makes the views harder:
each is an independent random ``view_keep`` fraction of the cell's genes (two dropout masks of the same
tokens are matched perfectly within a few epochs, after which that task teaches little). The two CLS
embeddings are the positive pair of a symmetric InfoNCE over the batch (cosine, temperature 0.05); the other
2N - 2 views are the negatives. An optional ``supervised_key`` adds a cross-entropy from a linear head on both
views' CLS embeddings (the paper's tumour-vs-normal objective; ``_dataset`` uses the input file as the label).
Total loss = w_mlm * MLM + w_con * InfoNCE + w_sup * supervised. Batches go through ``gradcache.dc_step`` so
memory grows with the chunk size, not the batch size.

Run folder: checkpoints at every epoch end and on cancel (model + head + AdamW state + progress, with the
config and vocabulary in the header, so ``load_model`` can open a checkpoint), ``metrics.jsonl`` one row per
step, the final model in ``RUN/model`` (``model_io.save_model``).

Data: held in memory (read whole, tokenised once), or streamed from backed ``.h5ad`` files (``CellStream``:
contiguous CSR block reads, seeded shuffle buffer, tokenised batch by batch in a background thread) when asked
(``stream="on"``) or when loading them whole would not fit (``stream="auto"``, see ``choose_streaming``).

Under torchrun the same job runs on every rank (``distributed.init_distributed``): DDP, divide and conquer over
the global batch with all-gathered embeddings (``distributed.dc_step_distributed``), each rank its share of the
data, per-rank dropout seeded by (seed, step, rank), events and run-folder writes from rank 0 only. On one
process nothing of this is used and results are identical to the single-process code.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from app.data.errors import DataError
from app.engine.celllm import losses
from app.engine.celllm.gradcache import dc_step
from app.engine.celllm.job_configs import PRETRAIN_LR_BY_PRESET, PretrainConfig
from app.engine.celllm.memory import auto_chunk_size
from app.engine.celllm.model_io import (
    MODEL_PREFIX,
    config_from_file,
    load_model,
    load_state,
    model_metadata,
    save_model,
)
from app.engine.celllm.tokenize import Tokens, collate, tokenize_counts, tokenize_vocab
from app.engine.reporter import Reporter
from app.engine.results import PretrainResult
from app.models.celllm.config import CellLMConfig, preset
from app.models.celllm.heads import SupervisedHead
from app.models.celllm.model import CellLM

DATASET_KEY = "_dataset"
"""``supervised_key`` value meaning "the input file each cell came from" (e.g. tumour vs normal atlas)."""


# --------------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------------
def _paths(data: Any) -> list[str]:
    if not data:
        raise DataError("no input data given", None, "Pass --data PATH (one or more single-cell files).")
    items = [data] if isinstance(data, (str, Path)) else list(data)
    return [str(p) for p in items]


def build_vocab(gene_lists: list[list[str]]) -> list[str]:
    """Union of the datasets' genes (stripped), in order of first appearance."""
    seen: dict[str, None] = {}
    for genes in gene_lists:
        for g in genes:
            g = str(g).strip()
            if g and g not in seen:
                seen[g] = None
    return list(seen)


def _exact_mapping(genes: list[str], vocab: list[str]) -> np.ndarray:
    index = {g: i for i, g in enumerate(vocab)}
    return np.array([index.get(str(g).strip(), -1) for g in genes], dtype=np.int64)


def load_datasets(paths: list[str], supervised_key: str | None, max_cells: int | None, seed: int,
                  reporter: Reporter) -> list[dict[str, Any]]:
    """Read each file: counts (CSR, raw), gene names, and labels when ``supervised_key`` is set."""
    from app.data.singlecell import counts_matrix, read_singlecell

    out = []
    for k, path in enumerate(paths):
        adata = read_singlecell(path)
        counts = counts_matrix(adata)
        labels = None
        if supervised_key == DATASET_KEY:
            labels = np.array([Path(path).name] * adata.n_obs, dtype=object)
        elif supervised_key:
            if supervised_key not in adata.obs.columns:
                cols = ", ".join(map(str, adata.obs.columns)) or "none"
                raise DataError(f"no column '{supervised_key}' in the cell annotations (columns: {cols})", path,
                                f"Pick a column for supervised_key, or '{DATASET_KEY}' to use the input file.")
            col = adata.obs[supervised_key]
            labels = np.array([None if (v is None or (isinstance(v, float) and math.isnan(v))) else str(v)
                               for v in col.tolist()], dtype=object)
        rows = np.arange(adata.n_obs)
        if max_cells is not None and adata.n_obs > int(max_cells):
            rows = np.sort(np.random.default_rng(seed + k).choice(adata.n_obs, int(max_cells), replace=False))
            counts = counts[rows]
            labels = labels[rows] if labels is not None else None
        reporter.log(f"read {len(rows)} cells x {adata.n_vars} genes from {path}")
        out.append({"path": path, "counts": counts, "genes": list(map(str, adata.var_names)), "labels": labels,
                    "obs": adata.obs.iloc[rows]})
    return out


# --------------------------------------------------------------------------------------------------
# one step
# --------------------------------------------------------------------------------------------------
def gene_subset(tok: Tokens, keep: float, rng: np.random.Generator) -> Tokens:
    """Each cell's CLS plus a random ``keep`` fraction of its gene tokens (at least one), in their order.

    Drawn without replacement, independently per call: two calls give two views of a cell that share about
    ``keep``² of its genes, so matching them takes the cell's expression pattern, not a copy of its tokens.
    """
    lens = tok.lengths
    n_genes = np.maximum(lens - 1, 0)
    k = np.where(n_genes > 0, np.maximum(1, np.round(keep * n_genes)), 0).astype(np.int64)
    # a random priority per gene token; a cell keeps its k lowest (CLS gets -1: always kept, always first)
    u = rng.random(len(tok.ids))
    u[tok.ptr[:-1]] = -1.0
    cell = np.repeat(np.arange(len(lens)), lens)
    order = np.lexsort((u, cell))  # by cell, then by priority
    rank = np.empty(len(u), np.int64)
    rank[order] = np.arange(len(u)) - np.repeat(tok.ptr[:-1], lens)
    sel = np.flatnonzero(rank <= np.repeat(k, lens))  # rank 0 is CLS, ranks 1..k the kept genes
    ptr = np.concatenate([[0], np.cumsum(k + (lens > 0))]).astype(np.int64)
    return Tokens(tok.ids[sel], tok.bins[sel], ptr)


def make_batch(cells: Tokens | list[tuple[np.ndarray, np.ndarray]], labels: np.ndarray | None, mlm_prob: float,
               n_bins: int, generator: torch.Generator, view: str = "dropout",
               view_keep: float = 0.5) -> dict[str, Any]:
    """Collate cells (sorted by length so chunks pad little), mask bins for MLM; CPU tensors.

    ``view="genes"``: the two contrastive views are two independent random ``view_keep`` subsets of each
    cell's genes (view A also carries the MLM masks; view B goes in ``*_b``), not the whole cell twice.
    """
    tok = Tokens.from_cells(cells)
    order = np.argsort(tok.lengths, kind="stable")
    tok = tok.take(order)
    view_b: Tokens | None = None
    if view == "genes":
        # numpy draws seeded from the step's torch generator: the views replay exactly after a resume
        rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=generator)))
        tok, view_b = gene_subset(tok, view_keep, rng), gene_subset(tok, view_keep, rng)
    elif view != "dropout":
        raise ValueError(f"view must be 'dropout' or 'genes', not {view!r}")
    g, b, m = collate(tok, n_bins)
    masked, targets = losses.mask_for_mlm(g, b, m, mlm_prob, n_bins, generator)
    batch: dict[str, Any] = {"gene_ids": g, "bins": b, "masked_bins": masked, "pad_mask": m, "targets": targets}
    if view_b is not None:
        batch["gene_ids_b"], batch["bins_b"], batch["pad_mask_b"] = collate(view_b, n_bins)
    if labels is not None:
        batch["labels"] = torch.as_tensor(np.asarray(labels)[order], dtype=torch.long)
    batch["n_masked"] = int((targets != losses.IGNORE).sum())
    batch["n_labelled"] = int((batch["labels"] != losses.IGNORE).sum()) if labels is not None else 0
    return batch


def make_chunk_fn(model: CellLM, head: torch.nn.Module | None, device: torch.device, batch_info: dict[str, Any],
                  weights: dict[str, float], pooling: str, parts: dict[str, float]) -> Any:
    """The per-chunk forward for ``dc_step``: two views -> ((emb_a, emb_b), chunk's share of per-cell losses).

    Each chunk is trimmed to its own longest cell. ``parts`` collects the per-cell loss values of the
    gradient pass (for reporting).
    """
    n_masked = max(1, int(batch_info["n_masked"]))
    n_lab = max(1, int(batch_info["n_labelled"]))

    def fn(ch: dict[str, Any]) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
        m = ch["pad_mask"]
        L = int(m.sum(1).max())
        g, x, xm, m, t = (ch[k][:, :L].to(device, non_blocking=True)
                          for k in ("gene_ids", "bins", "masked_bins", "pad_mask", "targets"))
        ha = model(g, xm, m)
        ea = model.pool(ha, m, pooling)
        if "gene_ids_b" in ch:  # gene-subset views: view B is its own (shorter) sequence
            mb = ch["pad_mask_b"]
            Lb = int(mb.sum(1).max())
            gb, xb, mb = (ch[k][:, :Lb].to(device, non_blocking=True) for k in ("gene_ids_b", "bins_b", "pad_mask_b"))
            hb = model(gb, xb, mb)
            eb = model.pool(hb, mb, pooling)
        else:
            hb = model(g, x, m)
            eb = model.pool(hb, m, pooling)
        sel = t != losses.IGNORE
        mlm = losses.mlm_loss(model.mlm_logits(ha[sel]), t[sel], denom=n_masked)
        local = weights["mlm"] * mlm
        sup = None
        if head is not None and "labels" in ch:
            y = ch["labels"].to(device)
            sup = 0.5 * (losses.supervised_loss(head(ea), y, denom=n_lab)
                         + losses.supervised_loss(head(eb), y, denom=n_lab))
            local = local + weights["supervised"] * sup
        if torch.is_grad_enabled():
            parts["mlm"] = parts.get("mlm", 0.0) + float(mlm.detach())
            if sup is not None:
                parts["supervised"] = parts.get("supervised", 0.0) + float(sup.detach())
        return (ea, eb), local

    return fn


# --------------------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------------------
def _state_tensors(model: CellLM, head: torch.nn.Module | None, opt: torch.optim.Optimizer,
                   params: list[torch.nn.Parameter]) -> dict[str, torch.Tensor]:
    t = {MODEL_PREFIX + k: v for k, v in model.state_dict().items()}
    if head is not None:
        t.update({"head." + k: v for k, v in head.state_dict().items()})
    for i, p in enumerate(params):
        for name, val in opt.state.get(p, {}).items():
            if isinstance(val, torch.Tensor):
                t[f"opt.{i}.{name}"] = val.reshape(-1) if val.dim() == 0 else val
    t["rng.cpu"] = torch.get_rng_state()
    return t


def _restore_optimizer(opt: torch.optim.Optimizer, params: list[torch.nn.Parameter],
                       tensors: dict[str, torch.Tensor]) -> None:
    for i, p in enumerate(params):
        st = {}
        for name in ("step", "exp_avg", "exp_avg_sq"):
            key = f"opt.{i}.{name}"
            if key in tensors:
                v = tensors[key]
                st[name] = v.reshape(()).float() if name == "step" else v.to(p.device, p.dtype)
        if st:
            opt.state[p] = st


def lr_at(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10 % of ``base``."""
    if warmup > 0 and step < warmup:
        return base * (step + 1) / warmup
    span = max(1, total - warmup)
    frac = min(1.0, max(0.0, (step - warmup) / span))
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


# --------------------------------------------------------------------------------------------------
# where the cells come from: held in memory, or streamed from backed .h5ad files
# --------------------------------------------------------------------------------------------------
_ON = ("1", "true", "on", "yes", "stream")
_OFF = ("0", "false", "off", "no", "memory")


def _is_h5ad(path: str) -> bool:
    return Path(path).suffix.lower() == ".h5ad" and Path(path).is_file()


def choose_streaming(mode: Any, paths: list[str], local_ranks: int = 1, available: int | None = None,
                     fraction: float = 0.5) -> tuple[bool, str]:
    """Stream the data or load it whole, and why.

    ``mode``: on (every file must be ``.h5ad``), off, or auto/None: stream when every file is an ``.h5ad`` and
    loading them whole (once per rank on this machine: ``local_ranks``) would take more than ``fraction`` of
    the ``available`` memory (default: what the system reports now).
    """
    from app.data.singlecell.stream import available_memory_bytes, in_memory_bytes

    m = "auto" if mode is None else str(mode).strip().lower()
    if m in _ON:
        bad = [p for p in paths if not _is_h5ad(p)]
        if bad:
            raise DataError("streaming reads .h5ad files only", bad[0],
                            "Convert it once (python -m app inspect FILE --out FILE.h5ad) or drop --stream.")
        return True, "streaming (asked for)"
    if m in _OFF:
        return False, "in memory (asked for)"
    if m != "auto":
        raise DataError(f"stream must be auto, on or off (got {mode!r})", None, "Use auto, on or off.")
    if not all(_is_h5ad(p) for p in paths):
        return False, "in memory (not every input is an .h5ad file)"
    try:
        need = in_memory_bytes(paths) * max(1, int(local_ranks))
    except DataError:  # e.g. a column-major (CSC) file: it can only be read whole
        return False, "in memory (a file cannot be read row by row)"
    have = available_memory_bytes() if available is None else int(available)
    gib = 2**30
    if need > fraction * have:
        return True, (f"streaming: loading the data whole would take ~{need / gib:.1f} GiB of the "
                      f"{have / gib:.1f} GiB available")
    return False, f"in memory (~{need / gib:.2f} GiB of {have / gib:.1f} GiB available)"


class _MemorySource:
    """Tokenised cells held in memory; each rank takes its slots of every global batch (``rank_batches``).
    On one rank the batches are exactly the single-process ones (same permutation, same slices)."""

    streamed = False

    def __init__(self, cells: Tokens, labels: np.ndarray | None, batch: int, seed: int, info: Any) -> None:
        self.cells, self.labels, self.batch, self.seed, self.info = cells, labels, batch, seed, info
        self.n_cells = len(cells)
        self.n_batches = self.n_cells // (batch * info.world_size)

    def lengths(self) -> np.ndarray:
        return self.cells.lengths

    def batches(self, epoch: int, start: int) -> Iterator[tuple[Tokens, np.ndarray | None]]:
        from app.engine.celllm.distributed import rank_batches

        for idx in rank_batches(self.n_cells, self.batch, epoch, self.seed, self.info)[start:]:
            yield self.cells.take(np.asarray(idx)), (self.labels[idx] if self.labels is not None else None)

    def close(self) -> None:
        pass


class StreamSource:
    """Cells streamed from backed ``.h5ad`` files (``CellStream``: CSR blocks, shuffle buffer, this rank's
    share), tokenised batch by batch in a background thread. X is never read whole."""

    streamed = True

    def __init__(self, stream: Any, batch: int, max_len: int, n_bins: int, seed: int, info: Any,
                 label_of: Any, prefetch_depth: int = 2) -> None:
        self.stream, self.batch, self.max_len, self.n_bins = stream, batch, max_len, n_bins
        self.seed, self.info, self.label_of, self.depth = seed, info, label_of, prefetch_depth
        self.n_cells = stream.n_cells_total
        self.n_batches = stream.n_batches(batch)
        self.ident = np.arange(stream.n_cols, dtype=np.int64)  # batches already come in vocabulary columns
        self.short_cells = 0  # cells with no vocabulary gene (kept: a stream cannot be filtered up front)

    def lengths(self) -> np.ndarray:
        """Token counts of the first cells of the first file (for the automatic chunk size)."""
        from app.data.singlecell.stream import ReadStats

        n = min(512, self.stream.n_cells_per_source[0])
        m = self.stream.read_rows(0, 0, n)
        d2v = self.stream.gene_maps[0] if self.stream.gene_maps is not None else self.ident
        toks = tokenize_counts(m, d2v, max_len=self.max_len, seed=self.seed, n_bins=self.n_bins)
        self.stream.stats = ReadStats()  # count only the epochs' reads
        return toks.lengths

    def _tokenise(self, cb: Any, epoch: int, b: int) -> tuple[list, np.ndarray | None]:
        tie_seed = (self.seed * 1_000_003 + epoch * 7_919 + b * 104_729 + self.info.rank) % (2**32)
        cells = tokenize_vocab(cb.counts, self.max_len, tie_seed, self.n_bins)
        self.short_cells += int(np.sum(cells.lengths < 2))
        labels = self.label_of(cb.sources, cb.rows) if self.label_of is not None else None
        return cells, labels

    def batches(self, epoch: int, start: int) -> Iterator[tuple[list, np.ndarray | None]]:
        from app.data.singlecell.stream import prefetch
        from app.engine.celllm.distributed import stream_steps

        self.stream.set_epoch(epoch)

        def produce() -> Iterator[tuple[list, np.ndarray | None]]:
            for b, cb in enumerate(stream_steps(self.stream, self.batch, start), start=start):
                yield self._tokenise(cb, epoch, b)

        return prefetch(produce(), self.depth)

    def close(self) -> None:
        self.stream.close()


def _gene_map(genes: list[str], vocab: list[str], vocab_source: str) -> tuple[np.ndarray, float]:
    if vocab_source == "data":
        d2v = _exact_mapping(genes, vocab)
        return d2v, (float(np.mean(d2v >= 0)) if len(d2v) else 0.0)
    from app.data.singlecell import harmonise_genes

    gm = harmonise_genes(genes, vocab)
    return np.asarray(gm.data_to_vocab), float(gm.match_rate)


def _report_match(path: str, rate: float, rep: Reporter) -> dict[str, Any]:
    rep.log(f"gene match for {Path(path).name}: {rate:.1%} of its genes are in the vocabulary")
    if rate < 0.5:
        rep.log(f"warning: only {rate:.1%} of the genes of {path} match the vocabulary", level="warning")
    return {"path": path, "match_rate": rate}


def _class_index(classes: list[str], values: Any) -> np.ndarray:
    idx = {c: i for i, c in enumerate(classes)}
    return np.array([idx.get(str(v), losses.IGNORE) if v is not None else losses.IGNORE for v in values],
                    dtype=np.int64)


# --------------------------------------------------------------------------------------------------
# the job
# --------------------------------------------------------------------------------------------------
def pretrain(config: PretrainConfig | dict, reporter: Reporter | None = None) -> PretrainResult:
    """Job function ``app.engine.celllm.pretrain:pretrain``; every setting is a field of ``PretrainConfig``
    (a dict is validated into one). ``supervised_key`` may be ``_dataset`` (the input file of each cell);
    ``init`` continues from a model, keeping its vocabulary; ``stream`` auto reads backed ``.h5ad`` files
    block by block when the data would not fit in memory. Returns a JSON-serialisable summary
    (``cancelled`` True when stopped).

    Under torchrun (``WORLD_SIZE`` > 1) every rank runs this same function: DDP, divide and conquer over the
    global batch (``batch_size`` = the global contrastive batch, split evenly over the ranks), each rank its
    share of the data; only rank 0 writes to the run folder and emits events.
    """
    from app.engine.celllm import distributed as dist_mod

    cfg = PretrainConfig.coerce(config)
    info = dist_mod.init_distributed(str(cfg.device))
    rep = dist_mod.rank_reporter(reporter, info)
    return _pretrain(cfg, info, rep)


def _pretrain(cfg: PretrainConfig, info: Any, rep: Reporter) -> dict:
    from app.engine.celllm import distributed as dist_mod
    from app.engine.device import device_info, set_threads
    from app.engine.run_dir import RunDir

    t_start = time.time()
    main, world = info.is_main, info.world_size
    run_dir = Path(cfg.run_dir)
    rd: RunDir | None = None
    if main:
        rd = (RunDir.open(run_dir) if RunDir.is_run_dir(run_dir)
              else RunDir.create(run_dir, "celllm-pretrain", cfg.to_dict()))
    dist_mod.barrier(info)
    threads_req = cfg.threads
    if threads_req is None and info.distributed and info.device.type == "cpu":
        try:  # ranks on one machine share its cores
            cores = len(os.sched_getaffinity(0))
        except AttributeError:
            cores = os.cpu_count() or 1
        threads_req = max(1, cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", world))))
    threads = set_threads(threads_req)
    device = info.device
    rep.device(device_info(device))
    seed = int(cfg.seed)
    torch.manual_seed(seed)
    epochs, batch_size = float(cfg.epochs), int(cfg.batch_size)  # fractional epochs allowed (0.5)
    if not epochs > 0 or batch_size < 2:
        raise DataError(f"epochs must be > 0 and batch_size >= 2 (got {epochs:g}, {batch_size})", None,
                        "Contrastive learning needs at least two cells per batch.")
    if info.distributed:
        rep.log(f"distributed: {world} ranks ({info.backend}), this rank {info.rank} on {device}")

    # -- resume / init / new vocabulary -----------------------------------------------------------
    resume_tensors: dict[str, torch.Tensor] | None = None
    resume_meta: dict[str, Any] = {}
    if cfg.resume:
        from app.engine.checkpoint import load_tensors

        ck = None
        if rd is not None:
            ck = rd.last_checkpoint()
            if ck is not None:
                rd.rewind_to_checkpoint()
        ck_name = dist_mod.broadcast_object(str(ck) if ck is not None else None, info)
        if ck_name is not None:
            if not Path(ck_name).is_file():
                raise DataError(f"rank {info.rank} cannot see the checkpoint rank 0 resumes from", ck_name,
                                "Put the run folder on a file system every node shares.")
            resume_tensors, resume_meta = load_tensors(ck_name, device="cpu")
            rep.log(f"resuming from {Path(ck_name).name} (step {resume_meta.get('step')})")
        else:
            rep.log("no checkpoint to resume from: starting from the beginning", level="warning")

    paths = _paths(cfg.data)
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", world)) if info.distributed else 1
    streaming, why = choose_streaming(cfg.stream, paths, local_ranks)
    streaming = bool(dist_mod.broadcast_object(streaming, info))  # ranks must agree (free memory differs)
    rep.log(f"data: {why}")
    supervised_key = cfg.supervised_key
    datasets: list[dict[str, Any]] = []
    stream: Any = None
    if streaming:
        from app.data.singlecell.stream import read_h5ad_genes

        if cfg.max_cells is not None:
            rep.log("max_cells is ignored when streaming (every cell is used)", level="warning")
        data_genes = [read_h5ad_genes(p) for p in paths]
    else:
        datasets = load_datasets(paths, supervised_key, cfg.max_cells, seed, rep)
        data_genes = [d["genes"] for d in datasets]
    init_model: CellLM | None = None
    if resume_tensors is not None:
        model_cfg = config_from_file(resume_meta["config"])  # bounded before any allocation
        vocab = list(resume_meta["vocab"])
        vocab_source = str(resume_meta.get("vocab_source", "data"))
    elif cfg.init:
        init_model, model_cfg, vocab, _extra = load_model(cfg.init, "cpu")
        vocab_source = "init"
        rep.log(f"starting from {cfg.init} ({len(vocab)} genes)")
    else:
        vocab = build_vocab(data_genes)
        overrides: dict[str, Any] = {}
        if cfg.max_len is not None:
            overrides["max_len"] = int(cfg.max_len)
        try:
            model_cfg = preset(str(cfg.preset), len(vocab), proj_seed=seed, **overrides)
        except ValueError as exc:
            raise DataError(str(exc), None, "Use preset tiny, small or full.") from exc
        vocab_source = "data"
    if cfg.dropout is not None:
        model_cfg.dropout = float(cfg.dropout)
    if model_cfg.dropout <= 0:
        raise DataError("dropout is 0: the two contrastive views of a cell would be identical", None,
                        "Set dropout > 0 (e.g. 0.1) for pretraining.")
    max_len = int(cfg.max_len) if cfg.max_len is not None else model_cfg.max_len

    # -- the global batch over the ranks ------------------------------------------------------------
    local_bs = batch_size // world
    if local_bs < 1:
        raise DataError(f"batch_size {batch_size} is smaller than the {world} ranks", None,
                        f"Use a batch size of at least {2 * world} (the global batch is split over the ranks).")
    if local_bs * world != batch_size:
        rep.log(f"batch_size {batch_size} is not a multiple of {world} ranks: using {local_bs * world}",
                level="warning")

    # -- genes -> vocabulary, tokens ----------------------------------------------------------------
    gene_report = []
    classes: list[str] = []
    live_data: dict[str, Any] | None = None
    source: _MemorySource | StreamSource
    if streaming:
        from app.data.singlecell.stream import CellStream

        maps = []
        for p, genes in zip(paths, data_genes):
            d2v, rate = _gene_map(genes, vocab, vocab_source)
            maps.append(d2v)
            gene_report.append(_report_match(p, rate, rep))
        label_key = supervised_key if supervised_key and supervised_key != DATASET_KEY else None
        stream = CellStream(paths, rank=info.rank, world_size=world, seed=seed, gene_maps=maps,
                            vocab_size=len(vocab), label_key=label_key,
                            block_cells=int(cfg.block_cells), shuffle_buffer=int(cfg.shuffle_buffer))
        label_of = None
        if supervised_key == DATASET_KEY:
            names = [Path(p).name for p in paths]
            classes = list(resume_meta.get("classes") or sorted(set(names)))
            per_source = _class_index(classes, names)

            def label_of(sources: np.ndarray, rows: np.ndarray) -> np.ndarray:
                return per_source[np.asarray(sources)]
        elif label_key:
            found = {str(v) for arr in stream.label_values for v in arr if v is not None}
            classes = list(resume_meta.get("classes") or sorted(found))

            def label_of(sources: np.ndarray, rows: np.ndarray) -> np.ndarray:  # type: ignore[misc]
                return _class_index(classes, stream.labels_of(sources, rows))

        source = StreamSource(stream, min(local_bs, max(1, stream.n_cells_total // world)), max_len,
                               model_cfg.n_bins, seed, info, label_of)
        rep.log(f"streaming {source.n_cells} cells from {len(paths)} file(s) (max_len {max_len}); "
                f"vocabulary {len(vocab)} genes")
    else:
        parts: list[Tokens] = []
        raw_labels: list[Any] = []
        origin: list[tuple[int, int]] = []  # (dataset, row) of each kept cell, for the live map
        min_genes = max(1, int(cfg.min_genes))
        for k, d in enumerate(datasets):
            d2v, rate = _gene_map(d["genes"], vocab, vocab_source)
            d["d2v"] = d2v
            gene_report.append(_report_match(d["path"], rate, rep))
            toks = tokenize_counts(d["counts"], d2v, max_len=max_len, seed=seed + k, n_bins=model_cfg.n_bins)
            kept = np.flatnonzero(toks.lengths - 1 >= min_genes)
            parts.append(toks.take(kept))
            raw_labels.extend(d["labels"][kept] if d["labels"] is not None else [None] * len(kept))
            origin.extend((k, int(i)) for i in kept)
        cells = Tokens.concat(parts)
        if info.is_main and int(cfg.live_cells) > 0:
            from app.engine.celllm.live import pretrain_live_data

            live_data = pretrain_live_data(cfg, datasets, cells, origin, raw_labels, len(vocab))
        for d in datasets:
            d["counts"] = None  # the tokens are all that is needed now
        if len(cells) < 2:
            raise DataError(f"only {len(cells)} cell(s) express at least {cfg.min_genes} vocabulary gene(s)",
                            None, "Check the data holds raw counts and gene names that match the vocabulary.")
        labels_arr: np.ndarray | None = None
        if supervised_key:
            classes = list(resume_meta.get("classes") or sorted({str(v) for v in raw_labels if v is not None}))
            labels_arr = _class_index(classes, raw_labels)
        if len(cells) < local_bs * world:  # fewer cells than one global batch: one smaller batch
            local_bs = len(cells) // world
            if local_bs < 1:
                raise DataError(f"{len(cells)} cells for {world} ranks", None, "Use more cells or fewer ranks.")
        source = _MemorySource(cells, labels_arr, local_bs, seed, info)
        rep.log(f"{source.n_cells} cells tokenised (max_len {max_len}); vocabulary {len(vocab)} genes")
    if supervised_key and len(classes) < 2:
        raise DataError(f"supervised_key '{supervised_key}' has {len(classes)} class(es)", None,
                        "A supervised objective needs at least two classes; drop supervised_key.")
    local_bs = source.batch
    bsz = local_bs * world  # the global contrastive batch
    n_batches = source.n_batches
    if bsz < 2:
        raise DataError(f"{source.n_cells} cell(s): a contrastive batch needs at least two", None,
                        "Use more cells.")
    if n_batches < 1:
        raise DataError(f"{source.n_cells} cells do not fill one batch of {bsz}", None,
                        "Use a smaller batch size (or fewer ranks).")

    try:
        if streaming and int(cfg.live_cells) > 0:
            rep.log("live map: not yet available when streaming (the data is never held in memory)")
        return _train(cfg, info, rep, rd, source, model_cfg, vocab, vocab_source, init_model, classes,
                      resume_tensors, resume_meta, max_len, bsz, gene_report, paths, threads, t_start, live_data)
    finally:
        source.close()


def _train(cfg: PretrainConfig, info: Any, rep: Reporter, rd: Any, source: Any,
           model_cfg: CellLMConfig, vocab: list[str], vocab_source: str, init_model: CellLM | None,
           classes: list[str], resume_tensors: dict[str, torch.Tensor] | None, resume_meta: dict[str, Any],
           max_len: int, bsz: int, gene_report: list[dict[str, Any]], paths: list[str], threads: int,
           t_start: float, live_data: dict[str, Any] | None = None) -> dict:
    from app.engine.celllm import distributed as dist_mod

    device, main, world = info.device, info.is_main, info.world_size
    run_dir = Path(cfg.run_dir)
    seed = int(cfg.seed)
    epochs = float(cfg.epochs)
    n_batches, n_cells = source.n_batches, source.n_cells

    # -- model, optimiser ---------------------------------------------------------------------------
    model = init_model if init_model is not None else CellLM(model_cfg)
    if cfg.dropout is not None:
        for mod in model.modules():
            if isinstance(mod, torch.nn.Dropout):
                mod.p = float(cfg.dropout)
    head = SupervisedHead(model_cfg.dim, len(classes)) if classes else None
    if resume_tensors is not None:
        load_state(model, {k[len(MODEL_PREFIX):]: v for k, v in resume_tensors.items()
                           if k.startswith(MODEL_PREFIX)})
        if head is not None:
            head.load_state_dict({k[5:]: v for k, v in resume_tensors.items() if k.startswith("head.")})
    model.to(device).train()
    if head is not None:
        head.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    if head is not None:
        params += list(head.parameters())
    # DDP (several ranks): rank 0's weights are broadcast here, gradients averaged in every step
    runner = dist_mod.wrap_model(model, info, head) if info.distributed else None
    base_lr = float(cfg.lr) if cfg.lr is not None else PRETRAIN_LR_BY_PRESET.get(model_cfg.preset, 1e-4)
    opt = torch.optim.AdamW(params, lr=base_lr, weight_decay=float(cfg.weight_decay))
    if resume_tensors is not None:
        _restore_optimizer(opt, params, resume_tensors)

    amp_mode = str(cfg.amp).lower()
    amp_dtype: torch.dtype | None = None
    if device.type == "cuda" and amp_mode != "off":
        if amp_mode == "bf16" or (amp_mode == "auto" and torch.cuda.is_bf16_supported()):
            amp_dtype = torch.bfloat16
        else:
            amp_dtype = torch.float16
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    if scaler is not None and resume_meta.get("scaler"):
        scaler.load_state_dict(resume_meta["scaler"])

    total_steps = max(1, round(epochs * n_batches))
    n_epochs = math.ceil(total_steps / n_batches)
    if cfg.chunk_size:
        chunk = int(cfg.chunk_size)
    else:
        typical = int(np.percentile(source.lengths(), 95))
        chunk = auto_chunk_size(model_cfg, typical, source.batch, device, model, amp=amp_dtype is not None)
        chunk = int(dist_mod.all_min(chunk, info))  # the same chunking on every rank
        rep.log(f"chunk size {chunk} chosen from free memory (cells of ~{typical} tokens)")
    warmup = round(float(cfg.warmup_frac) * total_steps)
    weights = {"mlm": float(cfg.w_mlm), "contrastive": float(cfg.w_contrastive),
               "supervised": float(cfg.w_supervised)}
    temperature = float(cfg.temperature)
    per_rank = f" ({world} ranks x {source.batch})" if info.distributed else ""
    rep.log(f"pretraining {model_cfg.preset} CellLM ({model.n_params()['trainable']:,} trainable parameters) on "
            f"{device}: {epochs:g} epoch(s) of {n_batches} batch(es) of {bsz}{per_rank} = {total_steps} step(s), "
            f"chunk {chunk}, {threads} thread(s)")

    # dropout draws on the model's device: replay that device's RNG in divide-and-conquer
    rng_devices = ([device.index if device.index is not None else torch.cuda.current_device()]
                   if device.type == "cuda" else [])
    step = int(resume_meta.get("step", 0))
    start_epoch = step // max(n_batches, 1)

    def checkpoint(epoch: int) -> Path:
        path = run_dir / "checkpoints" / f"step-{step}.safetensors"
        if main:
            meta = model_metadata(model_cfg, vocab, {"pooling": cfg.pooling, "max_len": max_len})
            meta.update({"kind": "celllm-pretrain", "epoch": epoch, "vocab_source": vocab_source,
                         "classes": classes, "world_size": world,
                         "scaler": scaler.state_dict() if scaler is not None else None})
            path = rd.save_checkpoint(_state_tensors(model, head, opt, params), meta, step)
            rep.artifact("checkpoint", str(path))
        dist_mod.barrier(info)  # nobody reads or resumes before rank 0 has written it
        return path

    if resume_tensors is not None and "rng.cpu" in resume_tensors and not info.distributed:
        torch.set_rng_state(resume_tensors["rng.cpu"].to(torch.uint8))

    def loss_fn(a: torch.Tensor, b_: torch.Tensor) -> torch.Tensor:
        return weights["contrastive"] * losses.info_nce(a, b_, temperature)

    live = None
    if live_data is not None and main:
        from app.engine.celllm.live import LiveMap, refresh_every

        live = LiveMap(run_dir, model, live_data["cells"], live_data["cell_ids"], device, str(cfg.pooling),
                       labels=live_data["labels"], batches=live_data["batches"], label_key=live_data["label_key"],
                       batch_key=live_data["batch_key"], contrastive=weights["contrastive"] > 0, kind="pretrain",
                       reporter=rep)
        live.start(live_data["counts"], resume_step=step if resume_tensors is not None else None)
        live_every = refresh_every(total_steps, int(cfg.live_every))
        rep.log(f"live map: {len(live_data['cells'])} cells, refreshed every {live_every} step(s)")
        if step == 0:
            live.refresh(0, 0)  # where learning starts
    last: dict[str, float] = {}
    cancelled = False
    for epoch in range(start_epoch, n_epochs):
        with contextlib.closing(source.batches(epoch, step - epoch * n_batches)) as batches:
            for cells_b, labels_b in batches:
                if step >= total_steps:
                    break
                if rep.should_stop():  # one all-reduce under torchrun: every rank stops at the same step
                    cancelled = True
                    break
                t0 = time.time()
                if info.distributed:  # per-rank dropout, reproducible after a resume
                    dist_mod.seed_step(seed, step, info)
                gen = torch.Generator().manual_seed(seed * 1_000_003 + step + 7_919_993 * info.rank)
                batch = make_batch(cells_b, labels_b, float(cfg.mlm_prob), model_cfg.n_bins, gen,
                                   view=str(cfg.view), view_keep=float(cfg.view_keep))
                tensors = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
                lr = lr_at(step, total_steps, base_lr, warmup)
                for gpar in opt.param_groups:
                    gpar["lr"] = lr
                opt.zero_grad(set_to_none=True)
                parts: dict[str, float] = {}
                if info.distributed:
                    # per-cell losses are means over the GLOBAL batch: count masked tokens on every rank
                    counts = dist_mod.all_sum_many([batch["n_masked"], batch["n_labelled"]], info)
                    fn = make_chunk_fn(model, head, device, {"n_masked": counts[0], "n_labelled": counts[1]},
                                       weights, str(cfg.pooling), parts)
                    dist_mod.set_chunk_fn(runner, fn)
                    res = dist_mod.dc_step_distributed(runner, tensors, loss_fn, chunk, info, scaler=scaler,
                                                       autocast_dtype=amp_dtype, device_type=device.type,
                                                       devices=rng_devices)
                else:
                    fn = make_chunk_fn(model, head, device, batch, weights, str(cfg.pooling), parts)
                    res = dc_step(fn, tensors, loss_fn, chunk, scaler=scaler, autocast_dtype=amp_dtype,
                                  device_type=device.type, devices=rng_devices)
                if scaler is not None:
                    scaler.unscale_(opt)
                gnorm = torch.nn.utils.clip_grad_norm_(params, float(cfg.grad_clip) or float("inf"))
                if scaler is not None:
                    scaler.step(opt)
                    scaler.update()
                else:
                    opt.step()
                step += 1
                za, zb = res.reps
                if info.distributed:
                    mlm_v, sup_v = dist_mod.all_sum_many([parts.get("mlm", 0.0), parts.get("supervised", 0.0)], info)
                else:
                    mlm_v, sup_v = parts.get("mlm", 0.0), parts.get("supervised", 0.0)
                last = {"loss": res.loss, "mlm": mlm_v,
                        "contrastive": res.rep_loss / max(weights["contrastive"], 1e-12),
                        "contrastive_acc": losses.contrastive_accuracy(za, zb), "lr": lr,
                        "grad_norm": float(gnorm), "step_s": time.time() - t0}
                if head is not None:
                    last["supervised"] = sup_v
                rep.progress(step, total_steps, epoch)
                rep.metrics(step, last, "train", epoch)
                if main:
                    rd.append_metrics({"step": step, "epoch": epoch, **last})
                if live is not None and (step % live_every == 0 or step == total_steps):
                    live.refresh(epoch, step)
                if int(cfg.redraw_every) and step % int(cfg.redraw_every) == 0:
                    model.redraw_projections(seed=model_cfg.proj_seed + step)  # step-seeded: same on every rank
                if int(cfg.checkpoint_every) and step % int(cfg.checkpoint_every) == 0:
                    checkpoint(epoch)
        if cancelled:
            break
        checkpoint(epoch + 1)
        rep.log(f"epoch {epoch + 1}/{n_epochs} done: loss {last.get('loss', float('nan')):.4f}")

    if cancelled:
        path = checkpoint(step // max(n_batches, 1))
        rep.log(f"stopped at step {step}; checkpoint {path.name} (resume to continue)")
        result = PretrainResult(cancelled=True, step=step, checkpoint=str(path), run_dir=str(run_dir))
        if main:
            rd.write_result(result)
        return result

    model.eval()
    extra = {"pooling": cfg.pooling, "max_len": max_len, "vocab_source": vocab_source,
             "pretrain": {"data": paths, "steps": step, "epochs": epochs, "batch_size": bsz,
                          "chunk_size": chunk, "seed": seed, "lr": base_lr, "temperature": temperature,
                          "mlm_prob": float(cfg.mlm_prob), "view": str(cfg.view),
                          "view_keep": float(cfg.view_keep), "w_mlm": float(cfg.w_mlm),
                          "w_contrastive": float(cfg.w_contrastive), "supervised_key": cfg.supervised_key,
                          "classes": classes, "final": last, "world_size": world, "streamed": source.streamed}}
    model_dir = run_dir / "model"
    if main:
        model_dir = save_model(model_dir, model.cpu(), model_cfg, vocab, extra)
        rep.artifact("model", str(model_dir))
    out = {"cancelled": False, "run_dir": str(run_dir), "model_dir": str(model_dir), "steps": step,
           "epochs": epochs, "n_cells": n_cells, "vocab_size": len(vocab), "chunk_size": chunk,
           "batch_size": bsz, "device": str(device), "gene_match": gene_report, "final": last,
           "seconds": round(time.time() - t_start, 2)}
    if info.distributed:
        out.update({"world_size": world, "batch_per_rank": source.batch, "backend": info.backend})
    if source.streamed:
        st = source.stream.stats
        out["stream"] = {"reads": st.reads, "max_rows_per_read": st.max_rows_per_read,
                         "max_values_per_read": st.max_values_per_read, "values_read": st.values_read,
                         "cells_without_vocabulary_genes": source.short_cells}
    result = PretrainResult.from_dict(out)
    if main:
        rd.write_result(result)
    dist_mod.barrier(info)
    return result
