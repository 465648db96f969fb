"""Shared set-up of the distributed divide-and-conquer test and its torchrun workers (same seeds everywhere)."""

from __future__ import annotations

import numpy as np
import torch

from app.engine.celllm.pretrain import make_batch
from app.models.celllm import CellLM, preset

N = 32
"""Global batch: split over the ranks."""
CHUNKS = (4, 16)
"""Chunk sizes per rank: several chunks (no_sync on all but the last), and one chunk (plain backward)."""


def cells(n: int, vocab: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Random tokenised cells (CLS first) of 3..19 genes."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        k = int(rng.integers(3, 20))
        genes = np.sort(rng.choice(vocab, k, replace=False)) + 2
        out.append((np.concatenate([[1], genes]).astype(np.int64),
                    np.concatenate([[6], rng.integers(0, 6, k)]).astype(np.int64)))
    return out


def setup() -> tuple[CellLM, torch.nn.Module, dict]:
    """Tiny CellLM with dropout on, a 3-class supervised head and one global batch (identical on each call)."""
    torch.manual_seed(0)
    cfg = preset("tiny", 50, dropout=0.2)
    model = CellLM(cfg).train()
    head = torch.nn.Linear(cfg.dim, 3)
    batch = make_batch(cells(N, 50, 1), np.arange(N) % 3, 0.15, cfg.n_bins, torch.Generator().manual_seed(3))
    return model, head, batch


def weights() -> dict[str, float]:
    """Loss weights: all three objectives on."""
    return {"mlm": 1.0, "contrastive": 1.0, "supervised": 1.0}


def rank_seed(rank: int) -> int:
    """Dropout seed of a rank's step."""
    return 100 + rank


def grads(model: torch.nn.Module, head: torch.nn.Module) -> torch.Tensor:
    """All trainable parameters' gradients, flattened (zeros where none)."""
    ps = [p for p in model.parameters() if p.requires_grad] + list(head.parameters())
    return torch.cat([p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel()) for p in ps])
