"""Fine-tune CellLM for cell-type annotation, and score it beside the logistic-regression baseline.

``finetune(config, reporter)`` is the job function behind ``python -m app celllm finetune`` and the GUI's
"Fine-tune" button. Steps: read the data (+ a labels table joined by cell ID), drop unlabelled cells,
refuse a one-class column, make a seeded stratified train/validation/test split, tokenise the counts for
the starting model's vocabulary, fit the baseline on the training cells, train a pooled-embedding classifier
head (and the unfrozen part of the encoder) with a class-weighted cross-entropy, stop early on validation
macro-F1, then score the test cells with the best epoch's weights and with the baseline on exactly the same
split. With ``readout="cls+linear"`` (default) the head's logits are summed with a linear path over the data's
genes (``readout.py``) that starts at the baseline's fit, the pooled head at zero: epoch 0 is the baseline, and
early stopping keeps it unless training beats it on the validation cells.

Run folder (``config.run_dir``):
    model/                model_io files + head.safetensors (classes, pooling) + readout.safetensors (the
                          cls+linear readout's genes, mean/scale, weights): what ``embed`` loads
    checkpoints/          one safetensors checkpoint per epoch (model, head, optimiser, progress)
    best.safetensors      the best epoch's model + head (early stopping restores it)
    metrics.jsonl         one line per epoch (train_loss, val_macro_f1, val_accuracy)
    metrics.json          test scores of CellLM and baseline, per-class F1, confusion matrices, notes
    split.json            which cells went to train / val / test
    test_embeddings.npy   pooled embeddings of the test cells (rows = test_predictions.csv rows)
    test_predictions.csv  cell, true label, CellLM label + confidence, baseline label
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from app.data.errors import DataError
from app.data.jsonsafe import json_safe, write_json
from app.engine.celllm.embed import (
    HEAD_FILE,
    MODEL_SUBDIR,
    LoadedModel,
    check_cells_have_counts,
    infer,
    match_genes,
    model_dim,
    resolve_model_dir,
)
from app.engine.celllm.job_configs import FINETUNE_LR_BY_PRESET, FINETUNE_MAX_LEN, FinetuneConfig
from app.engine.celllm.splits import (
    classification_scores,
    clean_labels,
    finish_split_notes,
    split_from_column,
    stratified_split,
)
from app.engine.celllm.tokenize import Tokens, collate, length_batches, tokenize_counts
from app.engine.reporter import Cancelled, Reporter, ensure_reporter
from app.engine.results import FinetuneResult
from app.models.celllm.heads import ClassifierHead


# --------------------------------------------------------------------------------------------------
# freezing
# --------------------------------------------------------------------------------------------------
def encoder_layers(model: torch.nn.Module, depth: int | None = None) -> torch.nn.ModuleList:
    """The encoder's stack of transformer blocks: ``model.layers``, else the longest ``nn.ModuleList`` (of
    length ``depth`` when the config gives it), so freezing also works with other encoder layouts."""
    own = getattr(model, "layers", None)  # CellLM exposes its blocks as ``.layers``
    if isinstance(own, torch.nn.ModuleList) and len(own) > 0:
        return own
    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and len(m) > 0]
    if depth:
        exact = [m for m in lists if len(m) == depth]
        lists = exact or lists
    if not lists:
        raise ValueError("could not find the encoder's layer list in the model")
    return max(lists, key=len)


def apply_freeze(model: torch.nn.Module, freeze: str, depth: int | None = None) -> dict[str, int]:
    """Set ``requires_grad`` for a freezing mode; returns trainable / frozen parameter counts.

    ``none``: train everything (parameters the model itself froze, e.g. frozen gene embeddings, stay
    frozen). ``embeddings``: freeze the token embedding tables. ``encoder``: freeze the whole encoder (a
    linear probe: only the head learns). ``last:K``: freeze embeddings and all but the last K layers (the
    original CellLM fine-tunes the last layer and the final norm, i.e. ``last:1``).
    """
    freeze = str(freeze or "none").strip().lower()
    if freeze == "none":
        pass
    elif freeze == "encoder":
        for p in model.parameters():
            p.requires_grad_(False)
    elif freeze == "embeddings" or freeze.startswith("last:"):
        for mod in model.modules():
            if isinstance(mod, torch.nn.Embedding):
                for p in mod.parameters():
                    p.requires_grad_(False)
        if freeze.startswith("last:"):
            try:
                k = int(freeze.split(":", 1)[1])
            except ValueError as exc:
                raise DataError(f"invalid freeze mode {freeze!r}", None,
                                "Use none, embeddings, encoder or last:K with K a whole number.") from exc
            layers = encoder_layers(model, depth)
            if not 0 <= k <= len(layers):
                raise DataError(f"freeze 'last:{k}' but the model has {len(layers)} layers", None,
                                f"Pick K between 0 and {len(layers)}.")
            for layer in list(layers)[: len(layers) - k]:
                for p in layer.parameters():
                    p.requires_grad_(False)
    else:
        raise DataError(f"unknown freeze mode {freeze!r}", None, "Use none, embeddings, encoder or last:K.")
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    return {"trainable": int(n_train), "frozen": int(n_frozen)}


# --------------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------------
def class_weights(y: np.ndarray, n_classes: int, mode: str = "balanced") -> torch.Tensor:
    """Cross-entropy weights ``n / (K * n_c)`` over the K classes present ("balanced", as scikit-learn): every
    class weighs the same in total; absent classes get 0."""
    if mode == "none":
        return torch.ones(n_classes)
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    present = counts > 0
    w = np.zeros(n_classes)
    w[present] = counts.sum() / (present.sum() * counts[present])
    return torch.tensor(w, dtype=torch.float32)


def stratified_subsample(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted indices of about ``n`` cells keeping class proportions (each class keeps >= min(3, size))."""
    labels = np.asarray(labels)
    if n >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    keep = []
    for cls in sorted(set(labels.tolist())):
        idx = np.flatnonzero(labels == cls)
        k = max(min(3, len(idx)), round(len(idx) * n / len(labels)))
        keep.append(rng.choice(idx, size=min(k, len(idx)), replace=False))
    return np.sort(np.concatenate(keep))


def labels_join_line(join: dict, asked: str | None) -> str:
    """One log line: how the labels table joined (ID column, cells matched) and which column is the label."""
    n_rows, n_no = int(join.get("n_rows", 0) or 0), int(join.get("n_cells_without_label", 0) or 0)
    line = (f"labels: {Path(str(join.get('path', ''))).name} joined by cell ID (column {join.get('id_column')!r}): "
            f"{n_rows - int(join.get('n_labels_without_cell', 0) or 0):,} rows matched, {n_no:,} cells without a row")
    key = join.get("label_key")
    if asked and key and key != asked:
        line += f"; label column '{asked}' is also in the data's .obs: the table's was used (as '{key}')"
    elif key:
        line += f"; label column '{key}' from the table"
    return line


class Labelled(NamedTuple):
    """The labelled cells of a fine-tuning run: what ``load_labelled`` read."""

    adata: Any
    labels: np.ndarray
    notes: list[str]
    label_key: str
    """The label column actually used: a labels table's column is joined as ``COLUMN_labels`` when the data's
    .obs has one of the same name, and an unset key is the table's only column."""


def load_labelled(config: FinetuneConfig, rep: Reporter) -> Labelled:
    """Read the data, pick the label column, drop unlabelled cells (``config.max_cells``: a stratified
    subsample, seeded by ``config.seed``)."""
    from app.data.singlecell import read_singlecell

    data = config.data
    if not data:
        raise DataError("no input data given", None, "Pass --data PATH (h5ad, 10x folder, CSV, ...).")
    key = config.label_key
    adata = read_singlecell(data, labels=config.labels, label_key=key)
    rep.log(f"read {adata.n_obs} cells x {adata.n_vars} genes from {data}")
    join = (adata.uns.get("omicslab") or {}).get("labels") or {}
    if config.labels:
        # the table always wins over a same-named .obs column (joined as COLUMN_labels); say which was used
        key = join.get("label_key") or key
        rep.log(labels_join_line(join, config.label_key))
    elif not key:
        key = join.get("label_key")
    if not key:
        raise DataError("no label column given", data,
                        "Pass --label-key COLUMN (an .obs column or a column of the --labels table); "
                        f"columns here: {', '.join(map(str, adata.obs.columns)) or 'none'}.")
    if key not in adata.obs.columns:
        raise DataError(f"label column {key!r} not found", config.labels or data,
                        f"Choose one of: {', '.join(map(str, adata.obs.columns)) or '(no columns)'}"
                        + ("" if config.labels else "; or pass --labels FILE to join a labels table."))
    cl = clean_labels(adata.obs[key].to_numpy(), source=key)
    notes = list(cl.notes)
    if cl.n_dropped:
        adata = adata[cl.keep].copy()
    labels = cl.labels
    if config.max_cells and config.max_cells < adata.n_obs:
        sub = stratified_subsample(labels, config.max_cells, config.seed)
        adata, labels = adata[sub].copy(), labels[sub]
        notes.append(f"subsampled {len(sub)} cells (stratified, seed {config.seed})")
        clean_labels(labels, source=key)  # subsampling must not leave a single class
    for n in notes:
        rep.log(n)
    return Labelled(adata, labels, notes, str(key))


def make_split(config: FinetuneConfig, adata: Any, labels: np.ndarray) -> Any:
    """Seeded stratified split, or the user's split column (``split_key``) when given."""
    split_key = config.split_key
    if split_key:
        if split_key not in adata.obs.columns:
            raise DataError(f"split column {split_key!r} not found", config.data,
                            f"Choose one of: {', '.join(map(str, adata.obs.columns))}.")
        return split_from_column(labels, adata.obs[split_key].to_numpy())
    split = stratified_split(labels, val_frac=config.val_frac, test_frac=config.test_frac, seed=config.seed)
    finish_split_notes(split, labels)
    return split


POOLINGS = ("cls", "mean")
"""The cell embeddings a classifier head can read (``CellLM.pool``)."""


def resolve_pooling(asked: str, recorded: Any, init: str | Path | None = None) -> tuple[str, str]:
    """The pooling to fine-tune with, and a log line saying why.

    ``auto`` takes what the starting model records (a model fine-tuned with ``mean`` keeps ``mean``; the
    shipped and pretrained models record ``cls``), else ``cls``. A pooling the user names is used as named,
    and the line says when it differs from the recorded one (a new head is trained either way, so it is a
    choice, not an error). A recorded value fine-tuning does not know is refused rather than guessed.

    Raises:
        DataError: ``auto`` and the starting model records a pooling other than cls or mean.
    """
    if recorded is not None and str(recorded) not in POOLINGS:
        if asked == "auto":
            raise DataError(f"the starting model records pooling {recorded!r}, which fine-tuning does not know",
                            None if init is None else str(init), "Pass --pooling cls or --pooling mean.")
        recorded = None
    if asked == "auto":
        if recorded is None:
            return "cls", "pooling: cls (the starting model records none)"
        return str(recorded), f"pooling: {recorded} (the starting model's; --pooling sets another)"
    if recorded is not None and asked != recorded:
        return asked, f"pooling: {asked} as asked; the starting model was trained with {recorded}"
    return asked, f"pooling: {asked}"


# --------------------------------------------------------------------------------------------------
# run folder
# --------------------------------------------------------------------------------------------------
def open_run_dir(path: str | Path, kind: str, config: dict) -> Any:
    """The JOBS run folder: opened when the jobs layer (or a previous attempt) made it, else created."""
    from app.engine.run_dir import RunDir

    path = Path(path)
    try:
        return RunDir.open(path)
    except Exception:  # not a run folder yet (the notebook path): make one
        return RunDir.create(path, kind, json_safe(config))


def make_optimizer(groups: list[dict[str, Any]], weight_decay: float, dev: torch.device) -> torch.optim.Optimizer:
    """AdamW over the parameter groups, fused on CPU and CUDA.

    Fused is one kernel over all parameters instead of several per tensor (a step took 4-10 ms, fused 1.3 ms,
    of a ~90 ms 32-cell step on one CPU thread). Only AdamW: torch's fused CPU *Adam* with weight decay
    drifts from the unfused one (and made DNNGP stop early), fused AdamW matches it (tested).
    """
    return torch.optim.AdamW(groups, weight_decay=weight_decay, fused=dev.type in ("cpu", "cuda"))


def encoder_groups(model: torch.nn.Module, lr: float, decay: float = 1.0,
                   depth: int | None = None) -> list[dict[str, Any]]:
    """Optimiser groups of the encoder's trainable parameters with layer-wise learning rates.

    The top layer (and what sits above it: final norm, pretraining heads) trains at ``lr``, layer ``i`` of
    ``L`` at ``lr * decay**(L-1-i)``, everything below the layers (embeddings) at ``lr * decay**L``: a lower
    rate keeps more of the pretrained features near the input. ``decay`` 1 gives one group at ``lr``."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if decay >= 1.0 or not trainable:
        return [{"params": trainable, "lr": lr}] if trainable else []
    layers = list(encoder_layers(model, depth))
    n = len(layers)
    rank: dict[int, int] = {}  # parameter id -> layers from the top (0 = top or above it)
    for i, layer in enumerate(layers):
        for p in layer.parameters():
            rank[id(p)] = n - 1 - i
    inside = set(rank)
    below = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()} - inside
    by_rank: dict[int, list[torch.nn.Parameter]] = {}
    for p in trainable:
        r = rank.get(id(p), n if id(p) in below else 0)
        by_rank.setdefault(r, []).append(p)
    return [{"params": ps, "lr": lr * decay ** r} for r, ps in sorted(by_rank.items())]


def _opt_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list]:
    """Flatten an optimiser's state into named tensors (safetensors) + its JSON param groups."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    for idx, st in sd["state"].items():
        for name, val in st.items():
            t = val if torch.is_tensor(val) else torch.tensor(val)
            tensors[f"opt.{idx}.{name}"] = t
    return tensors, sd["param_groups"]


def _opt_load(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, val in tensors.items():
        if key.startswith("opt."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = val
    opt.load_state_dict({"state": state, "param_groups": groups})


def _split_state(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def _weights(model: torch.nn.Module, head: torch.nn.Module, readout: Any = None) -> dict[str, torch.Tensor]:
    out = {f"model.{k}": v for k, v in model.state_dict().items()}
    out.update({f"head.{k}": v for k, v in head.state_dict().items()})
    if readout is not None:
        out.update({f"readout.{k}": v for k, v in readout.module.state_dict().items()})
    return out


def _load_weights(tensors: dict[str, torch.Tensor], model: torch.nn.Module, head: torch.nn.Module,
                  readout: Any = None) -> None:
    model.load_state_dict(_split_state(tensors, "model."))
    head.load_state_dict(_split_state(tensors, "head."))
    if readout is not None:
        readout.module.load_state_dict(_split_state(tensors, "readout."))


# --------------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------------
def train_epoch(model: torch.nn.Module, head: torch.nn.Module, cells: Tokens, y: np.ndarray, idx: np.ndarray,
                opt: torch.optim.Optimizer, loss_fn: torch.nn.Module, *, batch_size: int, pooling: str,
                device: torch.device, rng: np.random.Generator, grad_clip: float, rep: Reporter,
                epoch: int, amp: bool, readout: Any = None, features: Any = None,
                linear_l2: float = 0.0) -> tuple[float, bool]:
    """One pass over the training cells, in random batches of cells of similar length (``length_batches``:
    less padding). With a linear ``readout`` (``readout.Readout``), its logits over ``features`` are added to the
    head's and ``0.5 * linear_l2 * |W|^2`` to the loss. Returns (mean loss, stopped early because a stop was
    asked)."""
    model.train()
    head.train()
    if readout is not None:
        readout.module.train()
    idx = np.asarray(idx)
    batches = [idx[b] for b in length_batches(cells.lengths[idx], batch_size, rng)]
    n_batches = len(batches)
    total, n_seen = 0.0, 0
    params = [p for g in opt.param_groups for p in g["params"]]
    for b, bi in enumerate(batches):
        if rep.should_stop():
            return (total / max(n_seen, 1)), True
        g, x, m = (t.to(device, non_blocking=True) for t in collate(cells.take(bi)))
        target = torch.as_tensor(y[bi], device=device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = head(model.embed(g, x, m, pooling=pooling))
        loss_logits = logits.float()
        if readout is not None:
            loss_logits = loss_logits + readout.module(torch.from_numpy(features.rows(bi)).to(device))
        loss = loss_fn(loss_logits, target)
        if readout is not None and linear_l2 > 0:
            loss = loss + 0.5 * linear_l2 * readout.module.linear.weight.square().sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        opt.step()
        total += float(loss.detach()) * len(bi)
        n_seen += len(bi)
        rep.progress(b + 1, n_batches, epoch)
    return total / max(n_seen, 1), False


def evaluate(lm: LoadedModel, cells: Tokens, idx: np.ndarray, device: torch.device, batch_size: int,
             rep: Reporter | None = None, features: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings and class probabilities of ``cells[idx]`` in eval mode (``features``: of all cells, for a
    linear readout)."""
    lm.model.eval()
    if lm.head is not None:
        lm.head.eval()
    if lm.readout is not None:
        lm.readout.module.eval()
    idx = np.asarray(idx)
    emb, probs = infer(lm, cells.take(idx), device, batch_size, rep,
                       features.take(idx) if features is not None else None)
    assert probs is not None
    return emb, probs


def finetune(config: FinetuneConfig | dict, reporter: Reporter | None = None) -> FinetuneResult:
    """Job function ``app.engine.celllm.finetune:finetune``; every setting is a field of ``FinetuneConfig``
    (a dict is validated into one: run.json, notebooks).

    Returns the metrics dict (also written to ``run_dir/metrics.json``), with ``cancelled`` True when a
    stop request ended the run (a checkpoint is saved; ``resume`` continues it).
    """
    from app.engine.celllm.model_io import load_model, model_metadata, save_model
    from app.engine.checkpoint import load_tensors, save_tensors
    from app.engine.device import device_info, resolve_compute

    rep = ensure_reporter(reporter)
    cfg = FinetuneConfig.coerce(config)
    t0 = time.time()
    dev, _ = resolve_compute(cfg.device, cfg.threads)
    seed = cfg.seed
    torch.manual_seed(seed)
    run_path = Path(cfg.run_dir)
    rd = open_run_dir(run_path, "finetune", cfg.to_dict())
    rep.device(device_info(dev))

    # data, labels, split -----------------------------------------------------------------------------
    adata, labels, notes, label_key = load_labelled(cfg, rep)  # label_key: the column used
    split = make_split(cfg, adata, labels)
    for n in split.notes:
        rep.log(n, level="warning")
    classes = sorted(set(labels[split.train].tolist()))  # the head can only learn classes seen in train
    if len(classes) < 2:
        raise DataError("the training split has only one class", cfg.data,
                        "Use a label column with at least two well-populated classes.")
    cls_index = {c: i for i, c in enumerate(classes)}
    y = np.array([cls_index.get(c, -1) for c in labels], dtype=np.int64)
    obs_names = np.asarray(adata.obs_names).astype(str)
    write_json(run_path / "split.json", {
        "seed": seed, "split_key": cfg.split_key,
        "train": obs_names[split.train].tolist(), "val": obs_names[split.val].tolist(),
        "test": obs_names[split.test].tolist()})
    rep.log(f"split: {len(split.train)} train, {len(split.val)} val, {len(split.test)} test cells; "
            f"{len(classes)} classes")

    # model ---------------------------------------------------------------------------------------------
    init_dir = resolve_model_dir(cfg.init)
    model, mcfg, vocab, extra = load_model(init_dir, dev)
    extra = dict(extra or {})
    pooling, line = resolve_pooling(cfg.pooling, extra.get("pooling"), init_dir)
    rep.log(line)
    model_max_len = mcfg.get("max_len") if isinstance(mcfg, dict) else getattr(mcfg, "max_len", None)
    max_len = int(cfg.max_len or model_max_len or FINETUNE_MAX_LEN)
    rep.log(f"starting model: {init_dir}")
    gm = match_genes(adata.var_names, list(vocab), rep, adata)
    from app.data.singlecell import counts_matrix

    counts = counts_matrix(adata)
    check_cells_have_counts(counts, gm.data_to_vocab, cfg.data)
    cells = tokenize_counts(counts, np.asarray(gm.data_to_vocab), max_len=max_len)
    head = ClassifierHead(model_dim(mcfg), len(classes), cfg.head_dropout).to(dev)
    # the baseline first: the cls+linear readout starts from its fit (same training cells either way)
    rep.log(f"fitting the {cfg.baseline} baseline on the training cells")
    from app.engine.celllm.baseline import fit_celltypist, log_normalise, logistic_baseline

    lognorm = log_normalise(counts)
    linear = cfg.readout == "cls+linear"
    base = logistic_baseline(counts, labels, split.train, split.test, classes, lognorm=lognorm,
                             n_top_genes=cfg.baseline_genes, seed=seed, method=cfg.baseline,
                             keep_fit=linear)
    base_pred = base.pop("predictions")
    readout, feats = None, None
    if linear:
        from app.engine.celllm.readout import from_fit

        fit = base.pop("fit", None) or fit_celltypist(lognorm, labels.astype(str), split.train, seed=seed)
        if list(fit.classes) != classes:
            raise DataError("internal: the linear readout's classes differ from the head's", cfg.data,
                            "Report this with the data's label column.")
        readout = from_fit(fit, adata.var_names, cfg.linear_init)
        readout.module.to(dev)
        feats = readout.features(counts, adata.var_names)
        if cfg.linear_init == "baseline":  # training starts exactly at the baseline's predictions
            torch.nn.init.zeros_(head.linear.weight)
            torch.nn.init.zeros_(head.linear.bias)
        rep.log(f"readout cls+linear: linear path over {len(readout.genes):,} genes (the baseline's selection), "
                f"from {'the baseline fit' if cfg.linear_init == 'baseline' else 'zero'}")
    depth = mcfg.get("depth") if isinstance(mcfg, dict) else getattr(mcfg, "depth", None)
    counts_p = apply_freeze(model, cfg.freeze, depth)
    rep.log(f"freeze={cfg.freeze}: {counts_p['trainable']:,} trainable, {counts_p['frozen']:,} frozen "
            "encoder parameters")
    groups = [{"params": list(head.parameters()), "lr": cfg.head_lr}]
    preset_name = mcfg.get("preset") if isinstance(mcfg, dict) else getattr(mcfg, "preset", None)
    enc_lr = cfg.lr if cfg.lr is not None else FINETUNE_LR_BY_PRESET.get(str(preset_name), 1e-4)
    groups += encoder_groups(model, enc_lr, cfg.layer_lr_decay, depth)
    if readout is not None:  # its L2 is in the loss (as a logistic regression's), not AdamW's decay
        groups.append({"params": list(readout.module.parameters()), "weight_decay": 0.0,
                       "lr": float(cfg.linear_lr if cfg.linear_lr is not None else cfg.head_lr)})
    opt = make_optimizer(groups, cfg.weight_decay, dev)
    loss_fn = torch.nn.CrossEntropyLoss(
        weight=class_weights(y[split.train], len(classes), cfg.class_weight).to(dev),
        label_smoothing=cfg.label_smoothing)
    amp = dev.type == "cuda" and torch.cuda.is_bf16_supported()

    # resume ---------------------------------------------------------------------------------------------
    start_epoch, best_f1, best_epoch, bad, history = 0, -1.0, -1, 0, []
    last = rd.last_checkpoint() if cfg.resume else None
    if cfg.resume:
        rd.rewind_to_checkpoint()  # metrics.jsonl rows after the checkpoint would be replayed
        if last is None:
            rep.log("resume asked for but the run folder has no checkpoint: starting from the beginning")
    else:
        rd.truncate_metrics(0)  # a fresh run in a reused folder must not inherit an old history
    if last is not None:
        tensors, meta = load_tensors(last, device=dev)
        if list(meta.get("classes", [])) != classes:
            raise DataError("the checkpoint was trained on other classes than this data split", last,
                            "Resume with the same data, labels, seed and split settings, or start a new run.")
        _load_weights(tensors, model, head, readout)
        _opt_load(opt, tensors, meta["param_groups"])
        start_epoch, best_f1, best_epoch = int(meta["epoch"]), float(meta["best_f1"]), int(meta["best_epoch"])
        bad, history = int(meta["bad_epochs"]), list(meta.get("history", []))
        rep.log(f"resumed from {last} after epoch {start_epoch}")

    lm = LoadedModel(model, mcfg, list(vocab), extra, init_dir, head=head, classes=classes, pooling=pooling,
                     readout=readout)
    base_meta = {**model_metadata(mcfg, list(vocab), extra), "classes": classes, "pooling": pooling}
    bs, epochs, patience = cfg.batch_size, cfg.epochs, cfg.patience
    rng = np.random.default_rng(seed + 1000 * start_epoch)  # a resumed run does not replay epoch 0's order
    best_file = run_path / "best.safetensors"
    cancelled = False
    epoch = start_epoch
    from app.engine.celllm import live as live_mod

    live = live_mod.for_finetune(
        run_path, n_cells=cfg.live_cells, seed=seed, model=model, head=head, classes=classes, cells=cells,
        labels=labels, cell_ids=obs_names, counts=counts, label_key=label_key,
        batches=live_mod.column_values(adata.obs, cfg.batch_key, cfg.data), batch_key=cfg.batch_key,
        device=dev, pooling=pooling, reporter=rep, resume_epoch=start_epoch if last is not None else None,
        readout=readout, features=feats)
    steps_per_epoch = math.ceil(len(split.train) / bs)
    t_loop, c_loop = time.perf_counter(), time.process_time()
    t_train, c_train, n_trained = 0.0, 0.0, 0  # for the training cells/s the benchmark reports
    if live is not None and start_epoch == 0:
        live.refresh(0, 0)  # epoch 0: where learning starts
    l2 = cfg.linear_l2 / max(len(split.train), 1)  # a logistic regression's 1/C on a summed loss
    if readout is not None and cfg.linear_init == "baseline" and start_epoch == 0:
        # epoch 0 is the baseline itself: early stopping keeps it unless training beats it on validation
        _, vprobs = evaluate(lm, cells, split.val, dev, max(bs, 64), features=feats)
        best_f1 = classification_scores(labels[split.val], np.array(classes)[vprobs.argmax(1)], classes)["macro_f1"]
        best_epoch = 0
        save_tensors(best_file, _weights(model, head, readout), {"epoch": 0, "classes": classes})
        rep.log(f"epoch 0 (the baseline's linear path): val macro-F1 {best_f1:.3f}")
    for epoch in range(start_epoch, epochs):
        t_ep, c_ep = time.perf_counter(), time.process_time()
        train_loss, stopped = train_epoch(
            model, head, cells, y, split.train, opt, loss_fn, batch_size=bs, pooling=pooling, device=dev,
            rng=rng, grad_clip=cfg.grad_clip, rep=rep, epoch=epoch, amp=amp, readout=readout,
            features=feats, linear_l2=l2)
        t_train += time.perf_counter() - t_ep
        c_train += time.process_time() - c_ep
        n_trained += len(split.train)
        if stopped:
            cancelled = True
            break
        _, vprobs = evaluate(lm, cells, split.val, dev, max(bs, 64), features=feats)
        vpred = np.array(classes)[vprobs.argmax(1)]
        vs = classification_scores(labels[split.val], vpred, classes)
        row = {"epoch": epoch + 1, "train_loss": train_loss, "val_macro_f1": vs["macro_f1"],
               "val_accuracy": vs["accuracy"]}
        history.append(row)
        rd.append_metrics(row)
        rep.metrics(epoch + 1, {k: v for k, v in row.items() if k != "epoch"}, split="val", epoch=epoch + 1)
        rep.log(f"epoch {epoch + 1}: train loss {train_loss:.4f}, val macro-F1 {vs['macro_f1']:.3f}, "
                f"val accuracy {vs['accuracy']:.3f}")
        if live is not None:
            live.refresh(epoch + 1, (epoch + 1) * steps_per_epoch)
        if vs["macro_f1"] > best_f1:
            best_f1, best_epoch, bad = vs["macro_f1"], epoch + 1, 0
            save_tensors(best_file, _weights(model, head, readout), {"epoch": epoch + 1, "classes": classes})
        else:
            bad += 1
        _save_ckpt(rd, model, head, opt, base_meta, rep, readout, epoch=epoch + 1, best_f1=best_f1,
                   best_epoch=best_epoch, bad_epochs=bad, history=history)
        if bad > 0 and bad >= patience:  # patience 0: stop at the first epoch that does not improve
            rep.log(f"early stop: no better validation macro-F1 for {patience} epoch(s); best epoch {best_epoch}")
            break
    loop_seconds, loop_cpu = time.perf_counter() - t_loop, time.process_time() - c_loop
    if cancelled:
        _save_ckpt(rd, model, head, opt, base_meta, rep, readout, epoch=epoch, best_f1=best_f1, best_epoch=best_epoch,
                   bad_epochs=bad, history=history)
        rep.log("cancelled: checkpoint saved; run again with resume to continue")
        return FinetuneResult(cancelled=True, run_dir=str(run_path), epochs_done=epoch, history=history)

    # test with the best epoch -------------------------------------------------------------------------
    if best_file.is_file():
        tensors, _ = load_tensors(best_file, device=dev)
        _load_weights(tensors, model, head, readout)
    rep.check_cancel()
    temb, tprobs = evaluate(lm, cells, split.test, dev, max(bs, 64), rep, features=feats)
    tpred = np.array(classes)[tprobs.argmax(1)]
    test_scores = classification_scores(labels[split.test], tpred, classes)

    # save -------------------------------------------------------------------------------------------------
    model_dir = run_path / MODEL_SUBDIR
    out_extra = {**extra, "pooling": pooling, "task": "annotation", "label_key": label_key,
                 "classes": classes, "finetuned_from": str(init_dir), "max_len": max_len,
                 "readout": cfg.readout}
    save_model(model_dir, model, mcfg, list(vocab), json_safe(out_extra))
    save_tensors(model_dir / HEAD_FILE, {f"head.{k}": v for k, v in head.state_dict().items()},
                 {"classes": classes, "pooling": pooling, "label_key": label_key})
    if readout is not None:
        readout.save(model_dir, classes)
    rep.artifact("model", str(model_dir))
    emb_path = Path(rd.save_array("test_embeddings", temb.astype(np.float32)))
    rep.artifact("embedding", str(emb_path))
    import pandas as pd

    from app.data.atomic import atomic_path

    pred_df = pd.DataFrame({
        "cell": obs_names[split.test], "true": labels[split.test], "celllm": tpred,
        "celllm_confidence": tprobs.max(1).astype(np.float32), "baseline": base_pred})
    pred_path = run_path / "test_predictions.csv"
    with atomic_path(pred_path) as tmp:
        pred_df.to_csv(tmp, index=False)
    rep.artifact("predictions", str(pred_path))

    test_only = list(split.test_only_classes)
    metrics = {
        "test": test_scores,
        "baseline": base,
        "n_train": len(split.train), "n_val": len(split.val), "n_test": len(split.test),
        "classes": classes, "test_only_classes": test_only, "small_classes": list(split.small_classes),
        "label_key": label_key, "notes": notes + list(split.notes),
        "best_epoch": best_epoch, "best_val_macro_f1": best_f1, "epochs_run": len(history),
        "history": history, "gene_match_rate": float(gm.match_rate), "max_len": max_len,
        "freeze": cfg.freeze, "lr": enc_lr, "readout": cfg.readout, "pooling": pooling, "init": str(init_dir),
        "seed": seed, "device": str(dev),
        "seconds": round(time.time() - t0, 2), "run_dir": str(run_path),
        "timing": {"loop_seconds": round(loop_seconds, 3), "train_seconds": round(t_train, 3),
                   "train_cells_per_s": round(n_trained / t_train, 1) if t_train > 0 else None,
                   # CPU time: what the figures would be on a quiet machine (wall time counts other users' load)
                   "loop_cpu_seconds": round(loop_cpu, 3), "train_cpu_seconds": round(c_train, 3),
                   "train_cells_per_cpu_s": round(n_trained / c_train, 1) if c_train > 0 else None,
                   "live_seconds": round(sum(r["seconds"] for r in live.refreshes), 3) if live else 0.0},
    }
    result = FinetuneResult.from_dict(metrics)
    metrics_path = run_path / "metrics.json"
    write_json(metrics_path, result)
    rep.artifact("metrics", str(metrics_path))
    rep.log(f"test: CellLM accuracy {test_scores['accuracy']:.3f}, macro-F1 {test_scores['macro_f1']:.3f}; "
            f"baseline accuracy {base['accuracy']:.3f}, macro-F1 {base['macro_f1']:.3f}")
    if test_only:
        rep.log("classes in test but not in train (counted as errors): " + ", ".join(test_only), level="warning")
    return result


def _save_ckpt(rd: Any, model: torch.nn.Module, head: torch.nn.Module, opt: torch.optim.Optimizer,
               base_meta: dict, rep: Reporter, readout: Any = None, **progress: Any) -> None:
    """Checkpoint after ``progress['epoch']`` epochs (also on cancel) with everything ``resume`` needs.

    ``base_meta`` holds the model's config + vocabulary (so a checkpoint file alone can be an ``init`` or
    ``model``) and the classes; ``progress`` the epoch counters and history."""
    tensors = _weights(model, head, readout)
    opt_t, groups = _opt_tensors(opt)
    tensors.update(opt_t)
    meta = {**base_meta, **progress, "param_groups": groups}
    path = rd.save_checkpoint(tensors, json_safe(meta), step=int(progress["epoch"]))
    rep.artifact("checkpoint", str(path))


__all__ = ["Cancelled", "FinetuneConfig", "apply_freeze", "class_weights", "encoder_groups", "finetune",
           "stratified_subsample"]
