"""Performer encoder (FAVOR+ linear attention) with a real key mask, and an exact-attention twin.

Differences from performer_pytorch as used by the published CellLM, on purpose:

* Padded keys are removed from both the numerator and the normaliser (the original only zeroes their values,
  so padding still shifts every softmax denominator).
* The key feature map's stabiliser is a max over the *same cell's* real keys (all heads), not over the whole
  batch tensor: it is a constant per cell, so it cancels between numerator and normaliser (up to the small
  eps of FAVOR+) and a cell's output depends neither on its batch-mates nor on its padding. For one unpadded
  cell it equals the published max, so imported weights give the published outputs. (A per-token key
  stabiliser would not cancel: it would re-weight the keys.) Queries use a per-token stabiliser, as published.
* Random projections are drawn from a seeded ``torch.Generator``, kept as persistent buffers (saved in
  checkpoints) and only replaced by an explicit ``redraw`` call, never inside a forward pass.
* The feature maps are computed in float32 even under autocast (exp of projections overflows fp16).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def gaussian_orthogonal_random_matrix(nb_rows: int, nb_columns: int, generator: torch.Generator) -> torch.Tensor:
    """FAVOR+ projection [nb_rows, nb_columns]: blocks of orthogonal rows scaled by chi-distributed norms
    (rows of a Gaussian matrix), drawn on the CPU from ``generator`` (reproducible on every device)."""
    blocks = []
    n_full = nb_rows // nb_columns
    for _ in range(n_full):
        q, _ = torch.linalg.qr(torch.randn(nb_columns, nb_columns, generator=generator))
        blocks.append(q.t())
    rest = nb_rows - n_full * nb_columns
    if rest > 0:
        q, _ = torch.linalg.qr(torch.randn(nb_columns, nb_columns, generator=generator))
        blocks.append(q.t()[:rest])
    mat = torch.cat(blocks)
    norms = torch.randn(nb_rows, nb_columns, generator=generator).norm(dim=1)
    return norms[:, None] * mat


def favor_features(x: torch.Tensor, proj: torch.Tensor, is_query: bool, key_mask: torch.Tensor | None = None,
                   eps: float = 1e-4) -> torch.Tensor:
    """Positive random features phi(x) of FAVOR+ for softmax attention, in float32.

    x: [B, H, L, d]; proj: [m, d]; key_mask (keys only): [B, L] True = real token. Returns [B, H, L, m].
    Padded keys get phi = 0, so they enter neither numerator nor normaliser.
    """
    x = x.float()
    d = x.shape[-1]
    x = x * (d ** -0.25)
    dash = torch.einsum("bhld,md->bhlm", x, proj.float())
    diag = 0.5 * (x * x).sum(-1, keepdim=True)
    if is_query:
        stab = dash.amax(dim=-1, keepdim=True)  # per token: cancels in the row normalisation
    else:
        # per cell, over all its heads and real keys: as the published max over the whole tensor for a batch
        # of one unpadded cell (so imported weights behave as published), but blind to batch-mates and padding.
        # Max per token first, then mask that small [B, L] table: the same value as masking the whole tensor,
        # without a copy of it (that masked copy was ~10 % of an inference pass).
        tok = dash.amax(dim=(1, 3))
        if key_mask is not None:
            tok = tok.masked_fill(~key_mask, float("-inf"))
        stab = tok.amax(dim=1).view(-1, 1, 1, 1)
    feats = (torch.exp(dash - diag - stab) + eps) * (proj.shape[0] ** -0.5)
    if key_mask is not None and not is_query:
        feats = feats * key_mask[:, None, :, None].to(feats.dtype)
    return feats


def linear_attention(qf: torch.Tensor, kf: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Non-causal linear attention: out_i = sum_j phi(q_i).phi(k_j) v_j / sum_j phi(q_i).phi(k_j)."""
    v = v.float()
    context = torch.einsum("bhlm,bhle->bhme", kf, v)
    norm = torch.einsum("bhlm,bhm->bhl", qf, kf.sum(dim=2))
    out = torch.einsum("bhlm,bhme->bhle", qf, context)
    return out / norm.clamp_min(1e-12).unsqueeze(-1)


class SelfAttention(nn.Module):
    """Multi-head self-attention: FAVOR+ ("performer") or exact softmax attention ("exact")."""

    def __init__(self, dim: int, heads: int, dim_head: int, nb_features: int, dropout: float,
                 attention: str, generator: torch.Generator) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads, self.dim_head, self.nb_features = heads, dim_head, nb_features
        self.attention = attention
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.Linear(inner, dim)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("proj", gaussian_orthogonal_random_matrix(nb_features, dim_head, generator))

    @torch.no_grad()
    def redraw(self, generator: torch.Generator) -> None:
        """Replace the random projection (explicit calls only)."""
        new = gaussian_orthogonal_random_matrix(self.nb_features, self.dim_head, generator)
        self.proj.copy_(new.to(self.proj.device, self.proj.dtype))

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor, n_query: int | None = None) -> torch.Tensor:
        """x: [B, L, dim]; key_mask: [B, L] bool, True = real token. ``n_query``: outputs for the first
        ``n_query`` positions only (all tokens are still keys and values), [B, n_query, dim]."""
        b, n, _ = x.shape
        nq = n if n_query is None else int(n_query)
        q = self.to_q(x[:, :nq]).view(b, nq, self.heads, self.dim_head).transpose(1, 2)
        k, v = (t(x).view(b, n, self.heads, self.dim_head).transpose(1, 2) for t in (self.to_k, self.to_v))
        if self.attention == "exact":
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask[:, None, None, :])
        else:
            with torch.autocast(device_type=x.device.type, enabled=False):
                qf = favor_features(q, self.proj, is_query=True)
                kf = favor_features(k, self.proj, is_query=False, key_mask=key_mask)
                out = linear_attention(qf, kf, v)
            out = out.to(v.dtype)
        out = out.transpose(1, 2).reshape(b, nq, self.heads * self.dim_head)
        return self.dropout(self.to_out(out))


class FeedForward(nn.Module):
    """dim -> dim * mult -> dim with GELU and dropout."""

    def __init__(self, dim: int, mult: int, dropout: float) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, dim * mult)
        self.act = nn.GELU()
        self.dropout = nn.Dropout(dropout)
        self.w2 = nn.Linear(dim * mult, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(self.dropout(self.act(self.w1(x))))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(norm(x)); x + ff(norm(x))."""

    def __init__(self, dim: int, heads: int, dim_head: int, ff_mult: int, nb_features: int, dropout: float,
                 attention: str, generator: torch.Generator) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, dim_head, nb_features, dropout, attention, generator)
        self.ff_norm = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, ff_mult, dropout)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor, n_query: int | None = None) -> torch.Tensor:
        """Outputs [B, L, dim], or for the first ``n_query`` positions only (attending to every token)."""
        h = self.attn(self.attn_norm(x), key_mask, n_query)
        x = (x if n_query is None else x[:, :n_query]) + h
        return x + self.ff(self.ff_norm(x))


class PerformerEncoder(nn.Module):
    """A stack of ``depth`` pre-LN blocks and a final LayerNorm."""

    def __init__(self, dim: int, depth: int, heads: int, dim_head: int, ff_mult: int, nb_features: int,
                 dropout: float, attention: str = "performer", seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(int(seed))
        self.layers = nn.ModuleList(
            Block(dim, heads, dim_head, ff_mult, nb_features, dropout, attention, gen) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self._redraws = 0
        self._seed = int(seed)

    def set_attention(self, attention: str) -> None:
        """Switch every layer between "performer" and "exact" (same weights)."""
        if attention not in ("performer", "exact"):
            raise ValueError(f"attention must be 'performer' or 'exact', not {attention!r}")
        for layer in self.layers:
            layer.attn.attention = attention

    @torch.no_grad()
    def redraw_projections(self, seed: int | None = None) -> None:
        """Draw new random projections for every layer (seeded: ``seed`` or the model seed + redraw count)."""
        self._redraws += 1
        gen = torch.Generator().manual_seed(int(seed) if seed is not None else self._seed + 1_000_003 * self._redraws)
        for layer in self.layers:
            layer.attn.redraw(gen)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor, n_query: int | None = None) -> torch.Tensor:
        """Final hidden states [B, L, dim]; with ``n_query`` only the first ``n_query`` positions' (the CLS
        embedding needs only position 0 of the last layer: the same numbers, a fraction of its work)."""
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x, key_mask, n_query if i == last else None)
        return self.norm(x)

