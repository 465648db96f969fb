"""``bench gpu``: its CPU-side plumbing only (it has never run on a GPU here): the refusal without CUDA, the
peak-FLOP table, FLOP counting, and the step runner that keeps going after a failure."""

from __future__ import annotations

import time

import pytest
import torch

from app.bench import gpu


def test_refuses_clearly_without_cuda(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu.main(["--json"]) == 2
    err = capsys.readouterr().err
    assert "needs a CUDA GPU" in err and "Traceback" not in err


def test_peak_table_and_flop_counting() -> None:
    assert gpu.peak_bf16_flops("NVIDIA H200") == pytest.approx(989e12)
    assert gpu.peak_bf16_flops("NVIDIA H100 PCIe") == pytest.approx(756e12)  # the longest matching name wins
    assert gpu.peak_bf16_flops("NVIDIA A100-SXM4-80GB") == pytest.approx(312e12)
    assert gpu.peak_bf16_flops("Some Future GPU") is None
    a, b = torch.randn(8, 16), torch.randn(16, 4)
    assert gpu.count_flops(lambda: a @ b) == 2 * 8 * 16 * 4


def test_steps_run_on_after_a_failure_and_stop_at_the_budget() -> None:
    def boom() -> dict:
        raise RuntimeError("CUDA error: out of memory")

    res = gpu.run_steps([gpu.Step("a", lambda: {"x": 1}), gpu.Step("b", boom), gpu.Step("c", lambda: {"y": 2})])
    st = res["steps"]
    assert st["a"]["ok"] and st["a"]["x"] == 1 and st["c"]["ok"]
    assert not st["b"]["ok"] and "out of memory" in st["b"]["error"]
    slow = gpu.run_steps([gpu.Step("s", lambda: time.sleep(0.05) or {}), gpu.Step("t", lambda: {})], budget_s=0.01)
    assert slow["steps"]["s"]["ok"] and "skipped" in slow["steps"]["t"]


def test_plan_covers_every_cuda_path() -> None:
    names = [s.name for s in gpu.plan("cuda", __import__("pathlib").Path("."))]
    assert names == ["finetune", "pretrain_divide_and_conquer", "embed_end_to_end", "gp_models",
                     "bench_contrastive_full", "bench_embed_full"]
