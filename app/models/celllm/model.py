"""CellLM: a Performer encoder over a cell's expressed genes (token = gene embedding + expression-bin embedding).

Token ids: 0 = PAD, 1 = CLS, vocabulary gene ``i`` -> ``i + 2`` (``gene_token``). Bins 0..n_bins-1 are
expression levels; the CLS and PAD positions get their own bin rows (``cls_bin``/``pad_bin`` of
``n_bins``), chosen from the gene ids so a caller cannot get them wrong. No positional encoding: a cell is a
set of genes.
"""

from __future__ import annotations

import torch
from torch import nn

from app.models.celllm.config import CellLMConfig
from app.models.celllm.performer import PerformerEncoder

PAD_ID = 0
CLS_ID = 1
GENE_OFFSET = 2


def gene_token(i: int | torch.Tensor) -> int | torch.Tensor:
    """Token id of vocabulary gene ``i`` (0-based)."""
    return i + GENE_OFFSET


def cls_bin(n_bins: int) -> int:
    """Bin index used at the CLS position (= n_bins, the original's token 6)."""
    return n_bins


def pad_bin(n_bins: int) -> int:
    """Bin index used at padded positions (= n_bins + 1, the original's token 7)."""
    return n_bins + 1


def mask_bin(n_bins: int) -> int:
    """Bin index of a masked gene in masked expression modelling: the "no expression information" row it
    shares with padding (padded positions never reach a real token, so the row is free to learn "masked")."""
    return n_bins + 1


class CellLM(nn.Module):
    """The CellLM encoder.

    ``forward(gene_ids, bins, pad_mask) -> hidden [B, L, dim]``; ``embed(...) -> [B, dim]`` (CLS or masked
    mean over gene tokens); ``mlm_logits(hidden) -> [B, L, n_bins]``.
    """

    def __init__(self, config: CellLMConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.gene_emb = nn.Embedding(c.vocab_size + GENE_OFFSET, c.dim, padding_idx=PAD_ID)
        self.bin_emb = nn.Embedding(c.n_bins + 2, c.dim)
        self.emb_dropout = nn.Dropout(c.dropout)
        self.encoder = PerformerEncoder(c.dim, c.depth, c.heads, c.dim_head, c.ff_mult, c.nb_features, c.dropout,
                                        c.attention, seed=c.proj_seed)
        self.mlm_head = nn.Linear(c.dim, c.n_bins)
        self._init_weights()
        if c.frozen_gene_emb:
            self.gene_emb.weight.requires_grad_(False)

    @torch.no_grad()
    def _init_weights(self) -> None:
        nn.init.normal_(self.gene_emb.weight, std=0.02)
        self.gene_emb.weight[PAD_ID].zero_()
        self.gene_emb.weight[CLS_ID].fill_(1.0 / self.config.dim ** 0.5)
        nn.init.normal_(self.bin_emb.weight, std=0.02)

    # -- inputs ------------------------------------------------------------------------------------
    def token_embeddings(self, gene_ids: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
        """gene embedding + bin embedding, [B, L, dim]. CLS/PAD bin rows are chosen from ``gene_ids``; a gene
        token may carry ``mask_bin`` (masked expression modelling)."""
        nb = self.config.n_bins
        b = bins.clamp(0, nb + 1)
        b = torch.where(gene_ids == CLS_ID, torch.full_like(b, cls_bin(nb)), b)
        b = torch.where(gene_ids == PAD_ID, torch.full_like(b, pad_bin(nb)), b)
        return self.gene_emb(gene_ids) + self.bin_emb(b)

    def forward(self, gene_ids: torch.Tensor, bins: torch.Tensor, pad_mask: torch.Tensor,
                n_query: int | None = None) -> torch.Tensor:
        """Hidden states [B, L, dim] (final LayerNorm applied). ``pad_mask`` True = real token; position 0 is
        CLS. Padded positions are excluded as keys, and their outputs are zeroed. ``n_query``: the last layer
        computes only the first ``n_query`` positions ([B, n_query, dim]; 1 = the CLS output)."""
        pad_mask = pad_mask.bool()
        x = self.emb_dropout(self.token_embeddings(gene_ids, bins))
        h = self.encoder(x, pad_mask, n_query)
        return h * pad_mask[:, : h.shape[1]].unsqueeze(-1).to(h.dtype)

    def pool(self, hidden: torch.Tensor, pad_mask: torch.Tensor, pooling: str = "cls") -> torch.Tensor:
        """Cell embedding from hidden states: CLS output, or the mean over real gene tokens ("mean")."""
        if pooling == "cls":
            return hidden[:, 0]
        if pooling == "mean":
            m = pad_mask.bool().clone()
            m[:, 0] = False  # gene tokens only
            w = m.unsqueeze(-1).to(hidden.dtype)
            return (hidden * w).sum(1) / w.sum(1).clamp_min(1.0)
        raise ValueError(f"pooling must be 'cls' or 'mean', not {pooling!r}")

    def embed(self, gene_ids: torch.Tensor, bins: torch.Tensor, pad_mask: torch.Tensor,
              pooling: str = "cls") -> torch.Tensor:
        """Cell embeddings [B, dim]. CLS pooling runs the last layer for the CLS position only."""
        if pooling == "cls":
            return self.forward(gene_ids, bins, pad_mask, n_query=1)[:, 0]
        return self.pool(self.forward(gene_ids, bins, pad_mask), pad_mask, pooling)

    def mlm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Bin logits [B, L, n_bins] for masked expression modelling."""
        return self.mlm_head(hidden)

    # -- projections -------------------------------------------------------------------------------
    def redraw_projections(self, seed: int | None = None) -> None:
        """Draw new Performer projections (explicit only; never called inside a training step)."""
        self.encoder.redraw_projections(seed)

    def set_attention(self, attention: str) -> None:
        """Switch between "performer" and "exact" attention without touching the weights."""
        self.encoder.set_attention(attention)
        self.config.attention = attention

    @property
    def layers(self) -> nn.ModuleList:
        """The encoder blocks (fine-tuning freezes by layer)."""
        return self.encoder.layers

    def n_params(self) -> dict[str, int]:
        """Trainable and frozen parameter counts."""
        tr = sum(p.numel() for p in self.parameters() if p.requires_grad)
        fr = sum(p.numel() for p in self.parameters() if not p.requires_grad)
        return {"trainable": int(tr), "frozen": int(fr), "total": int(tr + fr)}
