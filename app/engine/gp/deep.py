"""Fit and predict with the deep genomic-prediction networks (DNNGP, DeepGS, DLGWAS) behind ``base.FitFn``.

Every fit sees training lines only. The phenotype is z-scored on those lines (predictions are
back-transformed to the trait's scale), early stopping watches an inner validation split of those lines
(seeded, restoring the best weights), missing calls are imputed with the training lines' marker means
(DLGWAS keeps them as its 4th one-hot class) and a collapse to a constant prediction is reported in
``notes.warnings``. ``params["ensemble"] > 1`` averages that many networks, each early-stopped on its own
inner split (an honest bagging that steadies the noisy small-sample early stopping).

Each model has presets: the original recipe ("v1"/"v3" for DNNGP, "original" for DeepGS and DLGWAS) and the
recipe that measured best under honest cross-validation on wheat599 (the default; see ``MEASURED``).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from app.data.errors import DataError
from app.data.genotype import GenotypeMatrix, GenotypePCA, additive, fit_pca, marker_means, one_hot
from app.data.jsonsafe import json_safe, write_json
from app.engine.checkpoint import load_tensors, save_tensors
from app.engine.device import resolve_device
from app.engine.gp.base import FitNotes
from app.engine.gp.parallel import SharedReporter, run_fits
from app.engine.gp.precision import resolve_precision, train_autocast
from app.engine.reporter import Reporter, ensure_reporter
from app.models.gp import DLGWAS, DNNGP, DeepGS, set_dropout_generator
from app.models.gp.deepgs import pooled_length

FORMAT_VERSION = 1
MIN_LINES = 10
COLLAPSE_SD = 0.03
"""A fit whose predictions on its own training lines have an SD below this (in trait SDs) has collapsed."""

# Hyper-parameters per model. Keys a preset sets are overridden by the chosen preset unless the caller
# passes a value different from the default shown here (so a GUI can pass the whole dict back).
DEFAULTS: dict[str, dict[str, Any]] = {
    "dnngp": {
        "preset": "tuned",
        "pca_fit": "all",  # "all": PCA on every genotyped line (the original); "train": training lines only
        "variance": 0.8,  # the original's 0.95 keeps ~n PCs on small panels (maize282: 215 for 279 lines)
        # at most this many PCs per training line (0: no cap): 139 PCs on maize282's 223 training lines
        # measured r 0.12, 54 PCs 0.39 (GBLUP 0.53); wheat599's 93 PCs on 479 lines 0.57
        "pcs_per_line": 0.25,
        "act": "relu",
        "optimizer": "adam",
        "lr": 1e-3,
        "loss": "mse",
        "dropout1": 0.5,
        "dropout2": 0.5,
        "l2": True,
        "weight_decay": 0.0,
        "batch_size": 64,
        "epochs": 150,
        "patience": 25,
        # early stopping cannot end a fit before this epoch (the best inner-validation weights are still
        # restored): DNNGP's validation loss on 20-50 lines is so noisy that patience 25 stopped good fits at
        # epoch 5-16; "tuned" trains every epoch and keeps the best
        "min_epochs": 150,
        "plateau_factor": 0.8,
        "plateau_patience": 25,
        "monitor": "loss",
        "val_frac": 0.1,
        "ensemble": 1,
        "trainer": "auto",  # stacked on a GPU; on a CPU each network alone, one per thread (measured faster)
        "precision": "fp32",  # PRECISIONS: the arithmetic of the training steps' convolutions and dense layers
    },
    "deepgs": {
        "preset": "adam",
        "optimizer": "adam",
        "lr": 1e-3,
        "momentum": 0.5,
        "weight_decay": 1e-5,
        "dropouts": [0.2, 0.1, 0.05],
        "batch_size": 30,
        "epochs": 300,
        "patience": 30,
        "min_epochs": 0,
        "plateau_factor": None,
        "plateau_patience": None,
        "monitor": "mae",
        "loss": "mse",
        "val_frac": 0.1,
        "ensemble": 3,
        "trainer": "auto",  # stacked on a GPU; on a CPU each network alone, one per thread (measured faster)
        "precision": "fp32",  # PRECISIONS: the arithmetic of the training steps' convolutions and dense layers
    },
    "dlgwas": {
        "preset": "tuned",
        "optimizer": "adam",
        "lr": 1e-3,
        "loss": "mse",
        "dropout": 0.75,
        "isru_a": 0.03,
        "l2": True,
        "weight_decay": 0.0,
        "batch_size": 32,
        "epochs": 200,
        "patience": 10,
        "min_epochs": 0,
        "plateau_factor": None,
        "plateau_patience": None,
        "monitor": "mae",
        "val_frac": 0.1,
        "ensemble": 1,
        "trainer": "auto",  # stacked on a GPU; on a CPU each network alone, one per thread (measured faster)
        "precision": "fp32",  # PRECISIONS: the arithmetic of the training steps' convolutions and dense layers
    },
}

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "dnngp": {
        # Paper era (2023): ReLU, Adam, MSE (the paper's lr 0.01 diverged here; 1e-3 measured better), PCs to
        # 95 % variance, early stopping with patience 25 from the first epoch (the default until 2026-12-02).
        "v1": {"act": "relu", "optimizer": "adam", "lr": 1e-3, "loss": "mse", "variance": 0.95, "min_epochs": 0,
               "pcs_per_line": 0.0},
        # Current v3.1: swish, Adadelta (the README's lr 1), 1 - concordance correlation; PCs and stopping as v1.
        "v3": {"act": "swish", "optimizer": "adadelta", "lr": 1.0, "loss": "ccc", "variance": 0.95,
               "min_epochs": 0, "pcs_per_line": 0.0},
        # v1's network and optimiser on PCs to 80 % variance, at most one per 4 training lines (wheat599: 93
        # PCs instead of 251; maize282: ~55 instead of 215): fewer inputs for a 64 x k -> 3 dense layer on a few
        # hundred lines, and 2.5-4x cheaper a step; trained all 150 epochs keeping the best inner-validation
        # epoch (the default; README).
        "tuned": {"act": "relu", "optimizer": "adam", "lr": 1e-3, "loss": "mse", "variance": 0.8, "min_epochs": 150,
                  "pcs_per_line": 0.25},
    },
    "deepgs": {
        # The R package: SGD lr 0.01, momentum 0.5, up to 6000 epochs, patience 600 (near collapse on wheat599).
        "original": {"optimizer": "sgd", "lr": 0.01, "momentum": 0.5, "weight_decay": 1e-5, "batch_size": 30,
                     "epochs": 6000, "patience": 600, "monitor": "mae", "ensemble": 1},
        # Same network with Adam, averaged over 3 inner splits (the default).
        "adam": {},
    },
    "dlgwas": {
        # The repository: batch 250, patience 5 (stops after ~15-23 epochs: under-fits small panels).
        "original": {"optimizer": "adam", "lr": 1e-3, "batch_size": 250, "epochs": 1000, "patience": 5,
                     "monitor": "mae"},
        # Batch 32 (15 steps an epoch on 480 lines instead of 2), restore best (the default).
        "tuned": {},
    },
}


# Pearson r measured with these defaults on wheat599 (599 lines x 1,279 DArT markers), 5-fold CV (KFold
# shuffle, random_state=1), one seed, CPU, on a loaded 2-core box; GBLUP (REML) on the same folds for reference.
# "folds" < 5: only the first folds were run (DNNGP and DLGWAS cost minutes per fold there).
MEASURED: dict[str, dict[str, Any]] = {
    "gblup": {"E1": 0.517, "E2": 0.463, "E3": 0.362, "E4": 0.454, "folds": 5},
    "deepgs": {"E1": 0.537, "E2": 0.413, "E3": 0.362, "E4": 0.484, "folds": 5,
               "note": "ensemble 3; ~42 CPU-s per fold (1 thread)"},
    "deepgs_single": {"E1": 0.500, "E2": 0.393, "E3": 0.339, "E4": 0.429, "folds": 5, "note": "ensemble 1"},
    "deepgs_original": {"E1": 0.482, "folds": 1, "note": "SGD preset, 2000 epochs max (best 721); GBLUP 0.461"},
    "dlgwas": {"E1": 0.514, "E2": 0.453, "E3": 0.379, "E4": 0.429, "folds": 2,
               "gblup_same_folds": {"E1": 0.530, "E2": 0.473, "E3": 0.377, "E4": 0.417}},
    "dnngp_tuned": {"E1": 0.569, "folds": 5, "note": "bench gp's repeat-1 folds (GBLUP 0.511 there; v1 0.346); "
                    "93 PCs, all 150 epochs, best inner-validation epoch"},
    "dnngp_v1": {"E1": 0.447, "folds": 3, "note": "150 epochs max (best 86-98); 0.439 with 60",
                 "gblup_same_folds": {"E1": 0.505}},
    "dnngp_v3": {"E1": 0.400, "folds": 3, "note": "60 epochs max"},
}


# ---------------------------------------------------------------------------------------------- params
def resolve_params(model: str, params: dict[str, Any] | None) -> dict[str, Any]:
    """Defaults < the chosen preset < values the caller changed from the defaults.

    Raises:
        DataError: unknown model, unknown key or unknown preset.
    """
    if model not in DEFAULTS:
        raise DataError(f"unknown deep model {model!r}", None, f"use one of {', '.join(DEFAULTS)}")
    defaults = DEFAULTS[model]
    params = dict(params or {})
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise DataError(f"unknown {model} parameter(s): {', '.join(unknown)}", None,
                        f"known parameters: {', '.join(defaults)}")
    preset = params.get("preset", defaults["preset"])
    if preset not in PRESETS[model]:
        raise DataError(f"unknown {model} preset {preset!r}", None, f"use one of {', '.join(PRESETS[model])}")
    out = {**defaults, **PRESETS[model][preset], "preset": preset}
    for k, v in params.items():
        if k == "preset":
            continue
        if k not in PRESETS[model][preset] or v != defaults[k]:
            out[k] = v
    return out


# --------------------------------------------------------------------------------------- input checks
def _check_inputs(train: GenotypeMatrix, y: np.ndarray) -> tuple[np.ndarray, bool]:
    """y as float64 (n, t) and whether it came 1-D; DataError on anything a fit cannot use."""
    y = np.asarray(y, dtype=np.float64)
    one_d = y.ndim == 1
    if one_d:
        y = y[:, None]
    if y.ndim != 2 or y.shape[1] < 1:
        raise DataError(f"phenotypes must be 1-D (n,) or 2-D (n, traits), got shape {np.shape(y)}")
    if y.shape[0] != train.n_samples:
        raise DataError(
            f"{train.n_samples} genotyped training lines but {y.shape[0]} phenotype values",
            train.source or None, "pass one phenotype row per training line, in the genotypes' order")
    if not np.isfinite(y).all():
        bad = int((~np.isfinite(y)).any(axis=1).sum())
        raise DataError(f"{bad} training line(s) have a missing (NaN) or infinite phenotype", None,
                        "drop lines without a phenotype before fitting (join_phenotypes does this)")
    if train.n_markers < 1:
        raise DataError("the genotypes have no markers", train.source or None, "check the marker QC")
    if y.shape[0] < MIN_LINES:
        raise DataError(f"only {y.shape[0]} training lines; a deep model needs at least {MIN_LINES}", None,
                        "use more lines, or GBLUP for very small panels")
    sd = y.std(axis=0)
    if (sd <= 1e-12 * np.maximum(1.0, np.abs(y).max(axis=0))).any():
        cols = [str(i) for i in np.flatnonzero(sd <= 1e-12 * np.maximum(1.0, np.abs(y).max(axis=0)))]
        raise DataError(f"the phenotype is constant on the training lines (trait column {', '.join(cols)})",
                        None, "nothing to predict: choose another trait or more lines")
    return y, one_d


def _check_same_markers(ids: list[str], geno: GenotypeMatrix, what: str) -> None:
    got = [str(v) for v in geno.markers["id"]]
    if got != ids:
        n_common = len(set(got) & set(ids))
        raise DataError(
            f"{what} have {len(got)} markers, the model {len(ids)} ({n_common} in common, or another order)",
            geno.source or None,
            "put the lines on the model's markers first (app.data.genotype.align_markers)")


# --------------------------------------------------------------------------------------- encoding
@dataclass
class Encoder:
    """Turns genotypes into a network's input, with what it learnt from the training lines."""

    kind: str  # dnngp / deepgs / dlgwas
    marker_ids: list[str]
    coding: str
    means: np.ndarray  # training-line marker means (imputation)
    pca: GenotypePCA | None = None

    def __call__(self, geno: GenotypeMatrix) -> np.ndarray:
        _check_same_markers(self.marker_ids, geno, "these lines")
        g = GenotypeMatrix(geno.calls, geno.samples, geno.markers, coding=self.coding, source=geno.source)
        if self.kind == "dlgwas":
            return np.ascontiguousarray(one_hot(g).transpose(0, 2, 1))  # (n, 4, M)
        x = additive(g, means=self.means)
        if self.kind == "dnngp":
            assert self.pca is not None
            return self.pca.transform(x)
        return x


def _make_net(kind: str, n_in: int, n_out: int, cfg: dict[str, Any]) -> nn.Module:
    if kind == "dnngp":
        return DNNGP(n_in, act=cfg["act"], dropout1=cfg["dropout1"], dropout2=cfg["dropout2"], n_out=n_out)
    if kind == "deepgs":
        return DeepGS(n_in, n_out=n_out, dropouts=tuple(cfg["dropouts"]))
    return DLGWAS(n_in, n_out=n_out, dropout=cfg["dropout"], isru_a=cfg["isru_a"])


# --------------------------------------------------------------------------------------- training
def inner_split(n: int, val_frac: float, seed: int, member: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(fit rows, validation rows) of the ``n`` training lines for early stopping; seeded, disjoint."""
    if not 0.0 < val_frac < 1.0:
        raise DataError(f"val_frac must be in (0, 1), got {val_frac}")
    n_val = min(max(2, round(val_frac * n)), n - 2)
    perm = np.random.default_rng([seed, member, 7]).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def _ccc_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - Lin's concordance correlation, mean over traits."""
    mp, mt = pred.mean(0), target.mean(0)
    vp, vt = pred.var(0, unbiased=False), target.var(0, unbiased=False)
    cov = ((pred - mp) * (target - mt)).mean(0)
    return (1 - 2 * cov / (vp + vt + (mp - mt) ** 2 + 1e-8)).mean()


def _loss_fn(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if name == "mse":
        return nn.functional.mse_loss
    if name == "ccc":
        return _ccc_loss
    raise DataError(f"unknown loss {name!r}", None, "use mse or ccc")


def _optimizer(cfg: dict[str, Any], params: Any) -> torch.optim.Optimizer:
    name, lr, wd = cfg["optimizer"], float(cfg["lr"]), float(cfg.get("weight_decay") or 0.0)
    # not fused=True: torch 2.13's fused CPU Adam made DNNGP stop at epoch 12 instead of ~120 on wheat599 E1
    # fold 1 (test r 0.351 vs 0.458 unfused, same seeds); the per-parameter loop is what was validated
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=float(cfg.get("momentum") or 0.0), weight_decay=wd)
    if name == "adadelta":
        return torch.optim.Adadelta(params, lr=lr, weight_decay=wd)
    raise DataError(f"unknown optimizer {name!r}", None, "use adam, adamw, sgd or adadelta")


def _val_score(monitor: str, pred: torch.Tensor, target: torch.Tensor, loss: torch.Tensor) -> float:
    """Lower is better."""
    if monitor == "loss":
        return float(loss)
    if monitor == "mae":
        return float((pred - target).abs().mean())
    if monitor == "mse":
        return float(((pred - target) ** 2).mean())
    if monitor == "r":
        p, t = pred - pred.mean(0), target - target.mean(0)
        r = (p * t).sum(0) / (p.norm(dim=0) * t.norm(dim=0) + 1e-12)
        return -float(r.mean())
    raise DataError(f"unknown monitor {monitor!r}", None, "use loss, mae, mse or r")


@torch.no_grad()
def _forward_all(net: nn.Module, x: torch.Tensor, batch: int = 512) -> torch.Tensor:
    net.eval()
    return torch.cat([net(x[i:i + batch]) for i in range(0, x.shape[0], batch)]) if x.shape[0] else x.new_zeros(0)


def _train_member(net: nn.Module, x: torch.Tensor, y: torch.Tensor, fit_idx: np.ndarray, val_idx: np.ndarray,
                  cfg: dict[str, Any], gen: torch.Generator, reporter: Reporter, step0: int,
                  total: int) -> dict[str, Any]:
    """Train one network with early stopping on ``val_idx``; restore the best weights. Returns info."""
    loss_fn = _loss_fn(cfg["loss"])
    opt = _optimizer(cfg, net.parameters())
    sched = None
    if cfg.get("plateau_factor") and cfg.get("plateau_patience"):
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=float(cfg["plateau_factor"]),
                                                           patience=int(cfg["plateau_patience"]))
    use_l2 = bool(cfg.get("l2", False))
    dev = x.device
    autocast = train_autocast(cfg["precision"], dev)
    fit_t, val_t = torch.as_tensor(fit_idx, device=dev), torch.as_tensor(val_idx, device=dev)
    xv, yv = x[val_t], y[val_t]
    bs = max(1, int(cfg["batch_size"]))
    epochs, patience, min_epochs = int(cfg["epochs"]), int(cfg["patience"]), int(cfg["min_epochs"])
    best, best_epoch, best_state, wait = math.inf, 0, None, 0
    n_fit = len(fit_idx)
    epoch = 0
    for epoch in range(1, epochs + 1):
        reporter.check_cancel()
        net.train()
        perm = fit_t[torch.randperm(n_fit, generator=gen).to(dev)]
        tot, seen = 0.0, 0
        for i in range(0, n_fit, bs):
            idx = perm[i:i + bs]
            if len(idx) < 2 and n_fit > 1:  # BatchNorm needs 2 samples; CCC a variance
                continue
            with autocast:
                pred = net(x[idx])
            loss = loss_fn(pred.float(), y[idx])  # the loss and the L2 penalty in fp32
            total_loss = loss + net.l2_penalty() if use_l2 else loss
            opt.zero_grad(set_to_none=True)
            total_loss.backward()
            opt.step()
            tot += float(loss.detach()) * len(idx)
            seen += len(idx)
        pv = _forward_all(net, xv)
        vloss = loss_fn(pv, yv)
        score = _val_score(cfg["monitor"], pv, yv, vloss)
        if not math.isfinite(score):
            score = math.inf
        step = step0 + epoch
        reporter.metrics(step, {"loss": tot / max(seen, 1)}, split="train", epoch=epoch)
        reporter.metrics(step, {"loss": float(vloss), cfg["monitor"]: score if cfg["monitor"] != "r" else -score},
                         split="val", epoch=epoch)
        reporter.progress(step, total, epoch=epoch)
        if sched is not None:
            sched.step(score)
        if score < best - 1e-7:
            best, best_epoch, wait = score, epoch, 0
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        else:
            wait += 1
            if wait >= patience and epoch >= min_epochs:
                break
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    return {"best_epoch": best_epoch, "epochs_run": epoch, "best_val": best}


# --------------------------------------------------------------------------------------- fitted model
@dataclass
class DeepModel:
    """A fitted deep GP model (one or more networks averaged); satisfies ``base.FittedModel``."""

    name: str
    config: dict[str, Any]
    encoder: Encoder
    nets: list[nn.Module]
    y_mean: np.ndarray
    y_sd: np.ndarray
    one_d: bool
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    notes: FitNotes = field(default_factory=FitNotes)
    _importance: np.ndarray | None = None

    @property
    def marker_ids(self) -> list[str]:
        return self.encoder.marker_ids

    def _z_predict(self, x: np.ndarray) -> np.ndarray:
        xt = torch.as_tensor(x, dtype=torch.float32, device=self.device)
        preds = [_forward_all(net, xt).double().cpu().numpy() for net in self.nets]
        return np.mean(preds, axis=0)

    def member_predict(self, member: int, geno: GenotypeMatrix) -> np.ndarray:
        """One network's predictions on the trait's scale (the ensemble weighs them on that network's own
        inner validation lines, which the other networks may have trained on)."""
        xt = torch.as_tensor(self.encoder(geno), dtype=torch.float32, device=self.device)
        z = _forward_all(self.nets[member], xt).double().cpu().numpy()
        out = z * self.y_sd + self.y_mean
        return out[:, 0] if self.one_d else out

    def predict(self, geno: GenotypeMatrix) -> np.ndarray:
        """Predictions on the trait's original scale, (n,) or (n, traits) as the y given to fit."""
        z = self._z_predict(self.encoder(geno))
        out = z * self.y_sd + self.y_mean
        return out[:, 0] if self.one_d else out

    def saliency(self, geno: GenotypeMatrix) -> np.ndarray:
        """Per-marker saliency on these lines: mean over lines of |d prediction / d input|, summed over a
        marker's input channels (DLGWAS: 4 one-hot channels) and over traits; eval mode (no dropout).
        DNNGP's gradient w.r.t. the PC scores is mapped back to the markers through the PCA loadings."""
        x = torch.as_tensor(self.encoder(geno), dtype=torch.float32, device=self.device)
        m = len(self.marker_ids)
        total = np.zeros(m, dtype=np.float64)
        for net in self.nets:
            net.eval()
            n_out = int(self.y_mean.shape[0])
            for t in range(n_out):
                for i in range(0, x.shape[0], 256):
                    xb = x[i:i + 256].clone().requires_grad_(True)
                    net(xb)[:, t].sum().backward()  # eval mode: each line's output depends on its own input only
                    g = xb.grad.double()
                    if self.encoder.kind == "dnngp":
                        comp = torch.as_tensor(self.encoder.pca.components, dtype=torch.float64,
                                               device=self.device)
                        g = g @ comp  # ds/dx = components
                    elif self.encoder.kind == "dlgwas":
                        g = g.abs().sum(1)  # (n, M): sum over the 4 channels
                    total += g.abs().sum(0).cpu().numpy() * float(self.y_sd[t])
                    net.zero_grad(set_to_none=True)
        return total / (x.shape[0] * len(self.nets))

    def importance(self) -> np.ndarray | None:
        """Saliency per marker on the training lines (computed at fit time; saved with the model)."""
        return None if self._importance is None else self._importance.copy()

    def save(self, folder: str | Path) -> None:
        """``weights.safetensors`` (networks, y scaling, imputation means, PCA, importance) + ``model.json``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors: dict[str, torch.Tensor] = {}
        for i, net in enumerate(self.nets):
            for k, v in net.state_dict().items():
                tensors[f"net{i}.{k}"] = v
        arrays = {"y_mean": self.y_mean, "y_sd": self.y_sd, "marker_means": self.encoder.means}
        if self.encoder.pca is not None:
            arrays.update(self.encoder.pca.to_arrays())
        if self._importance is not None:
            arrays["importance"] = self._importance
        for k, v in arrays.items():
            tensors[k] = torch.as_tensor(np.asarray(v, dtype=np.float64))
        meta = {"format": "omicslab-gp-deep", "version": FORMAT_VERSION, "name": self.name}
        save_tensors(folder / "weights.safetensors", tensors, meta)
        doc = {
            **meta,
            "config": self.config,
            "n_nets": len(self.nets),
            "n_in": _n_in(self.nets[0]),
            "n_out": int(self.y_mean.shape[0]),
            "one_d": self.one_d,
            "coding": self.encoder.coding,
            "marker_ids": self.marker_ids,
            "y_mean": self.y_mean.tolist(),
            "y_sd": self.y_sd.tolist(),
            "notes": {"warnings": self.notes.warnings, "info": json_safe(self.notes.info)},
        }
        write_json(folder / "model.json", doc, indent=1)


def _n_in(net: nn.Module) -> int:
    return int(net.n_features if isinstance(net, DNNGP) else net.n_markers)


def _check_sizes(kind: str, doc: dict[str, Any], cfg: dict[str, Any], tensors: dict[str, torch.Tensor],
                 where: Path) -> None:
    """Before any network is allocated: the sizes model.json asks for must be those of the saved weights.

    The networks are first built on PyTorch's "meta" device (shapes only, no memory), so a crafted
    model.json asking for millions of inputs or units is refused instead of exhausting memory.
    """
    bad = DataError("model.json does not match its weights file (sizes changed or the file was crafted)", where,
                    "Use the model folder exactly as `gp train` wrote it, or train the model again.")
    try:
        n_nets, n_in, n_out = int(doc["n_nets"]), int(doc["n_in"]), int(doc["n_out"])
        if not (1 <= n_nets <= 1000 and 1 <= n_in <= 10**8 and 1 <= n_out <= 10**4):
            raise bad
        with torch.device("meta"):
            probe = _make_net(kind, n_in, n_out, cfg)
        need = sum(t.numel() for t in probe.state_dict().values())
    except DataError:
        raise
    except Exception as exc:  # a config the networks cannot even be shaped from
        raise bad from exc
    saved = sum(t.numel() for k, t in tensors.items() if k.startswith("net"))
    if need * n_nets != saved:
        raise bad


def load_deep(folder: str | Path, device: str = "cpu") -> DeepModel:
    """Load a model written by ``DeepModel.save``.

    Raises:
        DataError: missing or foreign files.
    """
    folder = Path(folder)
    meta_path = folder / "model.json"
    if not meta_path.is_file():
        raise DataError("no model.json in the model folder", folder, "choose a folder written by a deep GP fit")
    try:
        doc = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"model.json is not valid JSON ({exc})", meta_path) from exc
    if doc.get("format") != "omicslab-gp-deep" or doc.get("name") not in DEFAULTS:
        raise DataError("model.json is not a deep GP model", meta_path, "choose a folder written by a deep GP fit")
    if int(doc.get("version", 0)) > FORMAT_VERSION:
        raise DataError(f"model format version {doc['version']} is newer than this app reads ({FORMAT_VERSION})",
                        meta_path, "update OmicsLab")
    dev = resolve_device(device)
    tensors, _ = load_tensors(folder / "weights.safetensors", device="cpu")
    kind, cfg = doc["name"], doc["config"]
    _check_sizes(kind, doc, cfg, tensors, meta_path)
    nets = []
    for i in range(int(doc["n_nets"])):
        net = _make_net(kind, int(doc["n_in"]), int(doc["n_out"]), cfg)
        prefix = f"net{i}."
        net.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
        nets.append(net.to(dev).eval())
    arr = {k: tensors[k].numpy() for k in tensors if "." not in k}
    pca = GenotypePCA.from_arrays(arr) if "pca_components" in arr else None
    enc = Encoder(kind, list(doc["marker_ids"]), doc["coding"], arr["marker_means"].astype(np.float32), pca)
    notes = FitNotes(list(doc["notes"]["warnings"]), dict(doc["notes"]["info"]))
    return DeepModel(kind, cfg, enc, nets, arr["y_mean"], arr["y_sd"], bool(doc["one_d"]), dev, notes,
                     arr.get("importance"))


# --------------------------------------------------------------------------------------- fitting
@dataclass
class _Prepared:
    """One fold's training data, encoded and z-scored on its training lines."""

    train: GenotypeMatrix
    enc: Encoder
    x_np: np.ndarray
    y_mean: np.ndarray
    y_sd: np.ndarray
    z: np.ndarray
    one_d: bool
    notes: FitNotes


def _prepare(kind: str, cfg: dict[str, Any], train: GenotypeMatrix, y: np.ndarray,
             all_geno: GenotypeMatrix | None) -> _Prepared:
    y2, one_d = _check_inputs(train, y)
    marker_ids = [str(v) for v in train.markers["id"]]
    means = marker_means(train)
    notes = FitNotes()
    pca = None
    if kind == "dnngp":
        if cfg["pca_fit"] not in ("all", "train"):
            raise DataError(f"pca_fit must be 'all' or 'train', got {cfg['pca_fit']!r}")
        src = train
        if cfg["pca_fit"] == "all" and all_geno is not None:
            _check_same_markers(marker_ids, all_geno, "all_geno (every genotyped line)")
            src = all_geno
        xa = additive(src, means=means)
        pca = fit_pca(xa, variance=float(cfg["variance"]))
        per_line = float(cfg.get("pcs_per_line") or 0.0)
        if per_line < 0:
            raise DataError(f"pcs_per_line must be >= 0 (0: no cap), got {per_line}")
        cap = max(1, int(per_line * train.n_samples)) if per_line > 0 else None
        if cap is not None and pca.n_components > cap:  # the cap counts training lines, whatever fits the PCA
            pca = fit_pca(xa, n_components=cap)
        notes.info.update(n_pcs=pca.n_components, pca_lines=src.n_samples,
                          pca_fit="all" if src is all_geno else "train")
    if kind == "deepgs" and pooled_length(train.n_markers) < 1:
        raise DataError(f"DeepGS needs at least 21 markers, got {train.n_markers}", None, "use GBLUP or DNNGP")
    enc = Encoder(kind, marker_ids, train.coding, means, pca)
    x_np = enc(train)
    y_mean, y_sd = y2.mean(axis=0), y2.std(axis=0)
    return _Prepared(train, enc, x_np, y_mean, y_sd, (y2 - y_mean) / y_sd, one_d, notes)


def _member_seeds(seed: int, member: int) -> tuple[int, int, int]:
    """(init, batch order, dropout) seeds of one ensemble member of a fit seeded ``seed``."""
    base = int(seed) * 1000 + member
    return base, base + 1, base + 2


def _finish(kind: str, cfg: dict[str, Any], prep: _Prepared, nets: list[nn.Module], infos: list[dict[str, Any]],
            val_ids: list[list[str]], dev: torch.device, rep: Reporter, t0: float) -> DeepModel:
    notes = prep.notes
    model = DeepModel(kind, cfg, prep.enc, nets, prep.y_mean, prep.y_sd, prep.one_d, dev, notes)
    zp = model._z_predict(prep.x_np)
    pred_sd = zp.std(axis=0)
    notes.info.update(
        best_epoch=[i["best_epoch"] for i in infos], epochs_run=[i["epochs_run"] for i in infos],
        best_val=[i["best_val"] for i in infos], inner_val_samples=val_ids, preset=cfg["preset"],
        max_epochs=int(cfg["epochs"]),  # the cap: an epochs_run below it is an early stop
        trainer=cfg["trainer"], precision=cfg["precision"], train_pred_sd=pred_sd.tolist(), device=str(dev),
        seconds=0.0)
    if (pred_sd < COLLAPSE_SD).any() or not np.isfinite(zp).all():
        msg = (f"{kind} collapsed to a (near-)constant prediction: SD of its predictions on the training lines "
               f"is {float(pred_sd.min()):.3g} trait SDs (DeepGS's known failure on small data); its predictions "
               "carry no ranking. Try the default preset, a larger lr, more epochs, or GBLUP.")
        notes.warnings.append(msg)
        rep.log(msg, level="warning")
    model._importance = model.saliency(prep.train)
    notes.info["seconds"] = round(time.perf_counter() - t0, 3)
    return model


def _member_fits(kind: str, cfg: dict[str, Any], tensors: list[tuple[torch.Tensor, torch.Tensor]],
                 splits: list[list[tuple[np.ndarray, np.ndarray]]], seeds: list[int], n_out: int,
                 dev: torch.device) -> list[tuple[int, nn.Module, Callable[[Reporter], dict[str, Any]]]]:
    """Every (training set, member) fit, networks built here in order under each member's init seed (the
    global RNG, before any worker starts); each fit draws its batch order and dropout masks from generators
    of its own seeds, so it gives the same network on any thread, alone or beside others."""
    rng_devices = [dev.index or 0] if dev.type == "cuda" else []
    epochs = int(cfg["epochs"])
    n_members = len(splits[0]) if splits else 0
    out: list[tuple[int, nn.Module, Callable[[Reporter], dict[str, Any]]]] = []
    for f, (x_t, z_t) in enumerate(tensors):
        for m, (fit_idx, val_idx) in enumerate(splits[f]):
            init_seed, order_seed, drop_seed = _member_seeds(seeds[f], m)
            with torch.random.fork_rng(devices=rng_devices):
                torch.manual_seed(init_seed)
                net = _make_net(kind, x_t.shape[-1], n_out, cfg).to(dev)

            def run(rep: Reporter, net: nn.Module = net, x_t: torch.Tensor = x_t, z_t: torch.Tensor = z_t,
                    fit_idx: np.ndarray = fit_idx, val_idx: np.ndarray = val_idx, order_seed: int = order_seed,
                    drop_seed: int = drop_seed, step0: int = (f * n_members + m) * epochs) -> dict[str, Any]:
                set_dropout_generator(net, torch.Generator(device=dev).manual_seed(drop_seed))
                try:
                    info = _train_member(net, x_t, z_t, fit_idx, val_idx, cfg,
                                         torch.Generator().manual_seed(order_seed), rep, step0,
                                         len(tensors) * n_members * epochs)
                finally:
                    set_dropout_generator(net, None)
                if isinstance(rep, SharedReporter):
                    rep.fit_done(info["epochs_run"])
                return info

            out.append((f, net, run))
    return out


def fit_folds(kind: str, trains: list[GenotypeMatrix], ys: list[np.ndarray], seeds: list[int], *,
              params: dict[str, Any] | None = None, device: str = "cpu", reporter: Reporter | None = None,
              all_geno: GenotypeMatrix | None = None) -> list[DeepModel]:
    """Fit one deep model on several training sets at once (the folds x repeats of a CV): with
    ``trainer="stacked"`` every fold's ensemble members train together (``app.engine.gp.stacked``); each
    fold's model is the one a separate fit with that fold's seed gives (same inits, inner splits, batch
    order and dropout masks). ``trainer="sequential"`` trains each network alone (the reference path): on a
    CPU with N torch threads, N networks at a time, one per worker thread (``app.engine.gp.parallel``; a
    network's result does not depend on the thread count). ``"auto"`` (default) stacks on CUDA and trains each
    network alone on a CPU, where that measured faster.
    """
    t0 = time.perf_counter()
    rep = ensure_reporter(reporter)
    cfg = resolve_params(kind, params)
    if cfg["trainer"] not in ("auto", "stacked", "sequential"):
        raise DataError(f"trainer must be 'auto', 'stacked' or 'sequential', got {cfg['trainer']!r}")
    if len(trains) != len(ys) or len(trains) != len(seeds):
        raise ValueError("one y and one seed per training set")
    dev = resolve_device(device)
    cfg = {**cfg, "precision": resolve_precision(cfg["precision"], dev)}
    if cfg["trainer"] == "auto":
        # On a CPU these small fits are compute-bound: the stack runs on one core (measured wheat599, 5 folds,
        # 5 epochs, one thread, CPU s: DeepGS 9.4 stacked vs 12.3 alone, DLGWAS 32.8 vs 21.7), while networks
        # trained alone fill every core (parallel.run_fits). On a GPU stacking removes launch overhead.
        cfg = {**cfg, "trainer": "stacked" if dev.type == "cuda" else "sequential"}
    preps = [_prepare(kind, cfg, tr, y, all_geno if kind == "dnngp" else None) for tr, y in zip(trains, ys,
                                                                                                   strict=True)]
    n_members = max(1, int(cfg["ensemble"]))
    splits = [[inner_split(p.train.n_samples, float(cfg["val_frac"]), sd, m) for m in range(n_members)]
              for p, sd in zip(preps, seeds, strict=True)]
    p0 = preps[0]
    rep.log(f"{kind}: {len(preps)} training set(s) x {n_members} network(s), {p0.train.n_samples} training lines, "
            f"{p0.train.n_markers} markers, input {tuple(p0.x_np.shape[1:])}, preset {cfg['preset']}, "
            f"{cfg['trainer']} trainer, device {dev}")
    tensors = [(torch.as_tensor(p.x_np, dtype=torch.float32, device=dev),
                torch.as_tensor(p.z, dtype=torch.float32, device=dev)) for p in preps]
    n_out = p0.z.shape[1]
    nets_per: list[list[nn.Module]] = [[] for _ in preps]
    infos_per: list[list[dict[str, Any]]] = [[] for _ in preps]
    if cfg["trainer"] == "stacked":
        from app.engine.gp.stacked import Member, train_members

        members = [Member(f, fi, vi, *_member_seeds(seeds[f], m))
                   for f in range(len(preps)) for m, (fi, vi) in enumerate(splits[f])]
        shapes = {p.x_np.shape[1:] for p in preps}
        trained: list[tuple[dict[str, torch.Tensor], dict[str, Any]]] = []
        for shape in shapes:  # DNNGP's PC count can differ between folds: one stack per input shape
            which = [i for i, mb in enumerate(members) if preps[mb.data].x_np.shape[1:] == shape]

            def make_s(shape: tuple[int, ...] = shape) -> nn.Module:
                return _make_net(kind, shape[-1], n_out, cfg).to(dev)

            got = train_members(make_s, tensors, [members[i] for i in which], cfg, _loss_fn(cfg["loss"]), rep)
            trained.extend(zip(which, got, strict=True))  # type: ignore[arg-type]
        for i, (sd, info) in sorted(trained, key=lambda t: t[0]):  # type: ignore[misc]
            mb = members[i]
            net = _make_net(kind, preps[mb.data].x_np.shape[-1], n_out, cfg).to(dev)
            net.load_state_dict(sd)
            nets_per[mb.data].append(net.eval())
            infos_per[mb.data].append(info)
    else:
        fits = _member_fits(kind, cfg, tensors, splits, seeds, n_out, dev)
        infos = run_fits([run for _, _, run in fits], rep, int(cfg["epochs"]), threads=torch.get_num_threads(),
                         device=dev)
        for (f, net, _), info in zip(fits, infos, strict=True):
            nets_per[f].append(net)
            infos_per[f].append(info)

    def finish(f: int) -> Callable[[Reporter], DeepModel]:
        val_ids = [[preps[f].train.samples[i] for i in vi] for _, vi in splits[f]]
        return lambda r: _finish(kind, cfg, preps[f], nets_per[f], infos_per[f], val_ids, dev, r, t0)

    # the saliency and training-line predictions of each fold, on the workers too
    out = run_fits([finish(f) for f in range(len(preps))], rep, 0, threads=torch.get_num_threads(), device=dev)
    secs = time.perf_counter() - t0
    for m in out:  # the fits ran together: each fold is charged an equal share
        m.notes.info["seconds"] = round(secs / len(out), 3)
    rep.log(f"{kind}: done in {secs:.1f} s, best epoch(s) {[m.notes.info['best_epoch'] for m in out][:5]}"
            + (" ..." if len(out) > 5 else ""))
    return out


def _fit(kind: str, train: GenotypeMatrix, y: np.ndarray, params: dict[str, Any] | None, seed: int, device: str,
         reporter: Reporter | None, all_geno: GenotypeMatrix | None) -> DeepModel:
    return fit_folds(kind, [train], [y], [seed], params=params, device=device, reporter=reporter,
                     all_geno=all_geno)[0]


def fit_dnngp(train: GenotypeMatrix, y: np.ndarray, *, params: dict[str, Any] | None = None, seed: int = 0,
              device: str = "cpu", reporter: Reporter | None = None,
              all_geno: GenotypeMatrix | None = None) -> DeepModel:
    """DNNGP on PC scores (>= 95 % variance, U*S) of all genotyped lines (``pca_fit="all"``, the
    original's transductive PCA; falls back to the training lines when ``all_geno`` is None) or of the
    training lines only (``pca_fit="train"``). See ``base.FitFn``."""
    return _fit("dnngp", train, y, params, seed, device, reporter, all_geno)


def fit_deepgs(train: GenotypeMatrix, y: np.ndarray, *, params: dict[str, Any] | None = None, seed: int = 0,
               device: str = "cpu", reporter: Reporter | None = None,
               all_geno: GenotypeMatrix | None = None) -> DeepModel:
    """DeepGS (8-32-1 CNN) on the additive coding. ``all_geno`` is not used. See ``base.FitFn``."""
    return _fit("deepgs", train, y, params, seed, device, reporter, None)


def fit_dlgwas(train: GenotypeMatrix, y: np.ndarray, *, params: dict[str, Any] | None = None, seed: int = 0,
               device: str = "cpu", reporter: Reporter | None = None,
               all_geno: GenotypeMatrix | None = None) -> DeepModel:
    """DLGWAS (dual-stream residual CNN, ISRU output) on one-hot AA/Aa/aa/missing. See ``base.FitFn``."""
    return _fit("dlgwas", train, y, params, seed, device, reporter, None)


FIT_FUNCTIONS = {"dnngp": fit_dnngp, "deepgs": fit_deepgs, "dlgwas": fit_dlgwas}


def fold_fitter(kind: str) -> Any:
    """``fit_many(trains, ys, seeds, *, params, device, reporter, all_geno) -> [DeepModel]`` for ``kind``:
    what the CV runner calls to fit every fold of a deep model at once."""

    def fit_many(trains: list[GenotypeMatrix], ys: list[np.ndarray], seeds: list[int], **kw: Any) -> list[DeepModel]:
        return fit_folds(kind, trains, ys, seeds, **kw)

    return fit_many
