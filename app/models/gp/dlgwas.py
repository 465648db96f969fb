"""DLGWAS (Liu et al. 2019, Front Genet 10:1091): a residual "dual stream" CNN on one-hot genotypes.

Input (batch, 4, M): channels AA, Aa, aa, missing. All convolutions are linear (no activation):
main: Conv1d(4->10, 4, same) -> Conv1d(10->10, 20, same) -> Dropout; shortcut: Conv1d(4->10, 4, same);
Add -> Conv1d(10->10, 4, same) -> Dropout -> Flatten -> Dropout -> Linear(10M -> n_out) -> ISRU.
Keras' L2 regularisers (0.1 on conv kernels, 0.01 on conv biases) are an explicit penalty.
"""

from __future__ import annotations

import torch
from torch import nn

from app.models.gp.dnngp import SameConv1d
from app.models.gp.dropout import Dropout


class ISRU(nn.Module):
    """Inverse square root unit ``x / sqrt(1 + a x^2)``: output bounded by +-1/sqrt(a)."""

    def __init__(self, a: float = 0.03) -> None:
        super().__init__()
        self.a = float(a)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(1.0 + self.a * x * x)


class DLGWAS(nn.Module):
    """DLGWAS network on ``n_markers`` one-hot coded markers.

    Args:
        n_markers: M.
        n_out: traits predicted (the original: 1).
        dropout: rate of the three dropout layers (0.75 in the original).
        isru_a: ISRU parameter (0.03 height/oil, 0.02 moisture/protein, 0.5 yield in the original).
        l2_kernel, l2_bias: Keras L2 coefficients on conv kernels/biases (0.1, 0.01).
    """

    INPUT_CONVS = ("conv1", "shortcut")  # convolutions that read the network input (no gradient flows into it)

    def __init__(self, n_markers: int, n_out: int = 1, channels: int = 10, dropout: float = 0.75,
                 isru_a: float = 0.03, l2_kernel: float = 0.1, l2_bias: float = 0.01) -> None:
        super().__init__()
        self.n_markers = n_markers
        self.l2_kernel, self.l2_bias = float(l2_kernel), float(l2_bias)
        # channels-last (NHWC) convolutions: oneDNN's kernels for these 4-10 channel layers are faster on that
        # layout (wheat599 E1, 5 folds, one thread: 107 -> 73 CPU-s, the same r and best epochs)
        self.conv1 = SameConv1d(4, channels, 4, channels_last=True)
        self.conv2 = SameConv1d(channels, channels, 20, channels_last=True)
        self.shortcut = SameConv1d(4, channels, 4, channels_last=True)
        self.conv3 = SameConv1d(channels, channels, 4, channels_last=True)
        self.drop1 = Dropout(dropout)
        self.drop2 = Dropout(dropout)
        self.drop3 = Dropout(dropout)
        self.fc = nn.Linear(channels * n_markers, n_out)
        self.isru = ISRU(isru_a)
        self.reset_parameters()

    def convs(self) -> tuple[SameConv1d, ...]:
        return (self.conv1, self.conv2, self.shortcut, self.conv3)

    def reset_parameters(self) -> None:
        """Conv kernels truncated normal (std 0.05), zero biases; the dense layer Glorot uniform (Keras)."""
        for conv in self.convs():
            nn.init.trunc_normal_(conv.weight, std=0.05, a=-0.1, b=0.1)
            nn.init.zeros_(conv.bias)
        nn.init.xavier_uniform_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, 4, M) -> (batch, n_out)."""
        main = self.drop1(self.conv2(self.conv1(x)))
        h = self.drop2(self.conv3(main + self.shortcut(x)))
        return self.isru(self.fc(self.drop3(h.flatten(1))))

    def l2_penalty(self) -> torch.Tensor:
        """Keras-style ``sum(coef * w^2)`` over the conv kernels and biases."""
        total = self.fc.weight.new_zeros(())
        for conv in self.convs():
            total = total + self.l2_kernel * conv.weight.pow(2).sum() + self.l2_bias * conv.bias.pow(2).sum()
        return total
