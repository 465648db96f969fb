"""``python -m app bench embed [--json]``: CellLM speed. Three kinds of rows (``--rows``):

- ``model``: inference cells/s of the bare model for the ``tiny`` and ``full`` presets, Performer (FAVOR+) vs
  exact attention (``scaled_dot_product_attention``), and Performer through ``FastCellLM`` (the inference path
  of ``celllm embed``, float32) on the same cells, on the CPU and, when one is visible, on the GPU.
- ``end_to_end``: ``celllm embed`` as a user runs it (read the .h5ad, tokenise, embed, write the .h5ad) on a
  synthetic file of ``--e2e-cells`` cells (default 100,000) with ~``--e2e-genes`` expressed genes (1,000) named
  after the shipped model's vocabulary, with the shipped model: ``end_to_end_cells_per_s`` (goal 2,000 on 2
  cores). The file is generated once and kept in the temp folder.
- ``finetune``: fine-tuning the shipped model on a synthetic labelled set (``--ft-cells``): training cells/s
  (goal 500 on 2 cores), and the live map's training-time overhead as the ratio of the epoch loop's time with
  ``--live-cells`` (default 5,000) to the same run with the live map off (goal at most 1.10).

Cells are synthetic (``--min-genes``..``--max-genes`` expressed genes, uniform; a 10x cell typically expresses
1,000-3,000 genes, ``--max-genes 3000`` shows the long-sequence regime where linear attention pays off).
Batches are length-sorted as the embed job does; the model runs in eval mode under ``torch.inference_mode``
(bf16 autocast on a GPU that supports it). One warm-up batch is not timed.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from app.engine.celllm.tokenize import Tokens, collate, length_batches
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
            hi: int, seed: int = 0, fast: bool = False) -> dict[str, Any]:
    """Cells/s of ``model.embed`` over ``n_cells`` synthetic cells; ``fast``: of ``FastCellLM`` (the inference
    path ``celllm embed`` takes) on the same cells and batches, float32."""
    from app.engine.celllm.tokenize import pad_values
    from app.models.celllm.inference import FastCellLM

    vocab = 19379 if preset_name == "full" else 2000
    torch.manual_seed(seed)
    model = CellLM(preset(preset_name, vocab, attention=attention)).to(device).eval()
    cells = synthetic_cells(n_cells, vocab, lo, hi, seed)
    tok = Tokens.from_cells(cells)
    order = length_batches(tok.lengths, batch_size)
    amp = device.type == "cuda" and torch.cuda.is_bf16_supported() and not fast
    if fast:
        inf = FastCellLM(model)
        codes = inf.prepare(tok.ids, tok.bins)
        batches = [pad_values(codes, tok.ptr, rows) for rows in order]
    else:
        batches = [collate(tok.take(rows)) for rows in order]

    def run(bs: list) -> None:
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            for batch in bs:
                if fast:
                    inf.embed(batch[0].to(device), batch[1].to(device)).cpu()
                else:
                    g, b, m = batch
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
    return {"preset": preset_name, "attention": attention + (" (FastCellLM)" if fast else ""),
            "device": str(device), "n_cells": n_cells,
            "batch_size": batch_size, "mean_tokens": round(tokens / n_cells, 1), "seconds": round(dt, 3),
            "cells_per_s": round(n_cells / dt, 2), "tokens_per_s": round(tokens / dt, 1),
            "threads": torch.get_num_threads()}


def synthetic_h5ad(n_cells: int, genes: list[str], mean_expressed: int, seed: int = 0,
                   n_types: int = 0, folder: str | Path | None = None) -> Path:
    """A raw-count .h5ad of ``n_cells`` cells expressing about ``mean_expressed`` of ``genes`` each (kept in the
    temp folder and reused: generating 100k cells takes a while). With ``n_types`` > 0, ``obs['cell_type']``
    and type-specific marker genes (50 per type, higher counts) make a learnable annotation task."""
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    folder = Path(folder or os.environ.get("OMICSLAB_BENCH_CACHE") or Path(tempfile.gettempdir()) / "omicslab-bench")
    path = folder / f"synthetic-{n_cells}x{len(genes)}-{mean_expressed}-{n_types}-s{seed}.h5ad"
    if path.is_file():
        return path
    rng = np.random.default_rng(seed)
    g = len(genes)
    k = np.clip(rng.integers(int(mean_expressed * 0.8), int(mean_expressed * 1.2) + 1, n_cells), 1, g)
    rows = np.repeat(np.arange(n_cells), k)
    cols = rng.integers(0, g, int(k.sum()), dtype=np.int64).astype(np.int32)  # duplicates summed below
    vals = rng.geometric(0.35, cols.size).astype(np.float32)
    obs = pd.DataFrame(index=[f"cell{i}" for i in range(n_cells)])
    if n_types:
        types = rng.integers(0, n_types, n_cells)
        markers = rng.choice(g, (n_types, 50), replace=False)
        mrow = np.repeat(np.arange(n_cells), 50)
        rows = np.concatenate([rows, mrow])
        cols = np.concatenate([cols, markers[types].ravel().astype(np.int32)])
        vals = np.concatenate([vals, rng.geometric(0.08, mrow.size).astype(np.float32)])
        obs["cell_type"] = pd.Categorical([f"type{t}" for t in types])
    x = sp.csr_matrix((vals, (rows, cols)), shape=(n_cells, g))
    x.sum_duplicates()
    a = ad.AnnData(x, obs=obs, var=pd.DataFrame(index=list(genes)))
    from app.data.export import write_h5ad_atomic

    write_h5ad_atomic(a, path)
    return path


def end_to_end(n_cells: int, mean_genes: int, threads: int | None, batch_size: int, device: str = "cpu"
               ) -> dict[str, Any]:
    """``celllm embed`` of a synthetic file with the shipped model, timed from reading to the written file."""
    from app.engine.celllm.embed import embed, load_for_inference

    lm = load_for_inference(None, torch.device("cpu"))
    t0 = time.perf_counter()
    data = synthetic_h5ad(n_cells, lm.vocab, mean_genes)
    gen_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "embedded.h5ad"
        t0, c0 = time.perf_counter(), time.process_time()
        res = embed({"data": str(data), "out": str(out), "device": device, "threads": threads,
                     "batch_size": batch_size})
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"row": "end_to_end", "n_cells": res["n_cells"], "mean_expressed_genes": mean_genes,
            "model": "shipped celllm-tiny", "max_len": lm.extra.get("max_len"), "seconds": round(dt, 2),
            "end_to_end_cells_per_s": round(res["n_cells"] / dt, 1), "threads": torch.get_num_threads(),
            # CPU seconds this process got: on a busy machine wall time overstates the cost, CPU time does not
            "cpu_seconds": round(cpu, 2), "cells_per_cpu_s": round(res["n_cells"] / max(cpu, 1e-9), 1),
            "batch_size": batch_size, "device": device, "data": str(data), "stages_s": res["stages_s"],
            "generate_s_first_time": round(gen_s, 1)}


def finetune_rows(n_cells: int, epochs: int, live_cells: int, threads: int | None) -> dict[str, Any]:
    """Fine-tune the shipped model twice on the same synthetic labelled cells: live map off, then on."""
    from app.engine.celllm.embed import load_for_inference
    from app.engine.celllm.finetune import finetune

    vocab = load_for_inference(None, torch.device("cpu")).vocab
    data = synthetic_h5ad(n_cells, vocab[:3000], 300, seed=1, n_types=6)
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, n_live in (("off", 0), ("on", live_cells)):
            m = finetune({"data": str(data), "label_key": "cell_type", "run_dir": str(Path(tmp) / name),
                          "epochs": epochs, "patience": epochs, "device": "cpu", "threads": threads,
                          "live_cells": n_live, "baseline_genes": 500})
            runs[name] = m
    off, on = runs["off"]["timing"], runs["on"]["timing"]
    return {"row": "finetune", "n_cells": n_cells, "n_train": runs["off"]["n_train"], "epochs": epochs,
            "train_cells_per_s": off["train_cells_per_s"], "train_seconds": off["train_seconds"],
            "epoch_loop_seconds_live_off": off["loop_seconds"], "epoch_loop_seconds_live_on": on["loop_seconds"],
            "live_cells": min(live_cells, n_cells), "live_seconds": on["live_seconds"],
            "live_overhead_ratio": round(on["loop_seconds"] / off["loop_seconds"], 3),
            "test_accuracy": runs["off"]["test"]["accuracy"], "threads": torch.get_num_threads(),
            "train_cells_per_cpu_s": off["train_cells_per_cpu_s"],
            "epoch_loop_cpu_seconds_live_off": off["loop_cpu_seconds"],
            "epoch_loop_cpu_seconds_live_on": on["loop_cpu_seconds"],
            "live_overhead_ratio_cpu": round(on["loop_cpu_seconds"] / off["loop_cpu_seconds"], 3)}


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
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: the usable cores, at most 8; the model rows use 1 unless given)")
    p.add_argument("--rows", default="model,end_to_end,finetune", help="which rows: model, end_to_end, finetune")
    p.add_argument("--e2e-cells", type=int, default=100_000)
    p.add_argument("--e2e-genes", type=int, default=1000, help="mean expressed genes per synthetic cell")
    p.add_argument("--e2e-batch-size", type=int, default=64)
    p.add_argument("--e2e-threads", default="1,2",
                   help="thread settings of the end-to-end row, one run each (--threads overrides)")
    p.add_argument("--ft-cells", type=int, default=3000)
    p.add_argument("--ft-epochs", type=int, default=2)
    p.add_argument("--live-cells", type=int, default=5000)
    args = p.parse_args(argv)
    want = {r.strip() for r in args.rows.split(",") if r.strip()}
    from app.engine.device import set_threads

    rows = []
    if "end_to_end" in want:
        e2e_threads = [args.threads] if args.threads is not None else \
            [int(t) for t in args.e2e_threads.split(",") if t.strip()]
        for th in e2e_threads:
            r = end_to_end(args.e2e_cells, args.e2e_genes, th, args.e2e_batch_size)
            rows.append(r)
            if not args.json:
                print(f"end to end: {r['end_to_end_cells_per_s']:.0f} cells/s ({r['n_cells']} cells, "
                      f"~{r['mean_expressed_genes']} expressed genes, {r['seconds']} s, {r['threads']} thread(s), "
                      f"stages {r['stages_s']})")
    if "finetune" in want:
        r = finetune_rows(args.ft_cells, args.ft_epochs, args.live_cells, args.threads)
        rows.append(r)
        if not args.json:
            print(f"fine-tuning: {r['train_cells_per_s']:.0f} training cells/s ({r['n_train']} train cells x "
                  f"{r['epochs']} epochs, {r['threads']} thread(s)); live map of {r['live_cells']} cells: epoch loop "
                  f"{r['epoch_loop_seconds_live_on']} s vs {r['epoch_loop_seconds_live_off']} s off = "
                  f"{r['live_overhead_ratio']:.2f}x")
    if "model" not in want:
        if args.json:
            print(json.dumps({"bench": "embed", "rows": rows}))
        return 0
    set_threads(args.threads if args.threads is not None else 1)
    devices = (["cpu"] + (["cuda"] if torch.cuda.is_available() else [])) if args.devices == "auto" \
        else [d.strip() for d in args.devices.split(",")]
    for dev_name in devices:
        dev = torch.device(dev_name)
        for pr in [x.strip() for x in args.presets.split(",") if x.strip()]:
            n = args.cells_tiny if pr != "full" else args.cells_full * (16 if dev.type == "cuda" else 1)
            for att, fast in (("performer", False), ("performer", True), ("exact", False)):
                r = measure(pr, att, dev, n, args.batch_size, args.min_genes, args.max_genes, fast=fast)
                rows.append(r)
                if not args.json:
                    print(f"{r['preset']:<5} {r['attention']:<23} {r['device']:<5} {r['cells_per_s']:>10.1f} cells/s "
                          f"{r['tokens_per_s']:>11.0f} tokens/s  ({r['n_cells']} cells, ~{r['mean_tokens']} tokens, "
                          f"{r['threads']} thread(s))")
    if args.json:
        print(json.dumps({"bench": "embed", "rows": rows}))
    return 0
