"""A tiny but real engine job, used by the jobs tests and ``python -m app bench jobs``.

It fits a small linear model by gradient descent (deterministic: the data come from a fixed seed), one
step at a time, reporting progress and the loss, checkpointing through ``RunDir`` and honouring cancel
and resume exactly as the real training jobs must. Options make it misbehave on purpose at step k
(raise, ``os._exit``, segfault) so crash isolation can be tested.

Config keys (all optional): ``steps`` (20), ``step_sleep`` (s, 0.0), ``ckpt_every`` (5), ``dim`` (8),
``lr`` (0.05), ``work`` (extra matmul size per step for a CPU-heavy job, 0), ``work_s`` (busy-loop seconds of
torch matmuls per step, 0), ``fail_at`` (step), ``fail_how`` ("raise" | "data_error" | "exit" | "segfault" |
"hang"), ``ignore_stop`` (never honour cancel, for the forceful-cancel test), ``run_dir``, ``resume``,
``big_array`` (rows of a float32 array saved as .npy artifact at the end).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from app.data.errors import DataError
from app.engine.reporter import Reporter, ensure_reporter

DEFAULTS: dict[str, Any] = {"steps": 20, "step_sleep": 0.0, "ckpt_every": 5, "dim": 8, "lr": 0.05, "work": 0,
                            "work_s": 0.0, "fail_at": None, "fail_how": "raise", "ignore_stop": False,
                            "big_array": 0}


def _segfault() -> None:
    """Crash the process with SIGSEGV (a stand-in for a crashing native extension)."""
    import ctypes

    ctypes.string_at(0)


def _misbehave(how: str, step: int) -> None:
    if how == "raise":
        raise RuntimeError(f"demo job failed on purpose at step {step}")
    if how == "data_error":
        raise DataError(f"demo job found bad input at step {step}", "demo.csv", "Fix the demo input.")
    if how == "exit":
        os._exit(3)
    if how == "segfault":
        _segfault()
    if how == "hang":
        while True:  # ignores cancel entirely
            time.sleep(0.05)
    raise ValueError(f"unknown fail_how {how!r}")


def _problem(dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(64, dim, generator=g)
    w_true = torch.randn(dim, 1, generator=g)
    return x, x @ w_true + 0.1 * torch.randn(64, 1, generator=g)


def demo(config: dict[str, Any], reporter: Reporter | None = None) -> dict[str, Any]:
    """Run the demo fit; returns {"steps_done", "loss", "cancelled", "run_dir"}."""
    rep = ensure_reporter(reporter)
    cfg = {**DEFAULTS, **config}
    steps, dim, lr = int(cfg["steps"]), int(cfg["dim"]), float(cfg["lr"])
    rd = None
    if cfg.get("run_dir"):
        from app.engine.run_dir import RunDir

        rd = RunDir.open(cfg["run_dir"]) if RunDir.is_run_dir(cfg["run_dir"]) else RunDir.create(
            cfg["run_dir"], "demo", {k: v for k, v in cfg.items() if k != "resume"})

    x, y = _problem(dim)
    w = torch.zeros(dim, 1)
    start = 0
    if cfg.get("resume") and rd is not None and rd.last_checkpoint() is not None:
        from app.engine.checkpoint import load_tensors

        tensors, meta = load_tensors(rd.last_checkpoint())
        w, start = tensors["w"], int(meta["step"])
        rep.log(f"resumed from step {start}")

    def checkpoint(step: int) -> None:
        if rd is not None:
            path = rd.save_checkpoint({"w": w}, {"dim": dim}, step)
            rep.artifact("checkpoint", str(path))

    work = int(cfg["work"])
    heavy = torch.randn(work, work) if work > 0 else None
    loss = float("nan")
    step = start
    for step in range(start + 1, steps + 1):
        if cfg["fail_at"] is not None and step == int(cfg["fail_at"]):
            _misbehave(str(cfg["fail_how"]), step)
        if not cfg["ignore_stop"] and rep.should_stop():
            checkpoint(step - 1)
            rep.log(f"cancelled after step {step - 1}")
            return {"steps_done": step - 1, "loss": loss, "cancelled": True, "run_dir": cfg.get("run_dir")}
        pred = x @ w
        err = pred - y
        loss = float((err ** 2).mean())
        w = w - lr * (2.0 / len(x)) * (x.T @ err)
        if heavy is not None:  # CPU-heavy job for the GUI-stall benchmark
            t_end = time.perf_counter() + float(cfg["work_s"])
            while True:
                heavy = torch.tanh(heavy @ heavy / work)
                if time.perf_counter() >= t_end:
                    break
        if rd is not None:
            rd.append_metrics({"step": step, "loss": loss})
        rep.metrics(step, {"loss": loss})
        rep.progress(step, steps)
        if rd is not None and int(cfg["ckpt_every"]) > 0 and step % int(cfg["ckpt_every"]) == 0:
            checkpoint(step)
        if float(cfg["step_sleep"]) > 0:
            time.sleep(float(cfg["step_sleep"]))

    result: dict[str, Any] = {"steps_done": step, "loss": loss, "cancelled": False, "run_dir": cfg.get("run_dir")}
    if rd is not None:
        checkpoint(step)
        if int(cfg["big_array"]) > 0:
            arr = np.random.default_rng(0).standard_normal((int(cfg["big_array"]), 32)).astype(np.float32)
            path = rd.save_array("demo_array", arr)
            rep.artifact("array", str(path))
            result["array"] = str(Path(path))
    rep.log(f"finished {step} steps, loss {loss:.4f}")
    return result


__all__ = ["DEFAULTS", "demo"]
