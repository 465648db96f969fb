"""DeepGS (Ma et al. 2018, Planta 248:1307): the "8-32-1" convolutional network on the marker matrix.

Conv1d(1->8, 18, stride 1, no padding) -> ReLU -> MaxPool(4, 4) -> Dropout 0.2 -> Flatten -> Linear(->32)
-> Sigmoid -> Dropout 0.1 -> Linear(32->n_out) -> Dropout 0.05 (on the output, in training, as the
original). Weights start U(-0.01, 0.01) as in the R package.
"""

from __future__ import annotations

import torch
from torch import nn

from app.models.gp.dropout import Dropout


def pooled_length(n_markers: int, kernel: int = 18, pool: int = 4) -> int:
    """Length after the valid convolution and the (kernel=stride=pool) max-pooling."""
    conv = n_markers - kernel + 1
    return (conv - pool) // pool + 1 if conv >= pool else 0


class WindowMaxPool1d(nn.MaxPool1d):
    """``nn.MaxPool1d(k, k)`` (non-overlapping windows, a partial last window dropped) as a max over a reshaped
    view: the same values and the same gradient, ties going to the first (tested), ~1.4x cheaper on a CPU than
    max_pool1d's kernel for DeepGS's (batch, 8, ~1,262) activations."""

    def __init__(self, kernel_size: int) -> None:
        super().__init__(kernel_size, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = int(self.kernel_size)
        n = (x.shape[-1] - k) // k + 1
        return x[..., :n * k].unflatten(-1, (n, k)).max(-1).values


class DeepGS(nn.Module):
    """DeepGS network on ``n_markers`` additive codes; input (batch, n_markers) or (batch, 1, n_markers).

    Args:
        n_markers: M (must be at least kernel + pool - 1 = 21).
        n_out: traits predicted (the original: 1).
        dropouts: (after pooling, after the hidden layer, on the output): (0.2, 0.1, 0.05) in the original.
        init_range: weights and biases start uniform in +-init_range (0.01 in the original).
    """

    INPUT_CONVS = ("conv",)  # convolutions that read the network input (no gradient flows into it)

    def __init__(self, n_markers: int, n_out: int = 1, channels: int = 8, kernel: int = 18, pool: int = 4,
                 hidden: int = 32, dropouts: tuple[float, float, float] = (0.2, 0.1, 0.05),
                 init_range: float = 0.01) -> None:
        super().__init__()
        length = pooled_length(n_markers, kernel, pool)
        if length < 1:
            raise ValueError(f"DeepGS needs at least {kernel + pool - 1} markers, got {n_markers}")
        self.n_markers = n_markers
        self.init_range = init_range
        self.conv = nn.Conv1d(1, channels, kernel)
        self.pool = WindowMaxPool1d(pool)
        self.drop1 = Dropout(dropouts[0])
        self.fc1 = nn.Linear(channels * length, hidden)
        self.drop2 = Dropout(dropouts[1])
        self.fc2 = nn.Linear(hidden, n_out)
        self.drop3 = Dropout(dropouts[2])
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Every weight and bias uniform in +-init_range (MXNet's Uniform(0.01) in the R package)."""
        for p in self.parameters():
            nn.init.uniform_(p, -self.init_range, self.init_range)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, M) or (batch, 1, M) -> (batch, n_out)."""
        if x.dim() == 2:
            x = x.unsqueeze(1)
        # pool, then ReLU: the same values as ReLU then pool (ReLU is monotone), on a 4x smaller tensor
        h = self.drop1(torch.relu(self.pool(self.conv(x))))
        h = self.drop2(torch.sigmoid(self.fc1(h.flatten(1))))
        return self.drop3(self.fc2(h))

    def l2_penalty(self) -> torch.Tensor:
        """No explicit penalty (the original uses weight decay, applied by the optimiser)."""
        return self.fc2.weight.new_zeros(())
