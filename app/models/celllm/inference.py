"""Eval-only forward of a Performer CellLM for inference: ``CellLM.embed``'s numbers (within float rounding)
for a fraction of its work. ``CellLM.embed`` stays the reference (training and the tests use it).

What is skipped or done once, and why the result does not change:

* Dropout (the identity in eval mode) and the MLM head never run.
* Layer 1 of a token depends on its (gene, bin) pair only, up to the point where cells mix: the token embedding,
  LayerNorm, the q/k/v projections, the query features (FAVOR+ stabilises queries per token) and the key
  features before the per-cell stabiliser is subtracted. ``FastCellLM.prepare`` computes these once per distinct
  pair of the data (at most vocabulary x bins rows; 100k cells x 513 tokens have ~200k) and a batch gathers them.
  The per-cell key stabiliser is then subtracted in the same order as ``favor_features`` does.
* Each later layer computes q, k, v and both FAVOR+ projections in one matrix product (the random projection
  and the d^-1/4 scale folded into the weights: a different summation order, not a different function). The
  features' constant factor m^-1/2 is left out: it cancels between the numerator and the normaliser.
* With few heads (the shipped tiny model has 2) the per-head sums of linear attention are one batched product
  over block-diagonal matrices: no head transposes, the normaliser comes out of the same product.
* With CLS pooling the last layer runs its queries, output projection and feed-forward for position 0 only
  (as ``CellLM.embed`` does).

Performer attention only; ``FastCellLM.supports`` says whether a model qualifies.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from app.models.celllm.model import CLS_ID, PAD_ID, CellLM, cls_bin, pad_bin

BLOCK_HEADS = 4
"""Up to this many heads the per-head products run as one block-diagonal product (heads^2 of the work of one
head, without copies); above it, per-head einsums."""


@dataclass(frozen=True)
class _Layer:
    """One encoder block's weights, fused for inference (float32, on the model's device)."""

    ln1: tuple[torch.Tensor, torch.Tensor, float]
    w_q: torch.Tensor  # [dim, inner + H*m]: scaled q, then the query projection ("dash")
    w_kv: torch.Tensor  # [dim, 2*inner + H*m]: scaled k, v, then the key projection
    w_out: torch.Tensor
    b_out: torch.Tensor
    ln2: tuple[torch.Tensor, torch.Tensor, float]
    w1: torch.Tensor
    b1: torch.Tensor
    w2: torch.Tensor
    b2: torch.Tensor


def _ln(norm: torch.nn.LayerNorm) -> tuple[torch.Tensor, torch.Tensor, float]:
    return norm.weight.detach().float(), norm.bias.detach().float(), float(norm.eps)


class FastCellLM:
    """Inference of one CellLM in eval mode, with weights read once at construction (rebuild it after the
    weights change). ``prepare`` turns tokens into codes, ``embed(codes, pad_mask)`` embeds a padded batch."""

    def __init__(self, model: CellLM) -> None:
        if not self.supports(model):
            raise ValueError("FastCellLM needs a CellLM with Performer attention")
        c = model.config
        self.dim, self.heads, self.dim_head, self.m = c.dim, c.heads, c.dim_head, c.nb_features
        self.inner = c.heads * c.dim_head
        self.n_bins = c.n_bins
        self.eps = 1e-4  # favor_features' eps
        self.model = model
        self.device = next(model.parameters()).device
        self.layers = [self._fuse(block) for block in model.encoder.layers]
        self.norm = _ln(model.encoder.norm)
        h, m, e = self.heads, self.m, self.dim_head
        eye = torch.eye(h, device=self.device)
        # block-diagonal masks: head i's features meet head i's values (and its own normaliser column)
        self.ctx_mask = eye.repeat_interleave(m, 0).repeat_interleave(e, 1)  # [H*m, inner]
        self.sum_mask = eye.repeat_interleave(m, 0)  # [H*m, H]
        self.table: torch.Tensor | None = None

    @staticmethod
    def supports(model: torch.nn.Module) -> bool:
        """True for a CellLM whose layers all use Performer (FAVOR+) attention."""
        return isinstance(model, CellLM) and all(b.attn.attention == "performer" for b in model.encoder.layers)

    @torch.no_grad()
    def _fuse(self, block: torch.nn.Module) -> _Layer:
        a, ff = block.attn, block.ff
        s = self.dim_head ** -0.25  # favor_features scales q and k by d^-1/4 before projecting
        proj = a.proj.detach().float()  # [m, d]

        def with_dash(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            ws = (w.detach().float() * s).t()  # [dim, inner]: the scaled projection x @ W^T * s
            per_head = ws.view(self.dim, self.heads, self.dim_head)
            dash = torch.einsum("chd,md->chm", per_head, proj).reshape(self.dim, self.heads * self.m)
            return ws, dash

        q, q_dash = with_dash(a.to_q.weight)
        k, k_dash = with_dash(a.to_k.weight)
        v = a.to_v.weight.detach().float().t()
        def t(w: torch.Tensor) -> torch.Tensor:  # x @ W^T as x @ t(W)
            return w.detach().float().t().contiguous()

        return _Layer(_ln(block.attn_norm), torch.cat([q, q_dash], 1).contiguous(),
                      torch.cat([k, v, k_dash], 1).contiguous(), t(a.to_out.weight), a.to_out.bias.detach().float(),
                      _ln(block.ff_norm), t(ff.w1.weight), ff.w1.bias.detach().float(), t(ff.w2.weight),
                      ff.w2.bias.detach().float())

    # -- FAVOR+ pieces -----------------------------------------------------------------------------
    def _query_features(self, qd: torch.Tensor) -> torch.Tensor:
        """phi(q) [..., H*m] from the fused product's query part [..., inner + H*m] (per-token stabiliser)."""
        h, e, m = self.heads, self.dim_head, self.m
        q = qd[..., : self.inner]
        diag = 0.5 * (q * q).unflatten(-1, (h, e)).sum(-1, keepdim=True)
        dash = qd[..., self.inner:].unflatten(-1, (h, m))
        stab = dash.amax(dim=-1, keepdim=True)
        return torch.exp(dash - diag - stab).add_(self.eps).flatten(-2)  # the m^-1/2 factor cancels

    def _key_parts(self, k: torch.Tensor, dash: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(dash - diag [..., H, m], per-token max of dash over heads and features [...]) of the keys."""
        h, e, m = self.heads, self.dim_head, self.m
        diag = 0.5 * (k * k).unflatten(-1, (h, e)).sum(-1, keepdim=True)
        dash = dash.unflatten(-1, (h, m))
        return dash - diag, dash.amax(dim=(-2, -1))

    def _key_features(self, kd: torch.Tensor, kmax: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """phi(k) [B, L, H*m]: the stabiliser is the cell's max over its real keys; padded keys get 0."""
        padded = not bool(mask.all())
        stab = (kmax.masked_fill(~mask, float("-inf")) if padded else kmax).amax(dim=1).view(-1, 1, 1, 1)
        kf = torch.exp(kd - stab).add_(self.eps)  # the m^-1/2 factor cancels between numerator and normaliser
        if padded:
            kf.mul_(mask[:, :, None, None].to(kf.dtype))
        return kf.flatten(-2)

    def _attend(self, qf: torch.Tensor, kf: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Linear attention [B, nq, inner] from phi(q) [B, nq, H*m], phi(k) [B, L, H*m], v [B, L, inner]."""
        h, m, e = self.heads, self.m, self.dim_head
        b, nq = qf.shape[0], qf.shape[1]
        if h > BLOCK_HEADS:
            kf4, qf4, v4 = kf.unflatten(-1, (h, m)), qf.unflatten(-1, (h, m)), v.unflatten(-1, (h, e))
            ctx = torch.einsum("blhm,blhe->bhme", kf4, v4)
            norm = torch.einsum("blhm,bhm->blh", qf4, kf4.sum(1))
            out = torch.einsum("blhm,bhme->blhe", qf4, ctx)
            return (out / norm.clamp_min(1e-12).unsqueeze(-1)).reshape(b, nq, self.inner)
        ctx = torch.bmm(kf.transpose(1, 2), v) * self.ctx_mask  # [B, H*m, inner], head blocks only
        ksum = kf.sum(1).unsqueeze(-1) * self.sum_mask  # [B, H*m, H]
        both = torch.bmm(qf, torch.cat([ctx, ksum], 2))  # numerators and normalisers in one product
        num = both[..., : self.inner].unflatten(-1, (h, e))
        norm = both[..., self.inner:].clamp_min(1e-12).unsqueeze(-1)
        return (num / norm).reshape(b, nq, self.inner)

    def _finish(self, layer: _Layer, x: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        """Residual + output projection, then the feed-forward block (pre-LayerNorm)."""
        x = torch.addmm(layer.b_out, attn.flatten(0, 1), layer.w_out).view_as(x).add_(x)
        h = F.layer_norm(x, (self.dim,), *layer.ln2[:2], layer.ln2[2])
        h = F.gelu(torch.addmm(layer.b1, h.flatten(0, 1), layer.w1))
        return torch.addmm(layer.b2, h, layer.w2).view_as(x).add_(x)

    # -- layer 1 up to the cells' mixing: per (gene, bin) pair ------------------------------------------
    def _first(self, ids: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
        """Per token [..., C]: the token embedding x0, phi(q), dash - diag of the keys, the keys' max dash and v
        of layer 1 (nothing here depends on the rest of the cell)."""
        x0 = self.model.token_embeddings(ids, bins).float()
        layer = self.layers[0]
        h = F.layer_norm(x0, (self.dim,), *layer.ln1[:2], layer.ln1[2])
        kv = torch.matmul(h, layer.w_kv)
        kd, kmax = self._key_parts(kv[..., : self.inner], kv[..., 2 * self.inner:])
        return torch.cat([x0, self._query_features(torch.matmul(h, layer.w_q)), kd.flatten(-2), kmax[..., None],
                          kv[..., self.inner:2 * self.inner]], -1)

    @torch.no_grad()
    def prepare(self, ids: np.ndarray, bins: np.ndarray, min_reuse: float = 4.0) -> np.ndarray:
        """Codes of the tokens (flat ``ids``/``bins`` arrays as in ``tokenize.Tokens``) for ``embed``.

        When the tokens repeat their distinct (gene, bin) pairs at least ``min_reuse`` times on average, layer 1's
        per-pair values are computed once into a table and the codes are table rows; otherwise the codes are
        ``id * (n_bins + 2) + bin`` and ``embed`` computes layer 1 per token. Replaces the last table."""
        nb = self.n_bins
        ids = np.asarray(ids, dtype=np.int64)
        b = np.clip(np.asarray(bins, dtype=np.int64), 0, nb + 1)  # as CellLM.token_embeddings
        b = np.where(ids == CLS_ID, cls_bin(nb), np.where(ids == PAD_ID, pad_bin(nb), b))
        code = ids * (nb + 2) + b
        self.table = None
        if not code.size:
            return code
        present = np.bincount(code) > 0
        uniq = np.flatnonzero(present)
        if code.size < min_reuse * len(uniq):
            return code
        parts = []
        for s in range(0, len(uniq), 65536):  # bounded memory for a vocabulary-sized table
            u = torch.from_numpy(uniq[s:s + 65536]).to(self.device)
            parts.append(self._first(u // (nb + 2), u % (nb + 2)))
        self.table = torch.cat(parts)
        lookup = np.zeros(len(present), np.int64)
        lookup[uniq] = np.arange(len(uniq))
        return lookup[code]

    # -- forward -------------------------------------------------------------------------------------
    @torch.no_grad()
    def embed(self, codes: torch.Tensor, pad_mask: torch.Tensor, pooling: str = "cls") -> torch.Tensor:
        """Cell embeddings [B, dim] from token codes [B, L] of ``prepare`` (any code >= 0 at padded positions)
        and ``pad_mask`` [B, L] (True = real token; position 0 is CLS), as ``CellLM.embed`` of those tokens."""
        if pooling not in ("cls", "mean"):
            raise ValueError(f"pooling must be 'cls' or 'mean', not {pooling!r}")
        mask = pad_mask.bool()
        bsz, n = codes.shape
        hm, d = self.heads * self.m, self.dim
        if self.table is not None:
            t = self.table.index_select(0, codes.reshape(-1)).view(bsz, n, -1)
        else:
            t = self._first(codes // (self.n_bins + 2), codes % (self.n_bins + 2))
        x = t[..., :d]
        qf = t[..., d:d + hm]
        kd = t[..., d + hm:d + 2 * hm].unflatten(-1, (self.heads, self.m))
        kmax = t[..., d + 2 * hm]
        v = t[..., d + 2 * hm + 1:]
        last = len(self.layers) - 1
        nq = 1 if pooling == "cls" else n
        for i, layer in enumerate(self.layers):
            q_len = nq if i == last else n
            if i > 0:
                h = F.layer_norm(x, (d,), *layer.ln1[:2], layer.ln1[2])
                kv = torch.matmul(h, layer.w_kv)
                kd, kmax = self._key_parts(kv[..., : self.inner], kv[..., 2 * self.inner:])
                v = kv[..., self.inner:2 * self.inner]
                qf = self._query_features(torch.matmul(h[:, :q_len], layer.w_q))
            kf = self._key_features(kd, kmax, mask)
            attn = self._attend(qf[:, :q_len], kf, v)
            x = self._finish(layer, x[:, :q_len], attn)
        h = F.layer_norm(x, (d,), *self.norm[:2], self.norm[2])
        if pooling == "cls":
            return h[:, 0]
        w = mask.clone()
        w[:, 0] = False  # gene tokens only, as CellLM.pool
        w = w.unsqueeze(-1).to(h.dtype)
        return (h * w).sum(1) / w.sum(1).clamp_min(1.0)
