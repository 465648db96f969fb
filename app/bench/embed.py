"""``python -m app bench embed [--json]``: CellLM inference speed (cells/s) for the ``tiny`` and ``full``
presets, Performer (FAVOR+) vs exact attention (``scaled_dot_product_attention``), on the CPU and, when
one is visible, on the GPU.

Cells are synthetic (``--min-genes``..``--max-genes`` expressed genes, uniform; a 10x cell typically expresses
1,000-3,000 genes, ``--max-genes 3000`` shows the long-sequence regime where linear attention pays off).
Batches are length-sorted as the embed job does; the model runs in eval mode under ``torch.inference_mode``
(bf16 autocast on a GPU that supports it). One warm-up batch is not timed.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
import torch

from app.engine.celllm.tokenize import collate
from app.models.celllm import CellLM, preset


def synthetic_cells(n: int, vocab: int, lo: int, hi: int, seed: int, n_bins: int = 6
                    ) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` tokenised cells with ``lo``..``hi`` expressed genes each."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        k = int(rng.integers(lo, hi + 1))
        genes = np.sort(rng.choice(vocab, min(k, vocab), replace=False)) + 2
        out.append((np.concatenate([[1], genes]).astype(np.int64),
                    np.concatenate([[n_bins], rng.integers(0, n_bins, len(genes))]).astype(np.int64)))
    return out


def measure(preset_name: str, attention: str, device: torch.device, n_cells: int, batch_size: int, lo: int,
            hi: int, seed: int = 0) -> dict[str, Any]:
    """Cells/s of ``model.embed`` over ``n_cells`` synthetic cells."""
    vocab = 19379 if preset_name == "full" else 2000
    torch.manual_seed(seed)
    model = CellLM(preset(preset_name, vocab, attention=attention)).to(device).eval()
    cells = synthetic_cells(n_cells, vocab, lo, hi, seed)
    order = np.argsort([len(c[0]) for c in cells], kind="stable")
    batches = [collate([cells[i] for i in order[s:s + batch_size]]) for s in range(0, n_cells, batch_size)]
    amp = device.type == "cuda" and torch.cuda.is_bf16_supported()

    def run(bs: list) -> None:
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            for g, b, m in bs:
                model.embed(g.to(device), b.to(device), m.to(device)).float().cpu()

    run(batches[-1:])  # warm-up on the longest batch
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    run(batches)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    dt = time.perf_counter() - t0
    tokens = sum(len(c[0]) for c in cells)
    return {"preset": preset_name, "attention": attention, "device": str(device), "n_cells": n_cells,
            "batch_size": batch_size, "mean_tokens": round(tokens / n_cells, 1), "seconds": round(dt, 3),
            "cells_per_s": round(n_cells / dt, 2), "tokens_per_s": round(tokens / dt, 1),
            "threads": torch.get_num_threads()}


def main(argv: list[str]) -> int:
    """Run the benchmark (see the module docstring)."""
    p = argparse.ArgumentParser(prog="python -m app bench embed", description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--presets", default="tiny,full")
    p.add_argument("--devices", default="auto", help="auto (cpu + cuda when visible) or a comma list")
    p.add_argument("--min-genes", type=int, default=200)
    p.add_argument("--max-genes", type=int, default=1000)
    p.add_argument("--cells-tiny", type=int, default=512)
    p.add_argument("--cells-full", type=int, default=16, help="cells for full on the CPU (x16 on a GPU)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    devices = (["cpu"] + (["cuda"] if torch.cuda.is_available() else [])) if args.devices == "auto" \
        else [d.strip() for d in args.devices.split(",")]
    rows = []
    for dev_name in devices:
        dev = torch.device(dev_name)
        for pr in [x.strip() for x in args.presets.split(",") if x.strip()]:
            n = args.cells_tiny if pr != "full" else args.cells_full * (16 if dev.type == "cuda" else 1)
            for att in ("performer", "exact"):
                r = measure(pr, att, dev, n, args.batch_size, args.min_genes, args.max_genes)
                rows.append(r)
                if not args.json:
                    print(f"{r['preset']:<5} {r['attention']:<9} {r['device']:<5} {r['cells_per_s']:>10.1f} cells/s "
                          f"{r['tokens_per_s']:>11.0f} tokens/s  ({r['n_cells']} cells, ~{r['mean_tokens']} tokens, "
                          f"{r['threads']} thread(s))")
    if args.json:
        print(json.dumps({"bench": "embed", "rows": rows}))
    return 0
