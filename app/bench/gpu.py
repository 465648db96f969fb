"""``python -m app bench gpu [--json] [--out FILE.json]``: one command that checks every CUDA path on one GPU.

In one run (sized for under 8 minutes on one data-centre GPU) it fine-tunes the shipped model, pretrains a
``small`` model with divide and conquer, runs ``celllm embed`` end to end, cross-validates each genomic-
prediction model on the bundled genotype demo, and measures ``bench contrastive`` and the ``full`` preset's
embedding speed: cells/s and the fraction of the GPU's peak dense bf16 FLOP/s it reaches (model FLOPs counted
by ``torch.utils.flop_counter`` on one batch). Every step runs even when an earlier one fails; the JSON says
which failed and why. Without a CUDA GPU it refuses with a clear message (exit status 2).

It has never run on a GPU here: the machines this was written on have none. Its CPU-side plumbing (the plan,
the step runner, FLOP counting, the peak table) is tested on the CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.data.jsonsafe import dumps

BUDGET_S = 480.0
"""The whole check should finish within 8 minutes."""

PEAK_BF16_TFLOPS = {  # dense (no sparsity) bf16 tensor-core peaks from the vendors' data sheets
    "H200": 989.0, "H100 NVL": 835.0, "H100 PCIe": 756.0, "H100": 989.0,  # "NVIDIA H100 80GB HBM3" = SXM
    "GH200": 989.0, "B200": 2250.0, "A100": 312.0, "A10G": 70.0, "A10": 125.0, "L40S": 362.0, "L40": 181.0,
    "L4": 121.0, "RTX 6000 Ada": 364.0, "RTX 4090": 165.0, "RTX 3090": 71.0, "A6000": 155.0,
}


def peak_bf16_flops(device_name: str) -> float | None:
    """Peak dense bf16 FLOP/s of a GPU from its name (longest matching key), None when unknown."""
    name = device_name.upper()
    for key in sorted(PEAK_BF16_TFLOPS, key=len, reverse=True):
        if key.upper() in name:
            return PEAK_BF16_TFLOPS[key] * 1e12
    return None


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of one call of ``fn`` (matrix products, as ``torch.utils.flop_counter`` counts them)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


@dataclass
class Step:
    """One check: ``name`` and the function that runs it and returns its figures."""

    name: str
    run: Callable[[], dict[str, Any]]


def run_steps(steps: list[Step], budget_s: float = BUDGET_S) -> dict[str, Any]:
    """Run every step (an error is recorded, the next step still runs; once ``budget_s`` is spent the rest
    are skipped). Returns ``{"steps": {name: figures | {"error": ...} | {"skipped": ...}}, "seconds": s}``."""
    out: dict[str, Any] = {}
    t_all = time.perf_counter()
    for st in steps:
        if time.perf_counter() - t_all > budget_s:
            out[st.name] = {"skipped": f"the {budget_s:.0f} s budget was spent"}
            continue
        t0 = time.perf_counter()
        try:
            res = dict(st.run())
            res["ok"] = True
        except Exception as exc:  # one broken path must not hide the others
            res = {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                   "traceback": traceback.format_exc(limit=6)}
        res["seconds"] = round(time.perf_counter() - t0, 2)
        out[st.name] = res
        print(f"[bench gpu] {st.name}: {'ok' if res['ok'] else 'FAILED'} in {res['seconds']} s", file=sys.stderr,
              flush=True)
    return {"steps": out, "seconds": round(time.perf_counter() - t_all, 2)}


# --------------------------------------------------------------------------------------------------
# the steps
# --------------------------------------------------------------------------------------------------
def _finetune(device: str, tmp: Path, cells: int, epochs: int) -> dict[str, Any]:
    import torch

    from app.bench.embed import synthetic_h5ad
    from app.engine.celllm.embed import load_for_inference
    from app.engine.celllm.finetune import finetune

    vocab = load_for_inference(None, torch.device("cpu")).vocab
    data = synthetic_h5ad(cells, vocab[:3000], 300, seed=1, n_types=6)
    m = finetune({"data": str(data), "label_key": "cell_type", "run_dir": str(tmp / "ft"), "epochs": epochs,
                  "patience": epochs, "device": device, "live_cells": 1000, "baseline_genes": 500})
    return {"device": m["device"], "n_train": m["n_train"], "epochs": m["epochs_run"], **m["timing"],
            "test_accuracy": m["test"]["accuracy"], "baseline_accuracy": m["baseline"]["accuracy"]}


def _pretrain(device: str, tmp: Path, cells: int) -> dict[str, Any]:
    from app.bench.embed import synthetic_h5ad
    from app.engine.celllm.pretrain import pretrain

    genes = [f"G{i}" for i in range(4000)]
    data = synthetic_h5ad(cells, genes, 600, seed=2)
    res = pretrain({"data": [str(data)], "run_dir": str(tmp / "pre"), "preset": "small", "batch_size": 512,
                    "chunk_size": 64, "epochs": 1, "device": device, "live_cells": 1000, "live_every": 2})
    steps = int(res["steps"])
    return {"device": res["device"], "steps": steps, "batch_size": res["batch_size"], "chunk_size": res["chunk_size"],
            "cells_per_s": round(steps * res["batch_size"] / max(res["seconds"], 1e-9), 1), "final": res["final"]}


def _embed(device: str, cells: int) -> dict[str, Any]:
    from app.bench.embed import end_to_end

    return end_to_end(cells, 1000, None, 512, device=device)


def _gp(device: str, tmp: Path) -> dict[str, Any]:
    from app.data.demo import genotype_demo_paths
    from app.engine.gp.jobs import cv

    demo = genotype_demo_paths()
    res = cv({"geno": str(demo["geno"]), "pheno": str(demo["pheno"]), "trait": "trait",
              "models": ("gblup", "dnngp", "deepgs", "dlgwas"), "folds": 2, "epochs": 30, "device": device,
              "run_dir": str(tmp / "gp")})
    return {"device": res.get("device"), "summary": res.get("summary", res.get("models"))}


def _bench_json(module: str, argv: list[str]) -> dict[str, Any]:
    """Run another benchmark's ``main`` in this process and return its JSON object."""
    import importlib

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = importlib.import_module(f"app.bench.{module}").main([*argv, "--json"])
    if rc:
        raise RuntimeError(f"bench {module} exited with status {rc}")
    return json.loads(buf.getvalue().strip().splitlines()[-1])


def embed_flops_row(preset_name: str, device_name: str, n_cells: int, batch_size: int, lo: int, hi: int
                    ) -> dict[str, Any]:
    """``bench embed``'s model row for one preset, plus the FLOPs of one batch and the fraction of the device's
    peak bf16 FLOP/s the measured speed means."""
    import numpy as np
    import torch

    from app.bench.embed import measure, synthetic_cells
    from app.engine.celllm.tokenize import collate
    from app.models.celllm import CellLM, preset

    row = measure(preset_name, "performer", torch.device(device_name), n_cells, batch_size, lo, hi)
    vocab = 19379 if preset_name == "full" else 2000
    model = CellLM(preset(preset_name, vocab)).to(device_name).eval()
    cells = synthetic_cells(batch_size, vocab, lo, hi, 0)
    g, b, m = (t.to(device_name) for t in collate(cells))
    amp = torch.device(device_name).type == "cuda" and torch.cuda.is_bf16_supported()

    def one() -> None:
        with torch.inference_mode(), torch.autocast(torch.device(device_name).type, torch.bfloat16, enabled=amp):
            model.embed(g, b, m)

    flops_per_cell = count_flops(one) / batch_size
    name = torch.cuda.get_device_name(torch.device(device_name)) if amp or device_name.startswith("cuda") else "cpu"
    peak = peak_bf16_flops(name) if name != "cpu" else None
    achieved = flops_per_cell * row["cells_per_s"]
    row.update({"gpu": name, "flops_per_cell": float(np.round(flops_per_cell)), "achieved_flops_per_s": achieved,
                "peak_bf16_flops_per_s": peak, "fraction_of_peak": (achieved / peak) if peak else None})
    return row


def plan(device: str, tmp: Path, quick: bool = False) -> list[Step]:
    """The steps of the check, in order. ``quick``: tiny sizes (the CPU-side test of the plumbing)."""
    ft_cells, pre_cells, emb_cells = (300, 600, 500) if quick else (3000, 10240, 100_000)
    full_cells, sizes = (2, "64") if quick else (512, "64,256,1024,4096")
    preset_full = "tiny" if quick else "full"
    return [
        Step("finetune", lambda: _finetune(device, tmp, ft_cells, 1 if quick else 3)),
        Step("pretrain_divide_and_conquer", lambda: _pretrain(device, tmp, pre_cells)),
        Step("embed_end_to_end", lambda: _embed(device, emb_cells)),
        Step("gp_models", lambda: _gp(device, tmp)),
        Step("bench_contrastive_full", lambda: _bench_json(
            "contrastive", ["--preset", preset_full, "--device", device, "--sizes", sizes, "--repeats", "1",
                            "--budget-mb", "2048" if quick else "100000"])),
        Step("bench_embed_full", lambda: embed_flops_row(preset_full, device, full_cells, min(64, full_cells * 8),
                                                         200, 1000)),
    ]


def main(argv: list[str]) -> int:
    """Run the GPU check (see the module docstring)."""
    import torch

    p = argparse.ArgumentParser(prog="python -m app bench gpu", description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--out", default=None, metavar="FILE.json", help="also write the JSON object here")
    p.add_argument("--device", default="cuda", help="the CUDA device (default cuda = cuda:0)")
    p.add_argument("--budget-s", type=float, default=BUDGET_S, help="skip the remaining steps after this long")
    p.add_argument("--cpu-plumbing", action="store_true", help=argparse.SUPPRESS)  # tests: tiny sizes on the CPU
    args = p.parse_args(argv)
    if not args.cpu_plumbing and not torch.cuda.is_available():
        print("bench gpu needs a CUDA GPU, and none is visible here (torch.cuda.is_available() is False). Run it "
              "on a machine with an NVIDIA GPU and a CUDA build of PyTorch; every other benchmark runs on the CPU.",
              file=sys.stderr)
        return 2
    device = "cpu" if args.cpu_plumbing else args.device
    with tempfile.TemporaryDirectory(prefix="omicslab-bench-gpu-") as tmp:
        result = run_steps(plan(device, Path(tmp), quick=args.cpu_plumbing), args.budget_s)
    result = {"bench": "gpu", "device": device, "torch": torch.__version__,
              "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, **result}
    text = dumps(result)
    if args.out:
        from app.data.atomic import write_text_atomic

        write_text_atomic(args.out, text)
    if args.json:
        print(text)
    else:
        for name, r in result["steps"].items():
            state = "ok" if r.get("ok") else ("skipped" if "skipped" in r else "FAILED")
            print(f"{name:<30} {state:<8} {r.get('seconds', 0):>8} s  " + (r.get("error") or ""))
        print(f"total {result['seconds']} s (budget {args.budget_s:.0f} s)")
    return 0 if all(r.get("ok") for r in result["steps"].values()) else 1
