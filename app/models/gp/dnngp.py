"""DNNGP (Wang et al. 2023, Mol Plant 16:279): three 1-D convolutions over principal-component scores.

Layers as the original (identical in the paper-era v1 and the current v3.1), shapes (batch, channels, k):
Conv1d(1->64, 4, same) + act -> Dropout(d1) -> BN -> Conv1d(64->64, 4, same) + act -> Dropout(d2) -> BN
-> Conv1d(64->64, 4, same) + act -> BN -> Flatten -> Linear(64k -> 3) -> Dropout(d2) -> Linear(3 -> n_out).
Keras' L2 kernel/bias regularisers are kept as an explicit penalty (:meth:`DNNGP.l2_penalty`), and Keras'
BatchNorm(momentum 0.99, eps 1e-3) is PyTorch's BatchNorm1d(momentum 0.01, eps 1e-3).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from app.models.gp.dropout import Dropout

# (kernel coefficient, bias coefficient) of the Keras L2 regularisers of conv1..conv3.
L2_COEFS = ((0.01, 0.1), (1e-3, 1e-5), (1e-3, 1e-4))


class SameConv1d(nn.Conv1d):
    """Conv1d with Keras/TensorFlow ``padding="same"`` (stride 1): pad (k-1)//2 before and the rest after.

    Explicit padding avoids PyTorch's copy-and-warn path for even kernels; the result is the same. It runs as a
    height-1 ``conv2d``: oneDNN's 2-D kernels measured up to 2x faster on a CPU than its 1-D ones for these
    shapes (DLGWAS's 10 -> 10 channel, kernel-4 layer, forward + backward: 12 ms vs 23 ms a batch of 32).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, channels_last: bool = False) -> None:
        super().__init__(in_channels, out_channels, kernel_size)
        self._pad = ((kernel_size - 1) // 2, kernel_size - 1 - (kernel_size - 1) // 2)
        self.channels_last = channels_last  # run on the NHWC layout (faster for few channels; same convolution)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.pad(x, self._pad).unsqueeze(-2)
        if self.channels_last:
            h = h.contiguous(memory_format=torch.channels_last)
        return F.conv2d(h, self.weight.unsqueeze(-2), self.bias).squeeze(-2)


class BatchNorm1d(nn.BatchNorm1d):
    """``nn.BatchNorm1d`` on (batch, channels, length) computed as a 2-D batch norm of (batch, channels,
    length, 1): the very same numbers (outputs, gradients, running statistics: tested bit for bit) from
    PyTorch's CPU kernel for 4-D inputs, which measured ~1.6x faster forward + backward on DNNGP's
    64 x 64 x 251 activations."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() not in (2, 3, 4):
            raise ValueError(f"expected 2D, 3D or 4D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3:
            return super().forward(x)
        return super().forward(x.unsqueeze(-1)).squeeze(-1)


def activation(name: str) -> nn.Module:
    """``relu`` (v1) or ``swish`` (v3; = SiLU)."""
    if name == "relu":
        return nn.ReLU()
    if name in ("swish", "silu"):
        return nn.SiLU()
    raise ValueError(f"unknown activation {name!r}; use relu or swish")


class DNNGP(nn.Module):
    """DNNGP network on ``n_features`` PC scores; input (batch, n_features) or (batch, 1, n_features).

    Args:
        n_features: number of principal components k (251 for wheat599).
        act: "relu" (v1) or "swish" (v3).
        dropout1, dropout2: d1 (after conv1) and d2 (after conv2 and after the 3-unit dense layer).
        n_out: traits predicted (the original: 1).
        channels, kernel, hidden: 64, 4 and 3 in the original.
    """

    INPUT_CONVS = ("conv1",)  # convolutions that read the network input (no gradient flows into it)

    def __init__(self, n_features: int, act: str = "relu", dropout1: float = 0.5, dropout2: float = 0.5,
                 n_out: int = 1, channels: int = 64, kernel: int = 4, hidden: int = 3) -> None:
        super().__init__()
        self.n_features = n_features
        self.conv1 = SameConv1d(1, channels, kernel)
        self.conv2 = SameConv1d(channels, channels, kernel)
        self.conv3 = SameConv1d(channels, channels, kernel)
        self.act1, self.act2, self.act3 = activation(act), activation(act), activation(act)
        self.drop1 = Dropout(dropout1)
        self.drop2 = Dropout(dropout2)
        self.drop3 = Dropout(dropout2)
        self.bn1 = BatchNorm1d(channels, eps=1e-3, momentum=0.01)
        self.bn2 = BatchNorm1d(channels, eps=1e-3, momentum=0.01)
        self.bn3 = BatchNorm1d(channels, eps=1e-3, momentum=0.01)
        self.fc1 = nn.Linear(channels * n_features, hidden)
        self.fc2 = nn.Linear(hidden, n_out)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Conv kernels: truncated normal (std 0.05), zero biases; dense layers: Glorot uniform (Keras)."""
        for conv in (self.conv1, self.conv2, self.conv3):
            nn.init.trunc_normal_(conv.weight, std=0.05, a=-0.1, b=0.1)
            nn.init.zeros_(conv.bias)
        for fc in (self.fc1, self.fc2):
            nn.init.xavier_uniform_(fc.weight)
            nn.init.zeros_(fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, k) or (batch, 1, k) -> (batch, n_out)."""
        if x.dim() == 2:
            x = x.unsqueeze(1)
        # .float(): under bf16 autocast the convolutions run in bf16, the activations, dropout masks and
        # BatchNorm stay fp32 (a no-op in fp32)
        h = self.bn1(self.drop1(self.act1(self.conv1(x).float())))
        h = self.bn2(self.drop2(self.act2(self.conv2(h).float())))
        h = self.bn3(self.act3(self.conv3(h).float()))
        return self.fc2(self.drop3(self.fc1(h.flatten(1))))

    def l2_penalty(self) -> torch.Tensor:
        """Keras-style ``sum(coef * w^2)`` over the conv kernels and biases (add it to the loss)."""
        total = self.conv1.weight.new_zeros(())
        for conv, (kc, bc) in zip((self.conv1, self.conv2, self.conv3), L2_COEFS, strict=True):
            total = total + kc * conv.weight.pow(2).sum() + bc * conv.bias.pow(2).sum()
        return total
