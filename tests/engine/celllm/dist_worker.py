"""One torchrun rank of the distributed divide-and-conquer test (run by tests/engine/celllm/test_distributed.py).

Usage: python -m torch.distributed.run --standalone --nproc-per-node 2 tests/engine/celllm/dist_worker.py OUT_DIR

Every rank builds the same tiny CellLM and the same global batch (seeded), takes its slice, runs
``dc_step_distributed`` for several chunk sizes and saves its gradients, losses and a few collective checks to
OUT_DIR/rank{R}.pt for the test to compare with a single-process full-batch reference.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from dist_common import CHUNKS, N, grads, rank_seed, setup, weights

from app.engine.celllm import losses
from app.engine.celllm.distributed import (
    all_sum,
    any_flag,
    cleanup,
    dc_step_distributed,
    gather_embeddings,
    init_distributed,
    rank_batches,
    set_chunk_fn,
    wrap_model,
)
from app.engine.celllm.gradcache import slice_batch
from app.engine.celllm.pretrain import make_chunk_fn


def main(out_dir: str) -> None:
    torch.set_num_threads(1)
    info = init_distributed("cpu")
    assert info.distributed and info.backend == "gloo"
    model, head, batch = setup()
    tensors = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
    n = N // info.world_size
    mine = slice_batch(tensors, info.rank * n, (info.rank + 1) * n)
    # denominators of the per-cell losses must be GLOBAL: sum this rank's counts over ranks
    n_masked = all_sum(int((mine["targets"] != losses.IGNORE).sum()), info)
    assert n_masked == batch["n_masked"]
    info_batch = {"n_masked": n_masked, "n_labelled": all_sum(int(mine["labels"].numel()), info)}
    fn = make_chunk_fn(model, head, info.device, info_batch, weights(), "cls", {})
    runner = wrap_model(model, info, head)
    set_chunk_fn(runner, fn)
    out: dict[str, torch.Tensor] = {}
    for chunk in CHUNKS:
        runner.zero_grad(set_to_none=True)
        torch.manual_seed(rank_seed(info.rank))
        res = dc_step_distributed(runner, mine, lambda a, b: losses.info_nce(a, b, 0.05), chunk, info)
        out[f"grad_{chunk}"] = grads(model, head)
        out[f"loss_{chunk}"] = torch.tensor([res.loss, res.rep_loss, res.local_loss], dtype=torch.float64)
        out[f"n_chunks_{chunk}"] = torch.tensor([res.n_chunks])
        out[f"reps_{chunk}"] = res.reps[0]
    # an optimiser step keeps the ranks' parameters identical (DDP averaged the same gradients)
    opt = torch.optim.AdamW(runner.parameters(), lr=1e-2)
    opt.step()
    out["params_after"] = torch.cat([p.detach().reshape(-1) for p in runner.parameters()])
    # collectives: unequal row counts, flags, sums, batches
    z = torch.full((info.rank + 1, 3), float(info.rank), requires_grad=True)
    g, sl = gather_embeddings(z, info)
    g.sum().backward()
    out["gather"] = g.detach()
    out["gather_slice"] = torch.tensor([sl.start, sl.stop])
    out["gather_grad"] = z.grad
    out["flag_any"] = torch.tensor([any_flag(info.rank == 1, info), any_flag(False, info)])
    out["batches"] = torch.from_numpy(__import__("numpy").concatenate(rank_batches(103, 8, 2, 5, info)))
    torch.save(out, Path(out_dir) / f"rank{info.rank}.pt")
    cleanup(info)


if __name__ == "__main__":
    main(sys.argv[1])
