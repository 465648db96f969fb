"""Train many networks of one architecture at once: the folds x repeats x ensemble members of a CV.

The deep GP networks are tiny, so one fit at a time spends its time in per-step overhead on one core. Here
every member's parameters are stacked (``torch.func.stack_module_state``) and one ``vmap``-ed
``grad_and_value`` call steps all of them; the optimiser is applied to the stacked tensors (Adam, AdamW,
SGD and Adadelta are element-wise, so stacking changes nothing; each member has its own learning rate for
its own plateau schedule).

What stays exactly per member (a member trained alone gives the same predictions, tested):
* its initial weights (``torch.manual_seed(init_seed)`` before the network is built, as a single fit does),
  its batch order (its own generator) and its dropout masks (its own generator, drawn outside ``vmap``);
* its own fit rows, validation rows and data (each fold has its own encoding and z-scored phenotype);
* early stopping on its validation rows with its own patience counter, plateau schedule and best weights
  (restored at the end); a member that stops leaves the stack, the others go on.

Members step together only when their batches have the same shape, so members are grouped by the number of
fit and validation rows and the input shape (a CV has one or two such groups); groups run one after another.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad_and_value, stack_module_state, vmap

from app.data.errors import DataError
from app.engine.gp.precision import train_autocast
from app.engine.reporter import Reporter


@dataclass(frozen=True)
class Member:
    """One network to train: which data it reads, its rows and its seeds."""

    data: int  # index into the ``data`` list given to :func:`train_members`
    fit_idx: np.ndarray  # rows of that data used for gradient steps
    val_idx: np.ndarray  # rows used for early stopping
    init_seed: int  # torch.manual_seed before the network is built
    order_seed: int  # generator of its batch order
    dropout_seed: int  # generator of its dropout masks


class _MaskedDropout(nn.Module):
    """Dropout whose mask is given from outside (so each member's masks come from its own generator)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = float(p)
        self.mask: torch.Tensor | None = None  # already scaled by 1 / (1 - p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.mask is None:
            return x
        return x * self.mask


class _WithPenalty(nn.Module):
    """``net`` returning (prediction, its L2 penalty) so both come from one functional call."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(x), self.net.l2_penalty()


class _UnfoldConv1d(nn.Module):
    """A stride-1 Conv1d as unfold + einsum (same ``weight``/``bias`` names and result).

    Under ``vmap`` a convolution with per-member weights becomes a grouped convolution, whose CPU backward
    was measured ~7x slower than this for DeepGS's 1->8 channel, kernel-18 layer. Used only on layers that
    read the network input: unfold's backward has no batching rule, and no gradient is needed there.
    """

    def __init__(self, conv: nn.Conv1d) -> None:
        super().__init__()
        if conv.stride != (1,) or conv.dilation != (1,) or conv.groups != 1:
            raise ValueError("only stride-1, undilated, ungrouped convolutions")
        self.weight, self.bias = conv.weight, conv.bias
        self.k = int(conv.kernel_size[0])
        pad = getattr(conv, "_pad", None)  # SameConv1d pads explicitly
        self.pad = tuple(pad) if pad is not None else (int(conv.padding[0]),) * 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.pad):
            x = nn.functional.pad(x, self.pad)
        out = torch.einsum("bclk,ock->bol", x.unfold(-1, self.k, 1), self.weight)
        return out if self.bias is None else out + self.bias[:, None]


def _swap_input_convs(net: nn.Module) -> None:
    """Replace the net's input convolutions (``INPUT_CONVS``) by :class:`_UnfoldConv1d`, in place."""
    for name in getattr(net, "INPUT_CONVS", ()):
        conv = getattr(net, name)
        if isinstance(conv, nn.Conv1d):
            setattr(net, name, _UnfoldConv1d(conv))


def _swap_dropouts(net: nn.Module) -> list[_MaskedDropout]:
    """Replace every ``nn.Dropout`` of ``net`` (in place) by a :class:`_MaskedDropout`; returns them in order."""
    out: list[_MaskedDropout] = []
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Dropout):
                md = _MaskedDropout(child.p)
                setattr(parent, name, md)
                out.append(md)
    return out


# ------------------------------------------------------------------------------------------ optimisers
class _StackedOptimizer:
    """Adam / AdamW / SGD (momentum) / Adadelta on stacked parameters, as ``torch.optim`` computes them, with
    one learning rate per member."""

    def __init__(self, cfg: dict[str, Any], params: dict[str, torch.Tensor], n: int) -> None:
        self.name = cfg["optimizer"]
        if self.name not in ("adam", "adamw", "sgd", "adadelta"):
            raise DataError(f"unknown optimizer {self.name!r}", None, "use adam, adamw, sgd or adadelta")
        self.wd = float(cfg.get("weight_decay") or 0.0)
        self.momentum = float(cfg.get("momentum") or 0.0)
        dev = next(iter(params.values())).device
        self.lr = torch.full((n,), float(cfg["lr"]), dtype=torch.float64, device=dev)
        self.t = 0
        self.state: dict[str, dict[str, torch.Tensor]] = {k: {} for k in params}

    def keep(self, keep: torch.Tensor) -> None:
        """Drop the members where ``keep`` is False."""
        self.lr = self.lr[keep]
        for st in self.state.values():
            for k in list(st):
                st[k] = st[k][keep]

    @torch.no_grad()
    def step(self, params: dict[str, torch.Tensor], grads: dict[str, torch.Tensor]) -> None:
        self.t += 1
        for k, p in params.items():
            g = grads[k]
            lr = self.lr.to(p.dtype).view(-1, *([1] * (p.dim() - 1)))
            st = self.state[k]
            if self.name == "adamw" and self.wd:
                p.mul_(1 - lr * self.wd)
            elif self.wd:
                g = g.add(p, alpha=self.wd)
            if self.name in ("adam", "adamw"):
                b1, b2, eps = 0.9, 0.999, 1e-8
                if not st:
                    st["m"], st["v"] = torch.zeros_like(p), torch.zeros_like(p)
                st["m"].lerp_(g, 1 - b1)
                st["v"].mul_(b2).addcmul_(g, g, value=1 - b2)
                bc1, bc2 = 1 - b1 ** self.t, 1 - b2 ** self.t
                denom = (st["v"].sqrt() / math.sqrt(bc2)).add_(eps)
                p.sub_(lr / bc1 * st["m"] / denom)
            elif self.name == "sgd":
                if self.momentum:
                    if "buf" not in st:
                        st["buf"] = g.clone()
                    else:
                        st["buf"].mul_(self.momentum).add_(g)
                    g = st["buf"]
                p.sub_(lr * g)
            else:  # adadelta, rho 0.9, eps 1e-6
                rho, eps = 0.9, 1e-6
                if not st:
                    st["sq"], st["acc"] = torch.zeros_like(p), torch.zeros_like(p)
                st["sq"].mul_(rho).addcmul_(g, g, value=1 - rho)
                delta = (st["acc"] + eps).sqrt_().div_((st["sq"] + eps).sqrt_()).mul_(g)
                st["acc"].mul_(rho).addcmul_(delta, delta, value=1 - rho)
                p.sub_(lr * delta)


class _Plateau:
    """``torch.optim.lr_scheduler.ReduceLROnPlateau`` (mode min, rel threshold 1e-4) for each member."""

    def __init__(self, factor: float, patience: int, n: int) -> None:
        self.factor, self.patience = float(factor), int(patience)
        self.best = [math.inf] * n
        self.bad = [0] * n

    def step(self, scores: Sequence[float], opt: _StackedOptimizer) -> None:
        for i, s in enumerate(scores):
            if s < self.best[i] * (1 - 1e-4):  # torch's "rel" test, kept as it is
                self.best[i], self.bad[i] = s, 0
            else:
                self.bad[i] += 1
            if self.bad[i] > self.patience:
                old = float(self.lr_of(opt, i))
                new = old * self.factor
                if old - new > 1e-8:
                    opt.lr[i] = new
                self.bad[i] = 0

    @staticmethod
    def lr_of(opt: _StackedOptimizer, i: int) -> float:
        return float(opt.lr[i])

    def keep(self, keep: list[bool]) -> None:
        self.best = [b for b, k in zip(self.best, keep, strict=True) if k]
        self.bad = [b for b, k in zip(self.bad, keep, strict=True) if k]


# ------------------------------------------------------------------------------------------ training
def _scores(monitor: str, pred: torch.Tensor, target: torch.Tensor, loss: torch.Tensor) -> list[float]:
    """Lower is better, one per member; ``pred``/``target`` (G, n, t), ``loss`` (G,)."""
    if monitor == "loss":
        v = loss
    elif monitor == "mae":
        v = (pred - target).abs().mean(dim=(1, 2))
    elif monitor == "mse":
        v = ((pred - target) ** 2).mean(dim=(1, 2))
    elif monitor == "r":
        p, t = pred - pred.mean(1, keepdim=True), target - target.mean(1, keepdim=True)
        r = (p * t).sum(1) / (p.norm(dim=1) * t.norm(dim=1) + 1e-12)
        v = -r.mean(1)
    else:
        raise DataError(f"unknown monitor {monitor!r}", None, "use loss, mae, mse or r")
    return [s if math.isfinite(s) else math.inf for s in v.double().tolist()]


def _stack_data(data: Sequence[tuple[torch.Tensor, torch.Tensor]], which: list[int]) -> tuple[torch.Tensor,
                                                                                             torch.Tensor, list[int]]:
    """The data tensors the members read, padded to the same number of rows and stacked; member -> slot."""
    used = sorted(set(which))
    n_max = max(int(data[d][0].shape[0]) for d in used)

    def pad(t: torch.Tensor) -> torch.Tensor:
        if t.shape[0] == n_max:
            return t
        return torch.cat([t, t.new_zeros((n_max - t.shape[0], *t.shape[1:]))])

    xs = torch.stack([pad(data[d][0]) for d in used])
    ys = torch.stack([pad(data[d][1]) for d in used])
    slot = {d: i for i, d in enumerate(used)}
    return xs, ys, [slot[d] for d in which]


def train_members(make_net: Callable[[], nn.Module], data: Sequence[tuple[torch.Tensor, torch.Tensor]],
                  members: Sequence[Member], cfg: dict[str, Any], loss_fn: Callable[..., torch.Tensor],
                  reporter: Reporter) -> list[tuple[dict[str, torch.Tensor], dict[str, Any]]]:
    """Train every member (early stopping on its validation rows, best weights restored) and return, per
    member in order, its best ``state_dict`` and ``{"best_epoch", "epochs_run", "best_val"}``.

    Args:
        make_net: builds a fresh network (called under each member's ``init_seed``).
        data: (x, z) per data set: inputs (n, ...) and z-scored phenotypes (n, t), on the training device.
        cfg: the model's resolved parameters (optimizer, lr, batch_size, epochs, patience, monitor, l2, ...).
        loss_fn: ``loss(pred, target)`` (MSE or 1 - CCC), applied per member.
        reporter: cancellation (every epoch), mean train/val loss per epoch, progress.
    """
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, m in enumerate(members):
        key = (tuple(data[m.data][0].shape[1:]), len(m.fit_idx), len(m.val_idx))
        groups.setdefault(key, []).append(i)
    epochs = int(cfg["epochs"])
    total = len(groups) * epochs
    results: list[tuple[dict[str, torch.Tensor], dict[str, Any]] | None] = [None] * len(members)
    for g_no, idx in enumerate(groups.values()):
        for i, res in zip(idx, _train_group(make_net, data, [members[i] for i in idx], cfg, loss_fn, reporter,
                                            g_no * epochs, total), strict=True):
            results[i] = res
    return [r for r in results if r is not None]


def _train_group(make_net: Callable[[], nn.Module], data: Sequence[tuple[torch.Tensor, torch.Tensor]],
                 members: list[Member], cfg: dict[str, Any], loss_fn: Callable[..., torch.Tensor],
                 reporter: Reporter, step0: int, total: int) -> list[tuple[dict[str, torch.Tensor], dict[str, Any]]]:
    """Members with the same batch shapes, stepped together."""
    nets = []
    for m in members:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(m.init_seed))
            nets.append(make_net())
    dev = next(nets[0].parameters()).device
    with torch.random.fork_rng(devices=[]):  # the template's own weights are never used
        base = make_net().to(dev)
    drops = _swap_dropouts(base)
    _swap_input_convs(base)
    for mod in base.modules():  # vmap has no channels-last copies (a CPU layout choice; same convolution)
        if getattr(mod, "channels_last", False):
            mod.channels_last = False
    wrapper = _WithPenalty(base)
    params, buffers = stack_module_state(nets)
    params = {f"net.{k}": v.detach().clone() for k, v in params.items()}
    buffers = {f"net.{k}": v.clone() for k, v in buffers.items()}
    state_keys = [f"net.{k}" for k in nets[0].state_dict()]
    del nets
    n_fit, bs = len(members[0].fit_idx), max(1, int(cfg["batch_size"]))
    use_l2 = bool(cfg.get("l2", False))
    xs, ys, slot = _stack_data(data, [m.data for m in members])
    sample_shape = tuple(xs.shape[2:])
    drop_shapes = _dropout_shapes(wrapper, drops, sample_shape, dev, xs.dtype)

    def loss_of(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                masks: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        for d, mk in zip(drops, masks, strict=True):
            d.mask = mk
        try:
            with train_autocast(cfg["precision"], dev):
                pred, pen = functional_call(wrapper, (p, b), (x,))
        finally:
            for d in drops:
                d.mask = None
        loss = loss_fn(pred.float(), y)  # the loss and the penalty in fp32
        return (loss + pen if use_l2 else loss), loss

    def predict(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(wrapper, (p, b), (x,))[0]

    step_fn = vmap(grad_and_value(loss_of, has_aux=True))
    eval_fn = vmap(predict)
    opt = _StackedOptimizer(cfg, params, len(members))
    plateau = (_Plateau(cfg["plateau_factor"], cfg["plateau_patience"], len(members))
               if cfg.get("plateau_factor") and cfg.get("plateau_patience") else None)
    active = list(range(len(members)))  # positions (in ``members``) still training
    order_gens = [torch.Generator().manual_seed(int(m.order_seed)) for m in members]
    drop_gens = [torch.Generator().manual_seed(int(m.dropout_seed)) for m in members]
    fit_t = torch.as_tensor(np.stack([m.fit_idx for m in members]), dtype=torch.long, device=dev)
    val_t = torch.as_tensor(np.stack([m.val_idx for m in members]), dtype=torch.long, device=dev)
    slot_t = torch.as_tensor(slot, dtype=torch.long, device=dev)
    best_p = {k: v.clone() for k, v in params.items()}
    best_b = {k: v.clone() for k, v in buffers.items()}
    best = [math.inf] * len(members)
    best_epoch, epochs_run, wait = [0] * len(members), [0] * len(members), [0] * len(members)
    out: dict[int, tuple[dict[str, torch.Tensor], dict[str, Any]]] = {}
    epochs, patience, min_epochs = int(cfg["epochs"]), int(cfg["patience"]), int(cfg["min_epochs"])

    def finish(pos_in_active: list[int]) -> None:
        for j in pos_in_active:
            i = active[j]
            sd = {k[len("net."):]: (best_p[k][j] if k in best_p else best_b[k][j]).clone() for k in state_keys}
            out[i] = (sd, {"best_epoch": best_epoch[i], "epochs_run": epochs_run[i], "best_val": best[i]})

    for epoch in range(1, epochs + 1):
        reporter.check_cancel()
        wrapper.train()
        g_slot, g_fit = slot_t[active], fit_t[active]
        perms = torch.stack([torch.randperm(n_fit, generator=order_gens[i]) for i in active]).to(dev)
        order = torch.gather(g_fit, 1, perms)
        tot = torch.zeros(len(active), dtype=torch.float64, device=dev)
        seen = 0
        for s in range(0, n_fit, bs):
            rows = order[:, s:s + bs]
            b = rows.shape[1]
            if b < 2 and n_fit > 1:  # BatchNorm needs 2 samples; CCC a variance
                continue
            xb = xs[g_slot[:, None], rows]
            yb = ys[g_slot[:, None], rows]
            masks = tuple(_masks(p, (b, *shape), [drop_gens[i] for i in active], dev, xs.dtype)
                          for p, shape in drop_shapes)
            grads, (_, loss) = step_fn(params, buffers, xb, yb, masks)
            opt.step(params, grads)
            tot += loss.detach().double() * b
            seen += b
        wrapper.eval()
        with torch.no_grad():
            vrows = val_t[active]
            pv = eval_fn(params, buffers, xs[g_slot[:, None], vrows])
            yv = ys[g_slot[:, None], vrows]
            vloss = torch.stack([loss_fn(pv[j], yv[j]) for j in range(len(active))])
        scores = _scores(cfg["monitor"], pv, yv, vloss)
        step = step0 + epoch
        reporter.metrics(step, {"loss": float(tot.mean()) / max(seen, 1)}, split="train", epoch=epoch)
        mean_score = float(np.mean([s for s in scores if math.isfinite(s)] or [math.nan]))
        reporter.metrics(step, {"loss": float(vloss.mean()),
                                cfg["monitor"]: mean_score if cfg["monitor"] != "r" else -mean_score},
                         split="val", epoch=epoch)
        reporter.progress(step, total, epoch=epoch)
        if plateau is not None:
            plateau.step(scores, opt)
        improved, stop = [], []
        for j, i in enumerate(active):
            epochs_run[i] = epoch
            if scores[j] < best[i] - 1e-7:
                best[i], best_epoch[i], wait[i] = scores[j], epoch, 0
                improved.append(j)
            else:
                wait[i] += 1
                if wait[i] >= patience and epoch >= min_epochs:
                    stop.append(j)
        if improved:
            sel = torch.as_tensor(improved, dtype=torch.long, device=dev)
            for k in params:
                best_p[k][sel] = params[k][sel]
            for k in buffers:
                best_b[k][sel] = buffers[k][sel]
        if stop:
            finish(stop)
            keep_mask = [j not in set(stop) for j in range(len(active))]
            keep = torch.as_tensor(keep_mask, dtype=torch.bool, device=dev)
            active = [i for i, k in zip(active, keep_mask, strict=True) if k]
            if not active:
                break
            params = {k: v[keep].contiguous() for k, v in params.items()}
            buffers = {k: v[keep].contiguous() for k, v in buffers.items()}
            best_p = {k: v[keep] for k, v in best_p.items()}
            best_b = {k: v[keep] for k, v in best_b.items()}
            opt.keep(keep)
            if plateau is not None:
                plateau.keep(keep_mask)
    if active:
        finish(list(range(len(active))))
    return [out[i] for i in range(len(members))]


def _dropout_shapes(wrapper: nn.Module, drops: list[_MaskedDropout], sample_shape: tuple[int, ...],
                    dev: torch.device, dtype: torch.dtype) -> list[tuple[float, tuple[int, ...]]]:
    """(p, per-sample input shape) of each dropout, found by one forward pass on a dummy batch of 2."""
    shapes: list[tuple[int, ...]] = []
    hooks = [d.register_forward_pre_hook(lambda _m, args: shapes.append(tuple(args[0].shape[1:]))) for d in drops]
    try:
        wrapper.eval()
        with torch.no_grad():
            wrapper(torch.zeros((2, *sample_shape), device=dev, dtype=dtype))
    finally:
        for h in hooks:
            h.remove()
    return [(d.p, s) for d, s in zip(drops, shapes, strict=True)]


def _masks(p: float, shape: tuple[int, ...], gens: list[torch.Generator], dev: torch.device,
           dtype: torch.dtype) -> torch.Tensor:
    """Stacked inverted-dropout masks (keep / (1 - p)), one per member from its own generator."""
    if p <= 0:
        return torch.ones((len(gens), *shape), device=dev, dtype=dtype)
    keep = 1.0 - p
    m = torch.stack([torch.empty(shape, dtype=dtype).bernoulli_(keep, generator=g) for g in gens])
    return m.to(dev).div_(keep)


__all__ = ["Member", "train_members"]
