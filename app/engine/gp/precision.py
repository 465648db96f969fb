"""The arithmetic of the deep GP networks' training steps: one setting, ``params[MODEL]["precision"]``.

bf16 runs the convolutions and dense layers of each training step (forward and backward) under
``torch.autocast``; the master weights, the optimiser, the loss, the L2 penalty and BatchNorm stay fp32, and so
do validation (early stopping) and every prediction. On a CPU with native bf16 instructions oneDNN's bf16
convolutions are several times faster than fp32 ones for DNNGP's 64-channel layers.
"""

from __future__ import annotations

import torch

from app.data.errors import DataError

PRECISIONS = ("auto", "fp32", "bf16")
"""Training-step arithmetic: ``fp32``; ``bf16`` (the convolutions and dense layers of each training step's
forward and backward under ``torch.autocast``; weights, optimiser, loss, BatchNorm, validation and predictions
stay fp32); ``auto``: bf16 on a CPU with native bf16 instructions (AVX512-BF16 or AMX), fp32 elsewhere."""


def resolve_precision(precision: str, device: torch.device) -> str:
    """``fp32`` or ``bf16``: what ``precision`` (one of ``PRECISIONS``) means on ``device``.

    Raises:
        DataError: an unknown value.
    """
    if precision not in PRECISIONS:
        raise DataError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision
    # emulated bf16 (no native instructions) is slower than fp32; on CUDA bf16 was not measured here
    # torch's probes are private: a release without them reads as "not native" (fp32), never as a crash
    native = any(getattr(torch.cpu, probe, lambda: False)()
                 for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return "bf16" if device.type == "cpu" and native else "fp32"


def train_autocast(precision: str, device: torch.device) -> torch.autocast:
    """The context a training step's forward runs in: bf16 autocast when ``precision`` is ``bf16``."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


__all__ = ["PRECISIONS", "resolve_precision", "train_autocast"]
