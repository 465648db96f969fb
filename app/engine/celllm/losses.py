"""CellLM pretraining objectives: masked expression modelling, contrastive InfoNCE, supervised CLS.

Per-cell losses are written as *sums* with an explicit normaliser so divide-and-conquer can add each chunk's
exact share of the full-batch mean (``mlm_loss(..., denom=total masked tokens of the batch)``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from app.models.celllm.model import CLS_ID, PAD_ID, mask_bin

IGNORE = -100


BLOCK_ELEMENTS = 1 << 20
"""Similarity entries held at once by the blocked InfoNCE (4 MiB in fp32): rows per block = this / 2N."""
BLOCK = 1024
"""Largest row block (and the number of views up to which the plain 2N x 2N matrix is used)."""


def info_nce(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.05, block: int | None = None
             ) -> torch.Tensor:
    """Symmetric InfoNCE over 2N views on cosine similarity (fp32, autocast off).

    Row i of ``z1`` and row i of ``z2`` are two views of cell i; every view's negatives are the other 2N - 2
    views of the batch. Mean cross-entropy over all 2N anchors. Batches of more than ``block`` views
    (default ``BLOCK_ELEMENTS / 2N`` rows, at most ``BLOCK``) never materialise the 2N x 2N matrix: rows are
    processed in blocks in the forward and recomputed in the backward, so divide-and-conquer memory stays
    flat in N.
    """
    with torch.autocast(device_type=z1.device.type, enabled=False):
        z1, z2 = z1.float(), z2.float()
        blk = int(block or max(64, min(BLOCK, BLOCK_ELEMENTS // (2 * z1.shape[0]))))
        if 2 * z1.shape[0] > blk:
            return _BlockedInfoNCE.apply(z1, z2, float(temperature), blk)
        z = F.normalize(torch.cat([z1, z2]), dim=-1)
        n = z1.shape[0]
        sim = (z @ z.t()) / float(temperature)
        sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
        return F.cross_entropy(sim, _partners(n, z.device))


def _partners(n: int, device: torch.device) -> torch.Tensor:
    return torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(device)


class _BlockedInfoNCE(torch.autograd.Function):
    """``info_nce`` computed block-row by block-row (same value and gradient, O(block * 2N) memory)."""

    @staticmethod
    def _block_logits(zn: torch.Tensor, s: int, e: int, tau: float) -> torch.Tensor:
        logits = (zn[s:e] @ zn.t()) / tau
        rows = torch.arange(e - s, device=zn.device)
        logits[rows, rows + s] = float("-inf")
        return logits

    @staticmethod
    def forward(ctx, z1: torch.Tensor, z2: torch.Tensor, tau: float, block: int) -> torch.Tensor:
        z = torch.cat([z1, z2])
        norms = z.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        zn = z / norms
        m, n = z.shape[0], z1.shape[0]
        pos = _partners(n, z.device)
        lse = torch.empty(m, device=z.device)
        total = torch.zeros((), device=z.device)
        for s in range(0, m, block):
            e = min(s + block, m)
            logits = _BlockedInfoNCE._block_logits(zn, s, e, tau)
            lse[s:e] = torch.logsumexp(logits, dim=1)
            total = total + (lse[s:e] - logits[torch.arange(e - s, device=z.device), pos[s:e]]).sum()
        ctx.save_for_backward(zn, norms, lse)
        ctx.tau, ctx.block, ctx.n = tau, block, n
        return total / m

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        zn, norms, lse = ctx.saved_tensors
        tau, block, n = ctx.tau, ctx.block, ctx.n
        m = zn.shape[0]
        pos = _partners(n, zn.device)
        dzn = torch.zeros_like(zn)
        scale = grad / m
        for s in range(0, m, block):
            e = min(s + block, m)
            p = torch.exp(_BlockedInfoNCE._block_logits(zn, s, e, tau) - lse[s:e, None])
            p[torch.arange(e - s, device=zn.device), pos[s:e]] -= 1.0
            p = p * (scale / tau)
            dzn[s:e] += p @ zn
            dzn += p.t() @ zn[s:e]
        dz = (dzn - zn * (dzn * zn).sum(-1, keepdim=True)) / norms
        return dz[:n], dz[n:], None, None


def contrastive_accuracy(z1: torch.Tensor, z2: torch.Tensor) -> float:
    """Fraction of the 2N views whose nearest other view (cosine) is their partner (a readable metric)."""
    with torch.no_grad():
        z = F.normalize(torch.cat([z1, z2]).float(), dim=-1)
        n = z1.shape[0]
        hits = 0
        blk = max(64, min(BLOCK, BLOCK_ELEMENTS // (2 * n)))
        for s in range(0, 2 * n, blk):  # blockwise: no 2N x 2N matrix
            e = min(s + blk, 2 * n)
            sim = z[s:e] @ z.t()
            rows = torch.arange(e - s, device=z.device)
            sim[rows, rows + s] = float("-inf")
            hits += int((sim.argmax(1) == _partners(n, z.device)[s:e]).sum())
        return hits / (2 * n)


def mask_for_mlm(gene_ids: torch.Tensor, bins: torch.Tensor, pad_mask: torch.Tensor, prob: float = 0.15,
                 n_bins: int = 6, generator: torch.Generator | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Choose ``prob`` of each cell's expressed gene tokens (never CLS or padding; at least one when the cell
    has a gene) and hide their bins.

    Returns ``(masked_bins, targets)``: ``masked_bins`` = bins with chosen positions set to ``mask_bin``;
    ``targets`` = the true bin at chosen positions, ``IGNORE`` elsewhere.
    """
    real = pad_mask.bool() & (gene_ids != CLS_ID) & (gene_ids != PAD_ID)
    u = torch.rand(gene_ids.shape, generator=generator, device="cpu").to(gene_ids.device)
    chosen = real & (u < prob)
    # cells where chance picked nothing: take their highest-u gene, so every cell contributes
    none = real.any(1) & ~chosen.any(1)
    if bool(none.any()):
        best = torch.where(real, u, torch.full_like(u, -1.0)).argmax(1)
        add = torch.zeros_like(chosen)
        add[torch.arange(len(best), device=add.device), best] = True
        chosen = chosen | (add & none[:, None])
    masked = torch.where(chosen, torch.full_like(bins, mask_bin(n_bins)), bins)
    targets = torch.where(chosen, bins.clamp(0, n_bins - 1), torch.full_like(bins, IGNORE))
    return masked, targets


def mlm_loss(logits: torch.Tensor, targets: torch.Tensor, denom: float | int | None = None) -> torch.Tensor:
    """Cross-entropy of bin predictions at masked positions, summed and divided by ``denom`` (default: the
    number of masked positions here, i.e. the mean). Computed in fp32."""
    flat_t = targets.reshape(-1)
    total = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), flat_t, ignore_index=IGNORE,
                            reduction="sum")
    d = float(denom) if denom is not None else float((flat_t != IGNORE).sum().clamp_min(1))
    return total / max(d, 1.0)


def supervised_loss(logits: torch.Tensor, labels: torch.Tensor, denom: float | int | None = None) -> torch.Tensor:
    """Cross-entropy of CLS class logits (labels ``IGNORE`` skipped), summed / ``denom`` (default: mean)."""
    total = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE, reduction="sum")
    d = float(denom) if denom is not None else float((labels != IGNORE).sum().clamp_min(1))
    return total / max(d, 1.0)
