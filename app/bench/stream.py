"""``python -m app bench stream [--json] [--cells 1000000] [--genes 20000]``: is the streaming data loader fast
enough and small enough for pretraining on data larger than memory?

1. Writes a synthetic backed ``.h5ad`` (CSR, raw counts, ``--genes-per-cell`` expressed genes on average)
   block by block into a temporary folder (free disk is checked first; the folder is deleted afterwards).
2. In a fresh process (so the writer's memory does not count), streams ONE epoch through pretraining's own
   loader (``CellStream``: contiguous block reads, shuffle buffer; tokenising in a background thread; collate
   + MLM masking of each batch) and reports cells/s and the process's peak RSS.
3. In the same process, times a ``tiny`` CellLM pretraining step (divide and conquer, CPU) at the same batch
   size on streamed batches: the model's cells/s. The loader is the bottleneck when its cells/s is lower.

With ``--json``: one object with at least ``cells_per_s`` and ``peak_rss_bytes``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RSS_GOAL = 2 * 2**30


def file_bytes_estimate(cells: int, genes_per_cell: float) -> int:
    """Bytes the written file takes: float32 value + int32 index per stored count, int64 row pointers, names."""
    return int(cells * genes_per_cell * 8 + cells * (8 + 24) + 2**20)


def _measure(path: str, opts: dict[str, Any], out: Any) -> None:
    """Child process: one streamed epoch through the pretraining loader, then timed tiny pretraining steps."""
    import numpy as np
    import torch

    from app.data.singlecell.stream import CellStream, peak_rss_bytes
    from app.engine.celllm import losses
    from app.engine.celllm.distributed import DistInfo
    from app.engine.celllm.gradcache import dc_step
    from app.engine.celllm.pretrain import StreamSource, make_batch, make_chunk_fn
    from app.models.celllm import CellLM, preset

    torch.set_num_threads(int(opts["threads"]))
    rss_start = peak_rss_bytes()
    bs = int(opts["batch_size"])
    stream = CellStream(path, block_cells=int(opts["block_cells"]), shuffle_buffer=int(opts["shuffle_buffer"]),
                        seed=0)
    cfg = preset("tiny", stream.n_cols, dropout=0.1)
    max_len = int(opts["max_len"]) if opts.get("max_len") else cfg.max_len
    source = StreamSource(stream, bs, max_len, cfg.n_bins, 0, DistInfo(), None)
    gen = torch.Generator().manual_seed(0)
    keep: list[dict[str, Any]] = []
    n_cells = n_tokens = 0
    t0 = time.perf_counter()
    for cells, labels in source.batches(0, 0):
        batch = make_batch(cells, labels, 0.15, cfg.n_bins, gen)
        n_cells += len(cells)
        n_tokens += int(batch["pad_mask"].sum())
        if len(keep) < int(opts["model_steps"]) + 1:
            keep.append(batch)
    epoch_s = time.perf_counter() - t0
    loader_rss = peak_rss_bytes()
    stats = stream.stats
    stream.close()

    torch.manual_seed(0)
    model = CellLM(cfg).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    chunk = min(bs, int(opts["chunk_size"]))
    times = []
    for i, batch in enumerate(keep):
        t1 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        fn = make_chunk_fn(model, None, torch.device("cpu"), batch, {"mlm": 1.0, "contrastive": 1.0,
                                                                      "supervised": 0.0}, "cls", {})
        tensors = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
        dc_step(fn, tensors, lambda a, b: losses.info_nce(a, b, 0.05), chunk, device_type="cpu")
        opt.step()
        if i > 0:  # the first step warms up
            times.append(time.perf_counter() - t1)
    step_s = float(np.median(times)) if times else float("nan")
    out.put({"cells_streamed": n_cells, "tokens_per_cell": n_tokens / max(1, n_cells), "epoch_s": epoch_s,
             "cells_per_s": n_cells / max(epoch_s, 1e-9), "peak_rss_bytes": loader_rss,
             "peak_rss_with_model_bytes": peak_rss_bytes(), "rss_after_imports_bytes": rss_start,
             "reads": stats.reads, "max_rows_per_read": stats.max_rows_per_read,
             "values_read": stats.values_read, "model_step_s": step_s, "model_chunk": chunk,
             "model_cells_per_s": bs / step_s if step_s == step_s and step_s > 0 else float("nan"),
             "threads": int(opts["threads"])})


def _log(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def main(argv: list[str]) -> int:
    """Run the benchmark; returns the exit code."""
    p = argparse.ArgumentParser(prog="python -m app bench stream", description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--cells", type=int, default=1_000_000)
    p.add_argument("--genes", type=int, default=20_000)
    p.add_argument("--genes-per-cell", type=float, default=500.0, help="mean expressed genes per cell (500)")
    p.add_argument("--batch-size", type=int, default=64, help="cells per batch (pretraining's default 64)")
    p.add_argument("--chunk-size", type=int, default=64, help="divide-and-conquer chunk of the model step")
    p.add_argument("--max-len", type=int, default=None, help="genes kept per cell (default: tiny's)")
    p.add_argument("--block-cells", type=int, default=1024)
    p.add_argument("--shuffle-buffer", type=int, default=8192)
    p.add_argument("--model-steps", type=int, default=3, help="timed tiny pretraining steps (after a warm-up)")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the model step (default 1)")
    p.add_argument("--dir", default=None, help="where to write the temporary file (default: the temp folder)")
    a = p.parse_args(argv)
    if a.cells < a.batch_size or a.genes < 1 or a.genes_per_cell <= 0:
        print("error: need --cells >= --batch-size, --genes >= 1 and --genes-per-cell > 0", file=sys.stderr)
        return 2
    quiet = a.json
    base = Path(a.dir) if a.dir else Path(tempfile.gettempdir())
    need = file_bytes_estimate(a.cells, min(a.genes_per_cell, a.genes))
    free = shutil.disk_usage(base).free
    if free < need * 1.2 + 2**30:
        print(f"error: the benchmark file needs ~{need / 2**30:.1f} GiB but {base} has {free / 2**30:.1f} GiB "
              "free; use --dir on a larger disk or fewer --cells", file=sys.stderr)
        return 2
    from app.data.singlecell.stream import synthetic_count_blocks, write_h5ad_blocks

    tmp = Path(tempfile.mkdtemp(prefix="omicslab-bench-stream-", dir=base))
    try:
        path = tmp / "cells.h5ad"
        _log(f"writing {a.cells:,} cells x {a.genes:,} genes (~{a.genes_per_cell:g} expressed per cell, "
             f"~{need / 2**30:.1f} GiB) to {path}", quiet)
        t0 = time.perf_counter()
        write_h5ad_blocks(path, synthetic_count_blocks(a.cells, a.genes, a.genes_per_cell, block_cells=8192),
                          a.genes)
        write_s = time.perf_counter() - t0
        size = path.stat().st_size
        _log(f"written in {write_s:.1f} s ({size / 2**30:.2f} GiB); streaming one epoch ...", quiet)
        ctx = mp.get_context("spawn")
        q = ctx.Queue()
        opts = {k: getattr(a, k) for k in ("batch_size", "chunk_size", "max_len", "block_cells", "shuffle_buffer",
                                          "model_steps", "threads")}
        proc = ctx.Process(target=_measure, args=(str(path), opts, q), name="omicslab-bench-stream")
        proc.start()
        res: dict[str, Any] | None = None
        while res is None:
            try:
                res = q.get(timeout=1.0)
            except Exception:  # queue.Empty: still working
                if not proc.is_alive():
                    break
        proc.join()
        if res is None:
            print(f"error: the measuring process ended without a result (exit code {proc.exitcode})",
                  file=sys.stderr)
            return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out = {"cells": a.cells, "genes": a.genes, "genes_per_cell": a.genes_per_cell, "file_bytes": size,
           "write_s": round(write_s, 2), "batch_size": a.batch_size, "block_cells": a.block_cells,
           "shuffle_buffer": a.shuffle_buffer, **res, "rss_goal_bytes": RSS_GOAL,
           "rss_goal_met": res["peak_rss_bytes"] < RSS_GOAL,
           "loader_is_bottleneck": res["cells_per_s"] < res["model_cells_per_s"]}
    if a.json:
        print(json.dumps(out))
        return 0
    gib = 2**30
    print(f"file: {a.cells:,} cells x {a.genes:,} genes, {size / gib:.2f} GiB, written in {write_s:.1f} s")
    print(f"loader: one epoch of {res['cells_streamed']:,} cells in {res['epoch_s']:.1f} s = "
          f"{res['cells_per_s']:,.0f} cells/s ({res['tokens_per_cell']:.0f} tokens/cell, {res['reads']} block reads "
          f"of <= {res['max_rows_per_read']} rows)")
    print(f"peak RSS while streaming: {res['peak_rss_bytes'] / gib:.2f} GiB (goal < 2 GiB: "
          f"{'met' if out['rss_goal_met'] else 'NOT met'}); after imports "
          f"{res['rss_after_imports_bytes'] / gib:.2f} GiB")
    print(f"tiny pretraining step, batch {a.batch_size} (chunk {res['model_chunk']}), CPU, {res['threads']} thread(s): "
          f"{res['model_step_s']:.2f} s = {res['model_cells_per_s']:,.0f} cells/s")
    print("the loader IS the bottleneck" if out["loader_is_bottleneck"] else
          f"the loader is not the bottleneck ({res['cells_per_s'] / res['model_cells_per_s']:,.0f}x the model's rate)")
    return 0
