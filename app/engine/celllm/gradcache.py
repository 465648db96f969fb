"""Divide-and-conquer (gradient cache, Gao et al. 2021) for contrastive losses over large batches.

A batch of N cells is processed in chunks of c:

1. each chunk is forwarded **without** autograd, after recording the RNG state (CPU and every CUDA device
   involved: the chunk's tensors' and the model's), keeping only its detached representations;
2. the full-batch representation loss is computed on the concatenated detached representations (fp32) and
   its gradient ``G = dL/dR`` taken;
3. each chunk is re-run **with** autograd under its replayed RNG state (same dropout masks) and
   ``<r_k, G_k> + local_k`` is back-propagated, where ``local_k`` is the chunk's share of any per-cell loss.

Parameter gradients then equal those of the full-batch loss, while activation memory grows with c, not N.
Under a ``GradScaler`` both parts are scaled; the caller unscales before clipping and steps the scaler.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

Reps = torch.Tensor | tuple[torch.Tensor, ...]


@dataclass
class DCResult:
    """What ``dc_step`` did: total loss (rep + local), the representation loss, the summed local losses,
    the detached full-batch representations (fp32) and the number of chunks."""

    loss: float
    rep_loss: float
    local_loss: float
    reps: Reps
    n_chunks: int


def batch_size_of(batch: Any) -> int:
    """First dimension shared by the batch's tensors (tuple/list/dict of tensors; other values passed through)."""
    items = batch.values() if isinstance(batch, Mapping) else batch if isinstance(batch, (list, tuple)) else [batch]
    for v in items:
        if isinstance(v, torch.Tensor):
            return int(v.shape[0])
    raise ValueError("the batch holds no tensor")


def slice_batch(batch: Any, start: int, stop: int) -> Any:
    """Rows ``start:stop`` of every tensor in the batch (same container type)."""
    def cut(v: Any) -> Any:
        return v[start:stop] if isinstance(v, torch.Tensor) else v
    if isinstance(batch, Mapping):
        return {k: cut(v) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(cut(v) for v in batch)
    return cut(batch)


def _tensors(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, Mapping):
        return [t for v in obj.values() for t in _tensors(v)]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in _tensors(v)]
    return []


def cuda_devices(model: Any, chunk: Any) -> list[int]:
    """CUDA device indices whose RNG a chunk's forward may draw from: its tensors' and the model's."""
    devs: set[int] = set()
    for t in _tensors(chunk):
        if t.is_cuda:
            devs.add(t.device.index if t.device.index is not None else torch.cuda.current_device())
    if isinstance(model, torch.nn.Module):
        for p in list(model.parameters())[:1] + list(model.buffers())[:1]:
            if p.is_cuda:
                devs.add(p.device.index if p.device.index is not None else torch.cuda.current_device())
    return sorted(devs)


class RngState:
    """CPU + given CUDA devices' RNG state, to replay a chunk's dropout exactly."""

    def __init__(self, devices: Sequence[int]) -> None:
        self.devices = list(devices)
        self.cpu = torch.get_rng_state()
        self.cuda = [torch.cuda.get_rng_state(d) for d in self.devices]

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        for d, s in zip(self.devices, self.cuda):
            torch.cuda.set_rng_state(s, d)


def _split_output(out: Any) -> tuple[Reps, torch.Tensor | None]:
    """model output -> (reps, local loss or None). Accepts reps, or (reps, local_loss) where reps may itself
    be a tuple of tensors."""
    if isinstance(out, torch.Tensor):
        return out, None
    if isinstance(out, (tuple, list)) and len(out) == 2 and (out[1] is None or (
            isinstance(out[1], torch.Tensor) and out[1].dim() == 0)):
        return out[0], out[1]
    return tuple(out), None


def _as_tuple(r: Reps) -> tuple[torch.Tensor, ...]:
    return (r,) if isinstance(r, torch.Tensor) else tuple(r)


def dc_step(model: Callable[[Any], Any], batch: Any, loss_fn: Callable[..., torch.Tensor], chunk_size: int,
            *, scaler: Any = None, autocast_dtype: torch.dtype | None = None, device_type: str | None = None,
            devices: Sequence[int] | None = None) -> DCResult:
    """One divide-and-conquer forward/backward over ``batch``; gradients accumulate in ``.grad``.

    ``model(chunk)`` returns the chunk's representations (a tensor [c, ...] or a tuple of them, e.g. two
    views) or ``(reps, local_loss)`` where ``local_loss`` is the chunk's share of per-cell losses already
    normalised by the FULL batch (so the shares add up to the full-batch mean). ``loss_fn(*reps_full)``
    gets the concatenated fp32 representations and returns the full-batch scalar loss. ``chunk_size`` >= N
    is a plain full-batch step (one forward, no recomputation). ``scaler``: a ``torch.amp.GradScaler``;
    ``autocast_dtype``: run the forwards under autocast of that dtype. No optimiser step is taken.
    """
    n = batch_size_of(batch)
    c = max(1, int(chunk_size))
    dev_type = device_type or next((t.device.type for t in _tensors(batch)), "cpu")

    def ac() -> Any:
        return torch.autocast(device_type=dev_type, dtype=autocast_dtype, enabled=autocast_dtype is not None)

    def scale(t: torch.Tensor) -> torch.Tensor:
        return scaler.scale(t) if scaler is not None else t

    if c >= n:  # one chunk: ordinary backward, nothing to cache
        with ac():
            reps, local = _split_output(model(batch))
        reps_t = _as_tuple(reps)
        rep_loss = loss_fn(*(r.float() for r in reps_t))
        total = rep_loss + (local.float() if local is not None else 0.0)
        scale(total).backward()
        return DCResult(float(total.detach()), float(rep_loss.detach()),
                        float(local.detach()) if local is not None else 0.0,
                        tuple(r.detach().float() for r in reps_t) if len(reps_t) > 1 else reps_t[0].detach().float(),
                        1)

    bounds = [(s, min(s + c, n)) for s in range(0, n, c)]
    states: list[RngState] = []
    cached: list[tuple[torch.Tensor, ...]] = []
    # (1) forward without autograd, remembering each chunk's RNG state
    for s, e in bounds:
        chunk = slice_batch(batch, s, e)
        devs = list(devices) if devices is not None else cuda_devices(model, chunk)
        states.append(RngState(devs))
        with torch.no_grad(), ac():
            reps, _ = _split_output(model(chunk))
        cached.append(tuple(r.detach().float() for r in _as_tuple(reps)))
    # (2) full-batch loss on detached representations -> G
    n_parts = len(cached[0])
    full = [torch.cat([ck[i] for ck in cached]).requires_grad_(True) for i in range(n_parts)]
    rep_loss = loss_fn(*full)
    grads = torch.autograd.grad(scale(rep_loss), full)
    del cached
    # (3) re-run each chunk with autograd under its replayed RNG; backprop <r_k, G_k> + local share
    local_total = 0.0
    after = RngState(sorted({d for st in states for d in st.devices}))
    try:
        for (s, e), st in zip(bounds, states):
            st.restore()
            chunk = slice_batch(batch, s, e)
            with ac():
                reps, local = _split_output(model(chunk))
            reps_t = _as_tuple(reps)
            surrogate = sum((r.float() * g[s:e]).sum() for r, g in zip(reps_t, grads))
            if local is not None:
                surrogate = surrogate + scale(local.float())
                local_total += float(local.detach())
            surrogate.backward()
    finally:
        after.restore()  # leave the RNG where phase (1) left it, as a single pass would
    reps_out = tuple(f.detach() for f in full)
    return DCResult(float(rep_loss.detach()) + local_total, float(rep_loss.detach()), local_total,
                    reps_out if n_parts > 1 else reps_out[0], len(bounds))
