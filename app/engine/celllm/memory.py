"""Choosing the divide-and-conquer chunk size from the memory that is free.

The estimate counts activations kept for backward per cell (both views), per layer and per token, and
leaves room for the model, its gradients and AdamW state. It is deliberately conservative: a chunk that
is too small only costs speed, one that is too large costs the run.
"""

from __future__ import annotations

import torch

from app.models.celllm.config import CellLMConfig


def free_memory_bytes(device: torch.device | str) -> int:
    """Free memory on ``device``: CUDA ``mem_get_info``; CPU ``MemAvailable`` of /proc/meminfo (Linux) or,
    failing that, 4 GiB."""
    dev = torch.device(device)
    if dev.type == "cuda":
        free, _total = torch.cuda.mem_get_info(dev)
        return int(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30


def activation_bytes_per_cell(config: CellLMConfig, tokens: int, views: int = 2, bytes_per: int = 4) -> int:
    """Rough bytes of saved activations for one cell of ``tokens`` tokens through the encoder (all views)."""
    d, inner, ff = config.dim, config.inner_dim, config.dim * config.ff_mult
    per_token_layer = 6 * d + 4 * inner + 3 * ff
    if config.attention == "performer":
        per_token_layer += 4 * config.heads * config.nb_features
    else:  # exact attention keeps [heads, L, L] probabilities unless a fused kernel is used
        per_token_layer += 2 * config.heads * tokens
    total = (per_token_layer * config.depth + 4 * d) * tokens
    return int(total * views * bytes_per)


def static_bytes(model: torch.nn.Module) -> int:
    """Parameters + gradients + AdamW moments (trainable) + frozen parameters."""
    tr = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    fr = sum(p.numel() * p.element_size() for p in model.parameters() if not p.requires_grad)
    return int(4 * tr + fr)


def auto_chunk_size(config: CellLMConfig, tokens: int, batch_size: int, device: torch.device | str = "cpu",
                    model: torch.nn.Module | None = None, fraction: float = 0.5,
                    free_bytes: int | None = None, amp: bool = False) -> int:
    """Largest chunk (<= batch_size, a power of two or the batch size) whose activations fit in ``fraction``
    of the free memory after the static cost. ``tokens`` = typical padded cell length (e.g. the 95th
    percentile or max_len + 1)."""
    free = int(free_bytes) if free_bytes is not None else free_memory_bytes(device)
    budget = fraction * free - (static_bytes(model) if model is not None else 0)
    # the O(N^2) similarity matrix and O(N d) cached representations are paid once per batch
    budget -= 4 * (2 * batch_size) ** 2 * 3 + 4 * 2 * batch_size * config.dim * 3
    per_cell = activation_bytes_per_cell(config, max(1, int(tokens)), bytes_per=2 if amp else 4)
    fit = int(budget // max(per_cell, 1))
    if fit >= batch_size:
        return int(batch_size)
    c = 1
    while c * 2 <= fit:
        c *= 2
    return max(1, c)
