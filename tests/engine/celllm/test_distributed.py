"""Two torchrun ranks on CPU (gloo): the distributed divide-and-conquer gradient equals the single-process
full-batch gradient of the same global batch; collectives and the rank sampler behave."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dist_common import CHUNKS, N, grads, rank_seed, setup, weights

from app.engine.celllm import losses
from app.engine.celllm.distributed import (
    DistInfo,
    dc_step_distributed,
    gather_embeddings,
    launched_by_torchrun,
    rank_batches,
    torchrun_command,
)
from app.engine.celllm.gradcache import slice_batch
from app.engine.celllm.pretrain import make_chunk_fn

WORLD = 2
HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]


def _reference(chunk: int) -> tuple[torch.Tensor, float, torch.Tensor]:
    """One process, plain autograd over the global batch: rank r's chunks forwarded in order from rank r's
    seed (so dropout masks match the ranks'), the global loss, one backward."""
    model, head, batch = setup()
    tensors = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
    fn = make_chunk_fn(model, head, torch.device("cpu"), batch, weights(), "cls", {})
    n = N // WORLD
    za, zb, local = [], [], 0.0
    for r in range(WORLD):
        torch.manual_seed(rank_seed(r))
        for s in range(r * n, (r + 1) * n, chunk):
            (a, b), loc = fn(slice_batch(tensors, s, min(s + chunk, (r + 1) * n)))
            za.append(a)
            zb.append(b)
            local = local + loc
    total = losses.info_nce(torch.cat(za).float(), torch.cat(zb).float(), 0.05) + local
    total.backward()
    return grads(model, head), float(total.detach()), torch.cat(za).detach()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, torch.Tensor]]:
    out = tmp_path_factory.mktemp("ranks")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), CUDA_VISIBLE_DEVICES="")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={WORLD}",
           str(HERE / "dist_worker.py"), str(out)]
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


@pytest.mark.parametrize("chunk", CHUNKS)
def test_distributed_dc_gradient_equals_full_batch(ranks: list[dict[str, torch.Tensor]], chunk: int) -> None:
    g_ref, loss_ref, za_ref = _reference(chunk)
    assert g_ref.norm() > 0
    for r, res in enumerate(ranks):
        g = res[f"grad_{chunk}"]
        rel = float((g - g_ref).norm() / g_ref.norm())
        assert rel < 1e-5, (r, chunk, rel)
        assert abs(float(res[f"loss_{chunk}"][0]) - loss_ref) < 1e-5 * max(1.0, abs(loss_ref))
        assert int(res[f"n_chunks_{chunk}"]) == -(-(N // WORLD) // chunk)
        # the returned representations are the GLOBAL batch, in rank order
        assert torch.allclose(res[f"reps_{chunk}"], za_ref, atol=1e-5)


def test_world_size_scaling_matters(ranks: list[dict[str, torch.Tensor]]) -> None:
    """Guard against a vacuous comparison: one rank's own share of the gradient differs from the global one."""
    model, head, batch = setup()
    tensors = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
    fn = make_chunk_fn(model, head, torch.device("cpu"), batch, weights(), "cls", {})
    torch.manual_seed(rank_seed(0))
    (a, b), loc = fn(slice_batch(tensors, 0, N // WORLD))
    (losses.info_nce(a, b, 0.05) + loc).backward()
    g_local = grads(model, head)
    g = ranks[0][f"grad_{CHUNKS[-1]}"]
    assert float((g - g_local).norm() / g.norm()) > 1e-2


def test_ranks_stay_identical_after_a_step(ranks: list[dict[str, torch.Tensor]]) -> None:
    assert torch.equal(ranks[0]["params_after"], ranks[1]["params_after"])


def test_collectives(ranks: list[dict[str, torch.Tensor]]) -> None:
    # unequal row counts: rank 0 holds 1 row, rank 1 holds 2; every rank sees all 3 in rank order
    for r, res in enumerate(ranks):
        assert torch.equal(res["gather"], torch.tensor([[0.0] * 3, [1.0] * 3, [1.0] * 3]))
        assert res["gather_slice"].tolist() == ([0, 1] if r == 0 else [1, 3])
        assert torch.equal(res["gather_grad"], torch.ones(r + 1, 3))  # own rows only, own gradient
        assert res["flag_any"].tolist() == [True, False]
    # the rank sampler: disjoint, same step count, a permutation's prefix of whole global batches
    b0, b1 = ranks[0]["batches"].numpy(), ranks[1]["batches"].numpy()
    assert len(b0) == len(b1) == (103 // 16) * 8
    assert not set(b0) & set(b1)
    assert len(set(b0) | set(b1)) == len(b0) + len(b1)


def test_single_process_path_is_plain_dc() -> None:
    """Without torchrun: one-rank DistInfo, gather is the identity, the step is gradcache's."""
    assert not launched_by_torchrun({"WORLD_SIZE": "1", "RANK": "0"})
    assert launched_by_torchrun({"WORLD_SIZE": "4", "RANK": "2"})
    info = DistInfo()
    z = torch.randn(5, 3)
    g, sl = gather_embeddings(z, info)
    assert g is z and sl == slice(0, 5)
    model, head, batch = setup()
    tensors = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
    fn = make_chunk_fn(model, head, torch.device("cpu"), batch, weights(), "cls", {})
    torch.manual_seed(1)
    res = dc_step_distributed(fn, tensors, lambda a, b: losses.info_nce(a, b, 0.05), 8, info)
    assert res.n_chunks == N // 8 and np.isfinite(res.loss)
    batches = rank_batches(20, 4, 0, 0, info)
    assert sorted(np.concatenate(batches).tolist()) == sorted(set(np.concatenate(batches).tolist()))
    assert len(batches) == 5


def test_torchrun_command() -> None:
    one = torchrun_command(["celllm", "pretrain", "--data", "a.h5ad"], nproc_per_node=4)
    assert one[:4] == ["python", "-m", "torch.distributed.run", "--nproc-per-node=4"] and "--standalone" in one
    assert one[-5:] == ["app", "celllm", "pretrain", "--data", "a.h5ad"]
    multi = torchrun_command(["celllm", "pretrain"], 8, nnodes=2, rdzv_endpoint="node1:29500", rdzv_id="job7")
    assert "--nnodes=2" in multi and "--rdzv-endpoint=node1:29500" in multi and "--standalone" not in multi
    with pytest.raises(ValueError):
        torchrun_command(["x"], 2, nnodes=2)
