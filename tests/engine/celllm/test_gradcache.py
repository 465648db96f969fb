"""Divide-and-conquer gives the full-batch gradients (dropout on), and leaves the RNG as one pass would."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from dist_common import cells

from app.engine.celllm import losses
from app.engine.celllm.gradcache import dc_step, slice_batch
from app.engine.celllm.pretrain import make_batch, make_chunk_fn
from app.models.celllm import CellLM, preset

torch.set_num_threads(1)
N = 64


def _setup(attention: str = "performer", supervised: bool = True):
    torch.manual_seed(0)
    cfg = preset("tiny", 50, dropout=0.2, attention=attention)
    model = CellLM(cfg).train()
    head = torch.nn.Linear(cfg.dim, 3) if supervised else None
    labels = np.arange(N) % 3 if supervised else None
    batch = make_batch(cells(N, 50, 1), labels, 0.15, cfg.n_bins, torch.Generator().manual_seed(3))
    return model, head, batch


def _grads(model: torch.nn.Module, head: torch.nn.Module | None) -> torch.Tensor:
    ps = [p for p in model.parameters() if p.requires_grad] + (list(head.parameters()) if head else [])
    return torch.cat([p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel()) for p in ps])


def _zero(model: torch.nn.Module, head: torch.nn.Module | None) -> None:
    model.zero_grad(set_to_none=True)
    if head is not None:
        head.zero_grad(set_to_none=True)


def _reference(fn, batch: dict, chunk: int, loss_fn) -> float:
    """Plain autograd over the same computation: the chunks' forwards (same RNG stream, hence the same dropout
    masks as divide-and-conquer draws) kept in one graph, the full-batch loss, one backward."""
    reps_a, reps_b, local = [], [], 0.0
    for s in range(0, N, chunk):
        (a, b), loc = fn(slice_batch(batch, s, s + chunk))
        reps_a.append(a)
        reps_b.append(b)
        local = local + loc
    total = loss_fn(torch.cat(reps_a).float(), torch.cat(reps_b).float()) + local
    total.backward()
    return float(total.detach())


@pytest.mark.parametrize("chunk", [8, 16, 64])
def test_dc_gradients_equal_full_batch(chunk: int) -> None:
    model, head, batch = _setup()
    tensors = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
    weights = {"mlm": 1.0, "contrastive": 1.0, "supervised": 1.0}

    def loss_fn(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return losses.info_nce(a, b, 0.05)

    fn = make_chunk_fn(model, head, torch.device("cpu"), batch, weights, "cls", {})
    torch.manual_seed(123)
    ref_loss = _reference(fn, tensors, chunk, loss_fn)
    g_ref = _grads(model, head).clone()
    _zero(model, head)
    torch.manual_seed(123)
    res = dc_step(fn, tensors, loss_fn, chunk)
    g_dc = _grads(model, head)
    assert res.n_chunks == N // chunk
    assert abs(res.loss - ref_loss) < 1e-5 * max(1.0, abs(ref_loss))
    rel = float((g_dc - g_ref).norm() / g_ref.norm())
    assert g_ref.norm() > 0 and rel < 1e-5, rel


def test_dc_equals_true_full_batch_in_eval_mode() -> None:
    """Without dropout, chunking (and the chunks' own padding) gives the single full-batch forward's gradients."""
    model, _head, batch = _setup(supervised=False)
    model.eval()
    tensors = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
    weights = {"mlm": 1.0, "contrastive": 1.0, "supervised": 1.0}
    fn = make_chunk_fn(model, None, torch.device("cpu"), batch, weights, "cls", {})

    def loss_fn(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return losses.info_nce(a, b, 0.05)

    dc_step(fn, tensors, loss_fn, N)
    g_full = _grads(model, None).clone()
    _zero(model, None)
    dc_step(fn, tensors, loss_fn, 8)
    g_dc = _grads(model, None)
    assert float((g_dc - g_full).norm() / g_full.norm()) < 1e-4


def test_dc_replays_dropout_and_restores_rng() -> None:
    """With dropout, the replay must reuse each chunk's masks: without RNG replay gradients would differ."""
    model, _, batch = _setup(supervised=False)
    tensors = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
    fn = make_chunk_fn(model, None, torch.device("cpu"), batch, {"mlm": 0.0, "contrastive": 1.0,
                                                                  "supervised": 0.0}, "cls", {})
    torch.manual_seed(5)
    dc_step(fn, tensors, lambda a, b: losses.info_nce(a, b), 16)
    after_dc = torch.rand(3)
    # the same number of forwards without caching advances the RNG identically
    torch.manual_seed(5)
    with torch.no_grad():
        for s in range(0, N, 16):
            fn(slice_batch(tensors, s, s + 16))
    assert torch.equal(after_dc, torch.rand(3))


def test_dc_with_grad_scaler_matches_unscaled() -> None:
    """A GradScaler scales both the cached representation gradient and the per-cell losses."""
    model, head, batch = _setup()
    tensors = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
    fn = make_chunk_fn(model, head, torch.device("cpu"), batch, {"mlm": 1.0, "contrastive": 1.0,
                                                                  "supervised": 1.0}, "cls", {})

    class FixedScaler:  # the arithmetic of torch.amp.GradScaler.scale, device-independent
        def scale(self, t: torch.Tensor) -> torch.Tensor:
            return t * 1024.0

    torch.manual_seed(9)
    dc_step(fn, tensors, lambda a, b: losses.info_nce(a, b), 16)
    g1 = _grads(model, head).clone()
    _zero(model, head)
    torch.manual_seed(9)
    dc_step(fn, tensors, lambda a, b: losses.info_nce(a, b), 16, scaler=FixedScaler())
    g2 = _grads(model, head) / 1024.0
    assert float((g1 - g2).norm() / g1.norm()) < 1e-5


@pytest.mark.parametrize("n", [3, 40])
def test_blocked_info_nce_equals_plain(n: int) -> None:
    """The blocked InfoNCE (no 2N x 2N matrix) has the plain one's value and gradients."""
    g = torch.Generator().manual_seed(n)
    a = torch.randn(n, 8, generator=g, requires_grad=True)
    b = torch.randn(n, 8, generator=g, requires_grad=True)
    plain = losses.info_nce(a, b, 0.05, block=10**9)
    ga = torch.autograd.grad(plain, [a, b])
    blocked = losses.info_nce(a, b, 0.05, block=7)
    gb = torch.autograd.grad(blocked, [a, b])
    assert abs(plain.item() - blocked.item()) < 1e-5 * plain.item()
    for x, y in zip(ga, gb):
        assert float((x - y).norm() / x.norm()) < 1e-5
    # a perfect pairing scores accuracy 1, a shuffled one does not
    assert losses.contrastive_accuracy(a, a + 1e-3) == 1.0
    assert losses.contrastive_accuracy(a, b) < 1.0


def test_auto_chunk_size_follows_free_memory() -> None:
    from app.engine.celllm.memory import activation_bytes_per_cell, auto_chunk_size

    cfg = preset("small", 1000)
    per_cell = activation_bytes_per_cell(cfg, 500)
    small = auto_chunk_size(cfg, 500, 4096, free_bytes=2 * 64 * per_cell + (1 << 30))
    large = auto_chunk_size(cfg, 500, 4096, free_bytes=2 * 1024 * per_cell + (1 << 30))
    assert 1 <= small < large <= 4096
    assert small & (small - 1) == 0  # a power of two below the batch size
    assert auto_chunk_size(cfg, 500, 256, free_bytes=1 << 40) == 256  # everything fits: the whole batch
    assert auto_chunk_size(cfg, 500, 256, free_bytes=1) == 1
