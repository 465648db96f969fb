"""Checkpoints: safetensors weights plus JSON metadata, written atomically. Nothing is ever unpickled."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from app.data.atomic import atomic_path
from app.data.errors import DataError


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, Any] | None = None) -> Path:
    """Save ``tensors`` to a ``.safetensors`` file atomically.

    ``metadata`` (any JSON-serialisable dict) is stored in the safetensors header under "omicslab".
    Tensors are made contiguous and moved to the CPU; shared storage is copied.
    """
    path = Path(path)
    clean = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    meta = {"omicslab": json.dumps(metadata or {})}
    with atomic_path(path) as tmp:
        save_file(clean, str(tmp), metadata=meta)
    return path


def load_tensors(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load a file written by ``save_tensors``: returns (tensors, metadata)."""
    path = Path(path)
    if not path.is_file():
        raise DataError("checkpoint file not found", path, "Choose an existing .safetensors file or run folder.")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            raw_meta = (f.metadata() or {}).get("omicslab", "{}")
        tensors = load_file(str(path), device=str(device))
    except Exception as exc:  # safetensors raises several types for a corrupt header
        raise DataError(f"not a readable safetensors checkpoint ({exc})", path,
                        "The file may be truncated or of another format; re-export it.") from exc
    return tensors, json.loads(raw_meta)


def save_module(path: str | Path, module: torch.nn.Module, metadata: dict[str, Any] | None = None) -> Path:
    """Save a module's ``state_dict`` atomically as safetensors."""
    return save_tensors(path, dict(module.state_dict()), metadata)
