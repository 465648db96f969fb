"""CellLM model configuration and size presets.

``full`` is the published CellLM encoder (Zhao et al. 2023): dim 512, depth 10, 16 heads of 64, 266 random
features per head, a 19,379-gene vocabulary with a frozen gene-embedding table (about 52 M parameters, 9.9 M of
them the frozen table). ``small`` and ``tiny`` train on a laptop CPU in minutes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

N_BINS = 6
"""Expression bins 0..5 (log1p of normalised counts, floored, capped at 5)."""

FULL_VOCAB_SIZE = 19379
"""Genes in the published CellLM vocabulary."""


LIMITS: dict[str, int] = {
    "vocab_size": 500_000, "dim": 8192, "depth": 128, "heads": 256, "dim_head": 1024, "ff_mult": 16,
    "n_bins": 256, "nb_features": 8192, "max_len": 1_000_000,
}
"""Upper bounds of a sane CellLM (the published one: vocab 19,379, dim 512, depth 10, 16 heads of 64). A
config from a file is checked against them before any tensor is allocated: a crafted header asking for
dim 10^6 or depth 10^7 is refused instead of exhausting memory."""


@dataclass
class CellLMConfig:
    """Hyper-parameters of a CellLM encoder (pure data, JSON-serialisable via ``to_dict``).

    ``vocab_size`` counts genes only; the embedding table has two more rows (PAD = 0, CLS = 1).
    ``nb_features`` is the number of FAVOR+ random features per head (ignored by exact attention).
    ``proj_seed`` seeds the generator the random projections are drawn from (reproducible models).
    ``max_len`` is the number of gene tokens kept per cell (the top-expressed), None = all.
    """

    vocab_size: int
    dim: int = 512
    depth: int = 10
    heads: int = 16
    dim_head: int = 64
    ff_mult: int = 4
    n_bins: int = N_BINS
    dropout: float = 0.1
    attention: str = "performer"
    nb_features: int = 266
    frozen_gene_emb: bool = False
    max_len: int | None = None
    proj_seed: int = 0
    preset: str = "custom"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.attention not in ("performer", "exact"):
            raise ValueError(f"attention must be 'performer' or 'exact', not {self.attention!r}")
        for name in ("vocab_size", "dim", "depth", "heads", "dim_head", "ff_mult", "n_bins", "nb_features"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"CellLMConfig.{name} must be >= 1 (got {getattr(self, name)!r})")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        for name, top in LIMITS.items():
            v = getattr(self, name)
            if v is not None and int(v) > top:
                raise ValueError(f"CellLMConfig.{name} = {int(v):,} is beyond the sane limit of {top:,}")

    def n_parameters(self) -> int:
        """Parameters (and the random-feature buffers) of a model of this config, counted without building
        it, so its memory can be checked before any allocation."""
        d, inner, ff = self.dim, self.inner_dim, self.dim * self.ff_mult
        emb = (self.vocab_size + 2) * d + (self.n_bins + 2) * d
        attn = 3 * d * inner + inner * d + d + self.nb_features * self.dim_head
        layer = attn + (d * ff + ff) + (ff * d + d) + 4 * d
        return int(emb + self.depth * layer + 2 * d + d * self.n_bins + self.n_bins)

    def weights_bytes(self) -> int:
        """Bytes of the float32 weights of a model of this config."""
        return 4 * self.n_parameters()

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CellLMConfig:
        """Inverse of ``to_dict``; unknown keys are kept in ``extra`` (forward compatibility)."""
        names = {f.name for f in dataclasses.fields(cls)}
        known = {k: v for k, v in d.items() if k in names}
        unknown = {k: v for k, v in d.items() if k not in names}
        if unknown:
            known["extra"] = {**dict(known.get("extra") or {}), **unknown}
        return cls(**known)

    @property
    def inner_dim(self) -> int:
        """Attention width heads x dim_head."""
        return self.heads * self.dim_head


_PRESETS: dict[str, dict[str, Any]] = {
    # the published encoder
    "full": dict(dim=512, depth=10, heads=16, dim_head=64, ff_mult=4, nb_features=266, frozen_gene_emb=True,
                 dropout=0.1, max_len=None),
    # a laptop-sized encoder: minutes per epoch on a few thousand cells on CPU
    "small": dict(dim=128, depth=4, heads=4, dim_head=32, ff_mult=4, nb_features=64, frozen_gene_emb=False,
                  dropout=0.1, max_len=1024),
    # tests, CI, the shipped starter model
    "tiny": dict(dim=32, depth=2, heads=2, dim_head=16, ff_mult=2, nb_features=16, frozen_gene_emb=False,
                 dropout=0.1, max_len=512),
}
PRESETS = tuple(_PRESETS)


def preset(name: str, vocab_size: int, **overrides: Any) -> CellLMConfig:
    """A preset configuration ("tiny" | "small" | "full") for a vocabulary of ``vocab_size`` genes.

    ``overrides`` replace preset values (e.g. ``attention="exact"``, ``dropout=0.0``).
    """
    key = str(name).lower()
    if key not in _PRESETS:
        raise ValueError(f"unknown CellLM preset {name!r}; choose one of {', '.join(PRESETS)}")
    values = {**_PRESETS[key], **overrides}
    return CellLMConfig(vocab_size=int(vocab_size), preset=key, **values)
