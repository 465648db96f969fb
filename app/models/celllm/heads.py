"""Classifier heads on the pooled CellLM cell embedding (fine-tuning's annotation head, pretraining's
optional supervised head)."""

from __future__ import annotations

import torch
from torch import nn


class ClassifierHead(nn.Module):
    """Dropout + linear layer on the pooled cell embedding (fine-tuning for cell types).

    The original CellLM reduces every token to a scalar, scatters it into a 19,380-long gene vector and
    runs an MLP on that. Pooling instead makes the head independent of the vocabulary size (a few thousand
    parameters, not ~10 M), works for any gene panel, and reuses exactly the embedding users see in
    ``obsm['X_celllm']``; the contrastive pretraining objective also shapes the pooled embedding directly.
    """

    def __init__(self, dim: int, n_classes: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.dropout(x))


class LinearReadout(nn.Module):
    """The linear path of the ``cls+linear`` readout: logits from a cell's scaled expression of a fixed gene list.

    Its logits are added to the pooled-embedding head's, so the classifier can express the logistic-regression
    solution a linear tool (CellTypist) finds, and the encoder only has to add what that misses. The scaling
    (log1p of counts per 1e4, standardised on the training cells, clipped at 10) is done by the engine
    (``app.engine.celllm.readout``); this module holds only the weights.
    """

    def __init__(self, n_genes: int, n_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(n_genes, n_classes)
        nn.init.zeros_(self.linear.weight)  # from zero: the pooled head alone until training moves it
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


class SupervisedHead(nn.Module):
    """Linear classifier on the CLS embedding (pretraining's optional supervised objective)."""

    def __init__(self, dim: int, n_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)
