"""CellLM pretraining: masked expression modelling + divide-and-conquer contrastive learning (+ optional
supervised CLS loss), as the job function ``app.engine.celllm.pretrain:pretrain``.

Each cell is forwarded twice with independent dropout: view A with 15 % of its expressed genes' bins hidden
(the masked-expression loss is read from view A), view B unmasked. The two CLS embeddings are the positive
pair of a symmetric InfoNCE over the batch (cosine, temperature 0.05); the other 2N - 2 views are the
negatives. An optional ``supervised_key`` adds a cross-entropy from a linear head on both views' CLS
embeddings (the paper's tumour-vs-normal objective; ``_dataset`` uses the input file as the label). Total
loss = w_mlm * MLM + w_con * InfoNCE + w_sup * supervised. Batches go through ``gradcache.dc_step`` so memory
grows with the chunk size, not the batch size.

Run folder: checkpoints at every epoch end and on cancel (model + head + AdamW state + progress, with the
config and vocabulary in the header, so ``load_model`` can open a checkpoint), ``metrics.jsonl`` one row per
step, the final model in ``RUN/model`` (``model_io.save_model``).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from app.data.errors import DataError
from app.engine.celllm import losses
from app.engine.celllm.gradcache import dc_step
from app.engine.celllm.memory import auto_chunk_size
from app.engine.celllm.model_io import MODEL_PREFIX, load_model, load_state, model_metadata, save_model
from app.engine.celllm.tokenize import collate, tokenize_counts
from app.engine.reporter import Reporter, ensure_reporter
from app.models.celllm.config import CellLMConfig, preset
from app.models.celllm.model import CellLM

DEFAULTS: dict[str, Any] = {
    "preset": "tiny",
    "batch_size": 64,
    "chunk_size": None,  # None: from free memory
    "epochs": 1,
    "lr": None,  # None: by preset (tiny 1e-3, small 5e-4, full 1e-4)
    "weight_decay": 0.01,
    "warmup_frac": 0.05,
    "grad_clip": 1.0,
    "device": "auto",
    "seed": 0,
    "max_len": None,  # None: the preset's (tiny 512, small 1024, full: all expressed genes)
    "supervised_key": None,
    "init": None,
    "threads": None,
    "mlm_prob": 0.15,
    "temperature": 0.05,
    "w_mlm": 1.0,
    "w_contrastive": 1.0,
    "w_supervised": 1.0,
    "dropout": None,  # None: the model's (must be > 0 for the contrastive views)
    "min_genes": 1,  # cells expressing fewer vocabulary genes are dropped
    "max_cells": None,  # per dataset, seeded subsample (quick runs)
    "amp": "auto",  # auto (CUDA: bf16 if supported, else fp16 + GradScaler) | off | fp16 | bf16
    "pooling": "cls",
    "redraw_every": 0,  # redraw Performer projections every N steps (between steps); 0 = never
    "checkpoint_every": 0,  # extra checkpoint every N steps; 0 = only at epoch ends and on cancel
}
DATASET_KEY = "_dataset"
"""``supervised_key`` value meaning "the input file each cell came from" (e.g. tumour vs normal atlas)."""

_LR_BY_PRESET = {"tiny": 1e-3, "small": 5e-4, "full": 1e-4}


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
        out.append({"path": path, "counts": counts, "genes": list(map(str, adata.var_names)), "labels": labels})
    return out


# --------------------------------------------------------------------------------------------------
# one step
# --------------------------------------------------------------------------------------------------
class SupervisedHead(torch.nn.Module):
    """Linear classifier on the CLS embedding (pretraining's optional supervised objective)."""

    def __init__(self, dim: int, n_classes: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


def make_batch(cells: list[tuple[np.ndarray, np.ndarray]], labels: np.ndarray | None, mlm_prob: float,
               n_bins: int, generator: torch.Generator) -> dict[str, Any]:
    """Collate cells (sorted by length so chunks pad little), mask bins for MLM; CPU tensors."""
    order = np.argsort([len(c[0]) for c in cells], kind="stable")
    cells = [cells[i] for i in order]
    g, b, m = collate(cells, n_bins)
    masked, targets = losses.mask_for_mlm(g, b, m, mlm_prob, n_bins, generator)
    batch: dict[str, Any] = {"gene_ids": g, "bins": b, "masked_bins": masked, "pad_mask": m, "targets": targets}
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
# the job
# --------------------------------------------------------------------------------------------------
def pretrain(config: dict, reporter: Reporter | None = None) -> dict:
    """Job function ``app.engine.celllm.pretrain:pretrain``.

    config keys (see ``DEFAULTS``): ``data`` (path or list of paths), ``run_dir`` (required), ``preset``,
    ``batch_size``, ``chunk_size``, ``epochs``, ``lr``, ``device``, ``seed``, ``max_len``, ``supervised_key``
    (an ``.obs`` column, or ``_dataset``), ``init`` (model/run folder to continue from, keeping its
    vocabulary), ``threads``, ``resume``. Returns a JSON-serialisable summary (``cancelled`` True when stopped).
    """
    from app.engine.device import device_info, resolve_device, set_threads
    from app.engine.rundir import RunDir

    rep = ensure_reporter(reporter)
    cfg = {**DEFAULTS, **{k: v for k, v in config.items() if v is not None}}
    t_start = time.time()
    if not config.get("run_dir"):
        raise DataError("no run folder given", None, "Pass --out RUN_FOLDER (where checkpoints and the model go).")
    run_dir = Path(config["run_dir"])
    rd = RunDir.open(run_dir) if RunDir.is_run_dir(run_dir) else RunDir.create(run_dir, "celllm-pretrain", config)
    threads = set_threads(cfg.get("threads"))
    device = resolve_device(str(cfg["device"]))
    rep.device(device_info(device))
    seed = int(cfg["seed"])
    torch.manual_seed(seed)
    epochs, batch_size = float(cfg["epochs"]), int(cfg["batch_size"])  # fractional epochs allowed (0.5)
    if not epochs > 0 or batch_size < 2:
        raise DataError(f"epochs must be > 0 and batch_size >= 2 (got {epochs:g}, {batch_size})", None,
                        "Contrastive learning needs at least two cells per batch.")

    # -- resume / init / new vocabulary -----------------------------------------------------------
    resume_tensors: dict[str, torch.Tensor] | None = None
    resume_meta: dict[str, Any] = {}
    if config.get("resume"):
        from app.engine.checkpoint import load_tensors

        ck = rd.last_checkpoint()
        if ck is not None:
            rd.rewind_to_checkpoint()
            resume_tensors, resume_meta = load_tensors(ck, device="cpu")
            rep.log(f"resuming from {ck.name} (step {resume_meta.get('step')})")
        else:
            rep.log("no checkpoint to resume from: starting from the beginning", level="warning")

    datasets = load_datasets(_paths(cfg["data"]), cfg.get("supervised_key"), cfg.get("max_cells"), seed, rep)
    init_model: CellLM | None = None
    if resume_tensors is not None:
        model_cfg = CellLMConfig.from_dict(resume_meta["config"])
        vocab = list(resume_meta["vocab"])
        vocab_source = str(resume_meta.get("vocab_source", "data"))
    elif cfg.get("init"):
        init_model, model_cfg, vocab, _extra = load_model(cfg["init"], "cpu")
        vocab_source = "init"
        rep.log(f"starting from {cfg['init']} ({len(vocab)} genes)")
    else:
        vocab = build_vocab([d["genes"] for d in datasets])
        overrides: dict[str, Any] = {}
        if cfg.get("max_len") is not None:
            overrides["max_len"] = int(cfg["max_len"])
        try:
            model_cfg = preset(str(cfg["preset"]), len(vocab), proj_seed=seed, **overrides)
        except ValueError as exc:
            raise DataError(str(exc), None, "Use preset tiny, small or full.") from exc
        vocab_source = "data"
    if cfg.get("dropout") is not None:
        model_cfg.dropout = float(cfg["dropout"])
    if model_cfg.dropout <= 0:
        raise DataError("dropout is 0: the two contrastive views of a cell would be identical", None,
                        "Set dropout > 0 (e.g. 0.1) for pretraining.")
    max_len = int(cfg["max_len"]) if cfg.get("max_len") is not None else model_cfg.max_len

    # -- genes -> vocabulary, tokens ----------------------------------------------------------------
    gene_report = []
    cells: list[tuple[np.ndarray, np.ndarray]] = []
    raw_labels: list[Any] = []
    for k, d in enumerate(datasets):
        if vocab_source == "data":
            d2v = _exact_mapping(d["genes"], vocab)
            rate = float(np.mean(d2v >= 0)) if len(d2v) else 0.0
        else:
            from app.data.singlecell import harmonise_genes

            gm = harmonise_genes(d["genes"], vocab)
            d2v, rate = np.asarray(gm.data_to_vocab), float(gm.match_rate)
        gene_report.append({"path": d["path"], "match_rate": rate})
        rep.log(f"gene match for {Path(d['path']).name}: {rate:.1%} of its genes are in the vocabulary")
        if rate < 0.5:
            rep.log(f"warning: only {rate:.1%} of the genes of {d['path']} match the vocabulary", level="warning")
        toks = tokenize_counts(d["counts"], d2v, max_len=max_len, seed=seed + k, n_bins=model_cfg.n_bins)
        min_genes = max(1, int(cfg["min_genes"]))
        for i, c in enumerate(toks):
            if len(c[0]) - 1 >= min_genes:
                cells.append(c)
                raw_labels.append(d["labels"][i] if d["labels"] is not None else None)
    n_cells = len(cells)
    if n_cells < 2:
        raise DataError(f"only {n_cells} cell(s) express at least {cfg['min_genes']} vocabulary gene(s)", None,
                        "Check the data holds raw counts and gene names that match the vocabulary.")
    rep.log(f"{n_cells} cells tokenised (max_len {max_len}); vocabulary {len(vocab)} genes")

    classes: list[str] = []
    labels_arr: np.ndarray | None = None
    if cfg.get("supervised_key"):
        classes = list(resume_meta.get("classes") or sorted({str(v) for v in raw_labels if v is not None}))
        if len(classes) < 2:
            raise DataError(f"supervised_key '{cfg['supervised_key']}' has {len(classes)} class(es)", None,
                            "A supervised objective needs at least two classes; drop supervised_key.")
        idx = {c: i for i, c in enumerate(classes)}
        labels_arr = np.array([idx.get(str(v), losses.IGNORE) if v is not None else losses.IGNORE
                               for v in raw_labels], dtype=np.int64)

    # -- model, optimiser ---------------------------------------------------------------------------
    model = init_model if init_model is not None else CellLM(model_cfg)
    if cfg.get("dropout") is not None:
        for mod in model.modules():
            if isinstance(mod, torch.nn.Dropout):
                mod.p = float(cfg["dropout"])
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
    base_lr = float(cfg["lr"]) if cfg.get("lr") is not None else _LR_BY_PRESET.get(model_cfg.preset, 1e-4)
    opt = torch.optim.AdamW(params, lr=base_lr, weight_decay=float(cfg["weight_decay"]))
    if resume_tensors is not None:
        _restore_optimizer(opt, params, resume_tensors)

    amp_mode = str(cfg["amp"]).lower()
    amp_dtype: torch.dtype | None = None
    if device.type == "cuda" and amp_mode != "off":
        if amp_mode == "bf16" or (amp_mode == "auto" and torch.cuda.is_bf16_supported()):
            amp_dtype = torch.bfloat16
        else:
            amp_dtype = torch.float16
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    if scaler is not None and resume_meta.get("scaler"):
        scaler.load_state_dict(resume_meta["scaler"])

    bsz = min(batch_size, n_cells)
    n_batches = n_cells // bsz  # drop_last: an incomplete batch would change the contrastive difficulty
    total_steps = max(1, round(epochs * n_batches))
    n_epochs = math.ceil(total_steps / n_batches)
    lengths = np.array([len(c[0]) for c in cells])
    if cfg.get("chunk_size"):
        chunk = int(cfg["chunk_size"])
    else:
        typical = int(np.percentile(lengths, 95))
        chunk = auto_chunk_size(model_cfg, typical, bsz, device, model, amp=amp_dtype is not None)
        rep.log(f"chunk size {chunk} chosen from free memory (cells of ~{typical} tokens)")
    warmup = round(float(cfg["warmup_frac"]) * total_steps)
    weights = {"mlm": float(cfg["w_mlm"]), "contrastive": float(cfg["w_contrastive"]),
               "supervised": float(cfg["w_supervised"])}
    temperature = float(cfg["temperature"])
    rep.log(f"pretraining {model_cfg.preset} CellLM ({model.n_params()['trainable']:,} trainable parameters) on "
            f"{device}: {epochs:g} epoch(s) of {n_batches} batch(es) of {bsz} = {total_steps} step(s), chunk {chunk}, "
            f"{threads} thread(s)")

    # dropout draws on the model's device: replay that device's RNG in divide-and-conquer
    rng_devices = ([device.index if device.index is not None else torch.cuda.current_device()]
                   if device.type == "cuda" else [])
    step = int(resume_meta.get("step", 0))
    start_epoch = step // max(n_batches, 1)

    def checkpoint(epoch: int) -> Path:
        meta = model_metadata(model_cfg, vocab, {"pooling": cfg["pooling"], "max_len": max_len})
        meta.update({"kind": "celllm-pretrain", "epoch": epoch, "vocab_source": vocab_source, "classes": classes,
                     "scaler": scaler.state_dict() if scaler is not None else None})
        path = rd.save_checkpoint(_state_tensors(model, head, opt, params), meta, step)
        rep.artifact("checkpoint", str(path))
        return path

    if resume_tensors is not None and "rng.cpu" in resume_tensors:
        torch.set_rng_state(resume_tensors["rng.cpu"].to(torch.uint8))

    last: dict[str, float] = {}
    cancelled = False
    for epoch in range(start_epoch, n_epochs):
        perm = np.random.default_rng(seed + 7919 * epoch).permutation(n_cells)
        for b in range(step - epoch * n_batches, n_batches):
            if step >= total_steps:
                break
            if rep.should_stop():
                cancelled = True
                break
            t0 = time.time()
            idx = perm[b * bsz:(b + 1) * bsz]
            gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
            batch = make_batch([cells[i] for i in idx], labels_arr[idx] if labels_arr is not None else None,
                               float(cfg["mlm_prob"]), model_cfg.n_bins, gen)
            lr = lr_at(step, total_steps, base_lr, warmup)
            for gpar in opt.param_groups:
                gpar["lr"] = lr
            opt.zero_grad(set_to_none=True)
            parts: dict[str, float] = {}
            fn = make_chunk_fn(model, head, device, batch, weights, str(cfg["pooling"]), parts)
            res = dc_step(fn, {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)},
                          lambda a, b_: weights["contrastive"] * losses.info_nce(a, b_, temperature), chunk,
                          scaler=scaler, autocast_dtype=amp_dtype, device_type=device.type, devices=rng_devices)
            if scaler is not None:
                scaler.unscale_(opt)
            gnorm = torch.nn.utils.clip_grad_norm_(params, float(cfg["grad_clip"]) or float("inf"))
            if scaler is not None:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            step += 1
            za, zb = res.reps
            last = {"loss": res.loss, "mlm": parts.get("mlm", 0.0),
                    "contrastive": res.rep_loss / max(weights["contrastive"], 1e-12),
                    "contrastive_acc": losses.contrastive_accuracy(za, zb), "lr": lr,
                    "grad_norm": float(gnorm), "step_s": time.time() - t0}
            if head is not None:
                last["supervised"] = parts.get("supervised", 0.0)
            rep.progress(step, total_steps, epoch)
            rep.metrics(step, last, "train", epoch)
            rd.append_metrics({"step": step, "epoch": epoch, **last})
            if int(cfg["redraw_every"]) and step % int(cfg["redraw_every"]) == 0:
                model.redraw_projections(seed=model_cfg.proj_seed + step)  # step-seeded: resume-safe
            if int(cfg["checkpoint_every"]) and step % int(cfg["checkpoint_every"]) == 0:
                checkpoint(epoch)
        if cancelled:
            break
        checkpoint(epoch + 1)
        rep.log(f"epoch {epoch + 1}/{n_epochs} done: loss {last.get('loss', float('nan')):.4f}")

    if cancelled:
        path = checkpoint(step // max(n_batches, 1))
        rep.log(f"stopped at step {step}; checkpoint {path.name} (resume to continue)")
        result = {"cancelled": True, "step": step, "checkpoint": str(path), "run_dir": str(run_dir)}
        rd.write_result(result)
        return result

    model.eval()
    extra = {"pooling": cfg["pooling"], "max_len": max_len, "vocab_source": vocab_source,
             "pretrain": {"data": _paths(cfg["data"]), "steps": step, "epochs": epochs, "batch_size": bsz,
                          "chunk_size": chunk, "seed": seed, "lr": base_lr, "temperature": temperature,
                          "mlm_prob": float(cfg["mlm_prob"]), "supervised_key": cfg.get("supervised_key"),
                          "classes": classes, "final": last}}
    model_dir = save_model(run_dir / "model", model.cpu(), model_cfg, vocab, extra)
    rep.artifact("model", str(model_dir))
    result = {"cancelled": False, "run_dir": str(run_dir), "model_dir": str(model_dir), "steps": step,
              "epochs": epochs, "n_cells": n_cells, "vocab_size": len(vocab), "chunk_size": chunk,
              "batch_size": bsz, "device": str(device), "gene_match": gene_report, "final": last,
              "seconds": round(time.time() - t_start, 2)}
    rd.write_result(result)
    return result
