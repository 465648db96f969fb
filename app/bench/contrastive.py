"""``python -m app bench contrastive [--json]``: peak memory and step time of a CellLM pretraining step
(masked expression + two-view InfoNCE) for batch sizes N in {64, 256, 1024, 4096}, with divide-and-conquer
(chunks of ``--chunk`` cells) and as one full batch, the latter only while its predicted peak fits
``--budget-mb`` (extrapolated linearly from the previous full-batch row).

Each row runs in a fresh subprocess so that one row's allocations cannot hide another's. Memory:
* CUDA: ``torch.cuda.max_memory_allocated`` during the timed steps minus the allocation before them
  (torch's own allocator; the model, its gradients and the input batch are excluded);
* CPU: the process's peak resident set (``VmHWM`` of /proc/self/status, reset by writing 5 to
  /proc/self/clear_refs after a warm-up step) minus its resident set just before the timed steps. Torch's
  CPU allocator uses malloc; the row's process runs with a fixed glibc mmap threshold (64 KiB), so large
  tensors are mapped on allocation and unmapped on free and the resident set follows torch's live CPU tensors
  (plus small-allocation slack); tracemalloc would not see torch tensors at all.
A "step" is forward + backward to parameter gradients (no optimiser update; AdamW state is N-independent).
Cells are synthetic: ``--min-genes``..``--max-genes`` expressed genes of a 2,000-gene vocabulary, random bins.

Goal (issue 4): divide-and-conquer peak memory at N = 4096 within 1.25x of N = 64; D&C step time at most
1.5x the full-batch step where that fits.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

from app.models.celllm.config import PRESETS

SIZES = (64, 256, 1024, 4096)


def _status_kb(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def run_row(n: int, method: str, chunk: int, preset_name: str, device_name: str, repeats: int, seed: int,
            min_genes: int, max_genes: int, threads: int) -> dict[str, Any]:
    """Measure one row in this process (called in a fresh subprocess by ``main``)."""
    import numpy as np
    import torch

    from app.engine.celllm import losses
    from app.engine.celllm.gradcache import dc_step
    from app.engine.celllm.pretrain import make_batch, make_chunk_fn
    from app.engine.device import resolve_device
    from app.models.celllm import CellLM, preset

    torch.set_num_threads(threads)
    device = resolve_device(device_name)
    torch.manual_seed(seed)
    vocab = 2000 if preset_name != "full" else 19379
    cfg = preset(preset_name, vocab)
    model = CellLM(cfg).to(device).train()
    rng = np.random.default_rng(seed)
    cells = []
    for _ in range(n):
        k = int(rng.integers(min_genes, max_genes + 1))
        genes = np.sort(rng.choice(vocab, k, replace=False)) + 2
        cells.append((np.concatenate([[1], genes]).astype(np.int64),
                      np.concatenate([[cfg.n_bins], rng.integers(0, cfg.n_bins, k)]).astype(np.int64)))
    batch = make_batch(cells, None, 0.15, cfg.n_bins, torch.Generator().manual_seed(seed))
    tensors = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
    weights = {"mlm": 1.0, "contrastive": 1.0, "supervised": 0.0}
    fn = make_chunk_fn(model, None, device, batch, weights, "cls", {})
    c = n if method == "full" else chunk
    amp = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    devs = [device.index or 0] if device.type == "cuda" else []

    def step() -> float:
        model.zero_grad(set_to_none=False)  # keep .grad buffers: static memory, not step memory
        t0 = time.perf_counter()
        dc_step(fn, tensors, lambda a, b: losses.info_nce(a, b, 0.05), c, autocast_dtype=amp,
                device_type=device.type, devices=devs)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t0

    step()  # warm-up: allocates gradients, kernels, allocator pools
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        times = [step() for _ in range(repeats)]
        peak = torch.cuda.max_memory_allocated(device) - base
        how = "torch.cuda.max_memory_allocated delta"
    else:
        ok = _reset_peak_rss()
        base = _status_kb("VmRSS") * 1024
        times = [step() for _ in range(repeats)]
        peak = _status_kb("VmHWM") * 1024 - base
        how = "peak RSS delta (VmHWM, reset via clear_refs)" if ok else "peak RSS delta (VmHWM not reset)"
    return {"n": n, "chunk": c, "method": method, "peak_mem_bytes": int(max(peak, 0)),
            "step_s": round(float(np.median(times)), 4), "device": str(device), "preset": preset_name,
            "mean_tokens": round(float(np.mean([len(x[0]) for x in cells])), 1), "memory_measure": how}


def _subprocess_row(args: argparse.Namespace, n: int, method: str) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "app.bench.contrastive", "--row", str(n), method, "--chunk", str(args.chunk),
           "--preset", args.preset, "--device", args.device, "--repeats", str(args.repeats), "--seed",
           str(args.seed), "--min-genes", str(args.min_genes), "--max-genes", str(args.max_genes), "--threads",
           str(args.threads)]
    # a fixed mmap threshold: glibc then serves every block >= 64 KiB with its own mapping and returns it on
    # free, so the resident set follows torch's live CPU tensors (the default dynamic threshold keeps freed
    # blocks in the heap and hides later peaks)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "131072"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        return {"n": n, "method": method, "error": (out.stderr or out.stdout).strip().splitlines()[-1:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> int:
    """Run the benchmark (see the module docstring)."""
    p = argparse.ArgumentParser(prog="python -m app bench contrastive", description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--sizes", default=",".join(map(str, SIZES)), help="batch sizes N (comma separated)")
    p.add_argument("--chunk", type=int, default=64, help="divide-and-conquer chunk size c")
    p.add_argument("--preset", default="tiny", choices=PRESETS)
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    p.add_argument("--budget-mb", type=float, default=2048.0,
                   help="skip full-batch rows whose predicted peak exceeds this")
    p.add_argument("--repeats", type=int, default=2, help="timed steps per row (after one warm-up)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-genes", type=int, default=20)
    p.add_argument("--max-genes", type=int, default=120)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--row", nargs=2, metavar=("N", "METHOD"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.row:
        row = run_row(int(args.row[0]), args.row[1], args.chunk, args.preset, args.device, args.repeats,
                      args.seed, args.min_genes, args.max_genes, args.threads)
        print(json.dumps(row))
        return 0

    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    budget = args.budget_mb * 2**20
    last_full: dict[str, Any] | None = None
    for n in sizes:
        predicted = None
        if last_full is not None and "peak_mem_bytes" in last_full:
            predicted = last_full["peak_mem_bytes"] * n / last_full["n"]
        if predicted is not None and predicted > budget:
            skipped.append({"n": n, "method": "full", "predicted_peak_mem_bytes": int(predicted),
                            "reason": f"predicted {predicted / 2**20:.0f} MiB > budget {args.budget_mb:.0f} MiB"})
        else:
            full = _subprocess_row(args, n, "full")
            rows.append(full)
            last_full = full if "error" not in full else last_full
        if n > args.chunk:
            rows.append(_subprocess_row(args, n, "dc"))
        elif not args.json:
            pass  # N <= c: divide-and-conquer is the full batch itself
        if not args.json:
            for r in rows[-2:]:
                if r.get("n") == n:
                    _print_row(r)

    summary = _summary(rows, args.chunk)
    if args.json:
        print(json.dumps({"bench": "contrastive", "preset": args.preset, "chunk": args.chunk,
                          "budget_mb": args.budget_mb, "rows": rows, "skipped": skipped, "summary": summary}))
    else:
        for s in skipped:
            print(f"N={s['n']:>5} full   skipped: {s['reason']}")
        for k, v in summary.items():
            print(f"{k}: {v}")
    return 0


def _print_row(r: dict[str, Any]) -> None:
    if "error" in r:
        print(f"N={r['n']:>5} {r['method']:<5} error: {r['error']}")
        return
    print(f"N={r['n']:>5} {r['method']:<5} chunk={r['chunk']:>5} peak={r['peak_mem_bytes'] / 2**20:9.1f} MiB "
          f"step={r['step_s']:8.3f} s  ({r['device']}, {r['preset']})")


def _summary(rows: list[dict[str, Any]], chunk: int) -> dict[str, Any]:
    """The issue's two goals, computed from the rows (None when a needed row is missing)."""
    ok = [r for r in rows if "error" not in r]
    # the smallest N's reference is its full batch when N <= chunk (D&C with one chunk is the full batch)
    dc = {r["n"]: r for r in ok if r["method"] == "dc" or (r["method"] == "full" and r["n"] <= chunk)}
    full = {r["n"]: r for r in ok if r["method"] == "full"}
    out: dict[str, Any] = {}
    if dc:
        lo, hi = min(dc), max(dc)
        if dc[lo]["peak_mem_bytes"]:
            out[f"dc_peak_mem_ratio_N{hi}_vs_N{lo}"] = round(dc[hi]["peak_mem_bytes"] / dc[lo]["peak_mem_bytes"], 3)
    for n in sorted(set(dc) & set(full)):
        if n > chunk and full[n]["step_s"]:
            out[f"dc_vs_full_step_time_N{n}"] = round(dc[n]["step_s"] / full[n]["step_s"], 3)
            out[f"full_vs_dc_peak_mem_N{n}"] = round(full[n]["peak_mem_bytes"] / max(dc[n]["peak_mem_bytes"], 1), 2)
    return out


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
