"""CellLM pretraining across GPUs and nodes with PyTorch's own distributed engine (torchrun + DDP).

What a rank does differently from a single process:

* ``init_distributed()`` reads torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
  ``MASTER_ADDR``/``MASTER_PORT``), joins the process group (NCCL on GPUs, gloo on CPUs) and picks the
  rank's device (``cuda:LOCAL_RANK``). Without torchrun it returns a one-rank ``DistInfo`` and touches nothing.
* ``wrap_model(model, info, head)`` puts the encoder and the optional supervised head in one module whose
  forward is the per-chunk step function, and wraps that in ``DistributedDataParallel``; DDP then averages
  the gradients of every trainable parameter across ranks.
* ``dc_step_distributed`` is divide and conquer (gradient cache) over the GLOBAL batch: each rank forwards
  its chunks without autograd, the detached embeddings are all-gathered so the contrastive loss sees all
  ``world_size x batch`` cells, every rank takes the gradient of that global loss with respect to its own
  rows, and re-runs its chunks with autograd under the replayed RNG. The surrogate is scaled by the world
  size (DDP averages, the global loss needs the sum) and all chunks but the last run under ``no_sync`` so
  gradients cross the network once per step. Result: each rank's ``.grad`` equals the single-process
  full-batch gradient of the same global batch.
* ``rank_batches`` (in-memory data) and ``open_stream`` (backed ``.h5ad`` files) give every rank a disjoint
  share of each epoch with the same number of steps on every rank (a ``DistributedSampler`` equivalent).
* ``RankReporter``: only rank 0 emits events; a stop request on any rank stops every rank at the same step.
  Rank 0 writes checkpoints (``info.is_main``); ``barrier`` keeps the others from reading half-written files.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from app.engine.celllm.gradcache import DCResult, RngState, batch_size_of, cuda_devices, dc_step, slice_batch
from app.engine.reporter import Reporter

ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size``, ``local_rank`` on its node, its ``device``,
    ``is_main`` (rank 0: logs, checkpoints), ``backend`` ("nccl" | "gloo" | None when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    is_main: bool = True
    backend: str | None = None

    @property
    def distributed(self) -> bool:
        """True when more than one rank takes part (collectives are needed)."""
        return self.world_size > 1


def launched_by_torchrun(env: dict[str, str] | None = None) -> bool:
    """True when the environment names a rank and a world size larger than one (torchrun, SLURM srun with
    the variables exported)."""
    e = os.environ if env is None else env
    try:
        return int(e.get("WORLD_SIZE", "1")) > 1 and "RANK" in e
    except ValueError:
        return False


def init_distributed(device: str = "auto", backend: str | None = None, timeout_s: float = 1800.0) -> DistInfo:
    """Join the process group torchrun describes, or return a single-process ``DistInfo``.

    ``device``: "auto" (a GPU per local rank when CUDA is visible, else CPU), "cpu" or "cuda". ``backend``:
    default NCCL for CUDA, gloo for CPU. Safe to call twice (re-uses an initialised group).
    """
    from app.engine.device import resolve_device

    if not launched_by_torchrun():
        return DistInfo(device=resolve_device(device))
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    want = (device or "auto").lower()
    use_cuda = torch.cuda.is_available() and want != "cpu"
    if want.startswith("cuda") and not torch.cuda.is_available():
        from app.data.errors import OmicsLabError

        raise OmicsLabError(f"device {device!r} was asked for but no CUDA GPU is visible on rank {rank}.")
    if use_cuda:
        n_gpu = torch.cuda.device_count()
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        if local_world > n_gpu:  # NCCL refuses two ranks on one GPU ("Duplicate GPU detected")
            from app.data.errors import OmicsLabError

            raise OmicsLabError(f"{local_world} ranks on this machine but only {n_gpu} GPU(s) visible; start "
                                f"torchrun with --nproc-per-node {n_gpu} (or use --device cpu).")
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    be = backend or ("nccl" if use_cuda else "gloo")
    if not dist.is_initialized():
        kwargs: dict[str, Any] = {"backend": be, "init_method": "env://", "rank": rank, "world_size": world,
                                  "timeout": datetime.timedelta(seconds=float(timeout_s))}
        if use_cuda:
            kwargs["device_id"] = dev  # binds NCCL to this rank's GPU (no guessing, no hang on barrier)
        dist.init_process_group(**kwargs)
    return DistInfo(rank, world, local_rank, dev, rank == 0, be)


def cleanup(info: DistInfo) -> None:
    """Leave the process group (end of the job)."""
    if info.distributed and dist.is_initialized():
        dist.destroy_process_group()


# --------------------------------------------------------------------------------------------------
# small collectives (no-ops on one rank)
# --------------------------------------------------------------------------------------------------
def _comm_device(info: DistInfo) -> torch.device:
    return info.device if info.backend == "nccl" else torch.device("cpu")


def barrier(info: DistInfo) -> None:
    """Wait for every rank (e.g. after rank 0 wrote a checkpoint the others will read)."""
    if info.distributed:
        dist.barrier()


def all_sum(value: float | int, info: DistInfo) -> float | int:
    """Sum of ``value`` over ranks (int stays int): global counts such as masked tokens in a batch."""
    if not info.distributed:
        return value
    t = torch.tensor([float(value)], dtype=torch.float64, device=_comm_device(info))
    dist.all_reduce(t)
    out = float(t.item())
    return round(out) if isinstance(value, int) else out


def all_sum_many(values: Sequence[float | int], info: DistInfo) -> list[float]:
    """Element-wise sums over ranks of several numbers in ONE all-reduce (per-step counts and loss parts)."""
    if not info.distributed:
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_comm_device(info))
    dist.all_reduce(t)
    return [float(v) for v in t.tolist()]


def all_min(value: float | int, info: DistInfo) -> float | int:
    """Smallest ``value`` over ranks (e.g. a chunk size each rank chose from its own free memory)."""
    if not info.distributed:
        return value
    t = torch.tensor([float(value)], dtype=torch.float64, device=_comm_device(info))
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    out = float(t.item())
    return round(out) if isinstance(value, int) else out


def any_flag(flag: bool, info: DistInfo) -> bool:
    """True on every rank if ``flag`` is True on any rank (a stop request must stop all ranks together)."""
    if not info.distributed:
        return bool(flag)
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=_comm_device(info))
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def broadcast_object(obj: Any, info: DistInfo, src: int = 0) -> Any:
    """Rank ``src``'s picklable ``obj`` on every rank (e.g. the vocabulary rank 0 built)."""
    if not info.distributed:
        return obj
    box = [obj if info.rank == src else None]
    dist.broadcast_object_list(box, src=src, device=_comm_device(info))
    return box[0]


def sync_buffers(module: nn.Module, info: DistInfo, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (Performer projections after ``redraw_projections``) to every rank. DDP is
    built with ``broadcast_buffers=False`` (no per-forward broadcast), so call this after a redraw."""
    if not info.distributed:
        return
    for b in module.buffers():
        if info.backend == "nccl" or b.device.type == "cpu":
            dist.broadcast(b.data, src=src)
        else:  # gloo with a non-CPU buffer
            tmp = b.data.cpu()
            dist.broadcast(tmp, src=src)
            b.data.copy_(tmp)


def gather_embeddings(z: torch.Tensor, info: DistInfo) -> tuple[torch.Tensor, slice]:
    """All-gather ``z`` [n, ...] from every rank -> ``(global_z, local_slice)``.

    ``global_z`` = the ranks' rows in rank order; ``global_z[local_slice]`` IS ``z`` (same autograd node), the
    other ranks' rows are constants. So the gradient of a loss on ``global_z`` flows into this rank's rows
    only, which is exactly the gradient-cache step (each rank back-propagates its own rows' share). Ranks may
    hold different ``n`` (padded for the collective, trimmed after).
    """
    if not info.distributed:
        return z, slice(0, z.shape[0])
    dev = z.device
    comm = _comm_device(info)
    n = int(z.shape[0])
    sizes_t = [torch.zeros(1, dtype=torch.int64, device=comm) for _ in range(info.world_size)]
    dist.all_gather(sizes_t, torch.tensor([n], dtype=torch.int64, device=comm))
    sizes = [int(s.item()) for s in sizes_t]
    m = max(sizes)
    send = z.detach().to(comm)
    if n < m:
        send = torch.cat([send, send.new_zeros((m - n, *send.shape[1:]))])
    bufs = [torch.empty_like(send) for _ in range(info.world_size)]
    dist.all_gather(bufs, send.contiguous())
    parts = [bufs[r][:sizes[r]].to(dev) for r in range(info.world_size)]
    parts[info.rank] = z
    start = sum(sizes[:info.rank])
    return torch.cat(parts), slice(start, start + n)


# --------------------------------------------------------------------------------------------------
# the model under DDP
# --------------------------------------------------------------------------------------------------
class ChunkForward(nn.Module):
    """Encoder + optional head as ONE module whose forward is the per-chunk step function (``fn(chunk) ->
    ((emb_a, emb_b), local_loss)``, e.g. ``pretrain.make_chunk_fn``). DDP hooks every trainable parameter
    of both, and each chunk is exactly one DDP forward (the function may call the encoder twice)."""

    def __init__(self, model: nn.Module, head: nn.Module | None = None) -> None:
        super().__init__()
        self.model = model
        self.head = head
        self.fn: Callable[[Any], Any] | None = None

    def forward(self, chunk: Any) -> Any:
        if self.fn is None:
            raise RuntimeError("set the chunk function first (set_chunk_fn)")
        return self.fn(chunk)


def wrap_model(model: nn.Module, info: DistInfo, head: nn.Module | None = None,
               find_unused_parameters: bool = False) -> nn.Module:
    """``ChunkForward(model, head)``, under ``DistributedDataParallel`` when more than one rank runs. Move
    the model to ``info.device`` first. DDP broadcasts rank 0's parameters and buffers once here, so every
    rank starts identical. ``find_unused_parameters``: set when some trainable parameter may get no
    gradient in a step (costs a graph walk)."""
    runner = ChunkForward(model, head)
    if not info.distributed:
        return runner
    import inspect

    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [info.device.index] if info.device.type == "cuda" else None
    # no buffer broadcast at every forward (projections are step-seeded, identical on all ranks); newer torch
    # names this forward_sync_buffers (still syncing once at init, which is what we want)
    params = inspect.signature(DDP.__init__).parameters
    sync = {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}
    return DDP(runner, device_ids=ids, output_device=ids[0] if ids else None,
               find_unused_parameters=find_unused_parameters, **sync)


def unwrap(wrapped: nn.Module) -> ChunkForward:
    """The ``ChunkForward`` inside a DDP wrapper (or itself)."""
    inner = getattr(wrapped, "module", wrapped)
    if not isinstance(inner, ChunkForward):
        raise TypeError("expected a module from wrap_model")
    return inner


def set_chunk_fn(wrapped: nn.Module, fn: Callable[[Any], Any]) -> None:
    """Set the per-chunk function the wrapped module runs (once per step: it holds the batch's counts)."""
    unwrap(wrapped).fn = fn


def _split(out: Any) -> tuple[tuple[torch.Tensor, ...], torch.Tensor | None]:
    if isinstance(out, torch.Tensor):
        return (out,), None
    if isinstance(out, (tuple, list)) and len(out) == 2 and (
            out[1] is None or (isinstance(out[1], torch.Tensor) and out[1].dim() == 0)):
        reps = out[0]
        return ((reps,) if isinstance(reps, torch.Tensor) else tuple(reps)), out[1]
    return tuple(out), None


def dc_step_distributed(runner: Any, batch: Any, loss_fn: Callable[..., torch.Tensor], chunk_size: int,
                        info: DistInfo, *, scaler: Any = None, autocast_dtype: torch.dtype | None = None,
                        device_type: str | None = None, devices: Sequence[int] | None = None) -> DCResult:
    """Divide-and-conquer step over the global batch (this rank's ``batch`` + every other rank's).

    Same contract as ``gradcache.dc_step`` (``runner(chunk)`` -> reps or ``(reps, local_loss)``; the local
    loss must be normalised by the GLOBAL batch, e.g. masked tokens summed with ``all_sum``; ``loss_fn`` gets
    the global fp32 representations), plus ``info``. ``runner`` is ``wrap_model``'s module (DDP when
    distributed) or any callable. After the call each rank's ``.grad`` holds the gradient of the global
    loss (DDP averaged ``world_size x`` this rank's share). On one rank it is ``gradcache.dc_step``.

    Returns ``DCResult`` with the global loss values and the global detached representations. Every rank
    must call it with the same number of chunks (equal local batch sizes).
    """
    if not info.distributed:
        return dc_step(runner, batch, loss_fn, chunk_size, scaler=scaler, autocast_dtype=autocast_dtype,
                       device_type=device_type, devices=devices)
    w = float(info.world_size)
    n = batch_size_of(batch)
    c = max(1, min(int(chunk_size), n))
    dev_type = device_type or info.device.type
    ddp_sync = getattr(runner, "no_sync", None)

    def ac() -> Any:
        return torch.autocast(device_type=dev_type, dtype=autocast_dtype, enabled=autocast_dtype is not None)

    def scale(t: torch.Tensor) -> torch.Tensor:
        return scaler.scale(t) if scaler is not None else t

    bounds = [(s, min(s + c, n)) for s in range(0, n, c)]
    last = len(bounds) - 1
    local_total = torch.zeros((), dtype=torch.float64)

    if len(bounds) == 1:  # one chunk: a plain forward/backward through the gathered batch
        with ac():
            reps, local = _split(runner(batch))
        gathered = [gather_embeddings(r.float(), info)[0] for r in reps]
        rep_loss = loss_fn(*gathered)
        total = rep_loss + (local.float() if local is not None else 0.0)
        scale(total * w).backward()
        if local is not None:
            local_total += float(local.detach())
        glob = tuple(g.detach() for g in gathered)
    else:
        states: list[RngState] = []
        cached: list[tuple[torch.Tensor, ...]] = []
        for s, e in bounds:  # (1) no-grad forwards, RNG recorded per chunk
            chunk = slice_batch(batch, s, e)
            states.append(RngState(list(devices) if devices is not None else cuda_devices(runner, chunk)))
            with torch.no_grad(), ac():
                reps, _ = _split(runner(chunk))
            cached.append(tuple(r.detach().float() for r in reps))
        n_parts = len(cached[0])
        mine = [torch.cat([ck[i] for ck in cached]).requires_grad_(True) for i in range(n_parts)]
        del cached
        # (2) global loss on all ranks' detached reps; gradient w.r.t. this rank's rows only
        gathered = [gather_embeddings(m, info)[0] for m in mine]
        rep_loss = loss_fn(*gathered)
        grads = torch.autograd.grad(scale(rep_loss), mine)
        glob = tuple(g.detach() for g in gathered)
        del gathered
        after = RngState(sorted({d for st in states for d in st.devices}))
        try:
            for k, ((s, e), st) in enumerate(zip(bounds, states)):  # (3) replay with autograd
                st.restore()
                chunk = slice_batch(batch, s, e)
                ctx = ddp_sync() if (ddp_sync is not None and k < last) else contextlib.nullcontext()
                with ctx:  # forward AND backward inside no_sync: DDP decides at forward time
                    with ac():
                        reps, local = _split(runner(chunk))
                    surrogate = sum((r.float() * g[s:e]).sum() for r, g in zip(reps, grads))
                    if local is not None:
                        surrogate = surrogate + scale(local.float())
                        local_total += float(local.detach())
                    (surrogate * w).backward()  # DDP averages over ranks; the global loss is their sum
        finally:
            after.restore()
    local_global = float(all_sum(float(local_total), info))
    rl = float(rep_loss.detach())
    return DCResult(rl + local_global, rl, local_global, glob if len(glob) > 1 else glob[0], len(bounds))


# --------------------------------------------------------------------------------------------------
# data for each rank
# --------------------------------------------------------------------------------------------------
def rank_batches(n_cells: int, batch_size: int, epoch: int, seed: int, info: DistInfo) -> list[np.ndarray]:
    """This rank's batches (cell indices) for an epoch of an in-memory dataset: one permutation shared by
    all ranks (``seed``, ``epoch``), global batch ``b`` = ranks' batches ``b`` together (rank ``r`` takes
    slot ``r`` of each global batch). Incomplete global batches are dropped, so every rank runs
    ``n_cells // (batch_size * world_size)`` steps."""
    bs, w = int(batch_size), info.world_size
    perm = np.random.default_rng(seed + 7919 * int(epoch)).permutation(int(n_cells))
    n_global = int(n_cells) // (bs * w)
    return [perm[(b * w + info.rank) * bs:(b * w + info.rank + 1) * bs] for b in range(n_global)]


def open_stream(paths: str | Path | Sequence[str | Path], info: DistInfo, **kwargs: Any) -> Any:
    """A ``CellStream`` over backed ``.h5ad`` files giving this rank its share of each epoch (every cell
    read by exactly one rank per epoch; ``iter_batches(bs)`` yields the same count on every rank). Call
    ``set_epoch(e)`` before each epoch. ``kwargs`` go to ``CellStream`` (seed, shuffle_buffer, gene_maps...)."""
    from app.data.singlecell.stream import CellStream

    return CellStream(paths, rank=info.rank, world_size=info.world_size, **kwargs)


def stream_steps(stream: Any, batch_size: int, start_batch: int = 0) -> Iterator[Any]:
    """``stream.iter_batches(batch_size)`` from batch ``start_batch`` (resume mid-epoch: earlier batches
    are read and skipped, keeping the shuffle identical to an uninterrupted run)."""
    for b, batch in enumerate(stream.iter_batches(batch_size, drop_last=True)):
        if b >= start_batch:
            yield batch


def seed_step(seed: int, step: int, info: DistInfo) -> None:
    """Seed torch's RNG (dropout) from (seed, step, rank): distinct masks per rank, identical after resume."""
    torch.manual_seed((int(seed) * 1_000_003 + int(step) * 7_919 + info.rank * 104_729) % (2**63 - 1))


# --------------------------------------------------------------------------------------------------
# events and stopping
# --------------------------------------------------------------------------------------------------
class RankReporter(Reporter):
    """Forwards events from rank 0 only; ``should_stop`` is True on all ranks once any rank's inner
    reporter asks (one small all-reduce, so every rank must call it at the same points: once per step)."""

    def __init__(self, inner: Reporter, info: DistInfo) -> None:
        super().__init__()
        self.inner = inner
        self.info = info

    def emit(self, event: Any) -> None:
        if self.info.is_main:
            self.inner.emit(event)

    def request_stop(self) -> None:
        self.inner.request_stop()

    def should_stop(self) -> bool:
        return any_flag(self.inner.should_stop(), self.info)


def rank_reporter(reporter: Reporter | None, info: DistInfo) -> Reporter:
    """``reporter`` itself on one rank, else a ``RankReporter`` around it."""
    from app.engine.reporter import ensure_reporter

    rep = ensure_reporter(reporter)
    return RankReporter(rep, info) if info.distributed else rep


# --------------------------------------------------------------------------------------------------
# launching
# --------------------------------------------------------------------------------------------------
def torchrun_command(args: Sequence[str], nproc_per_node: int | str = "gpu", nnodes: int | str = 1,
                     rdzv_endpoint: str | None = None, rdzv_id: str | None = None, python: str = "python") -> list[str]:
    """The ``torchrun`` command line running ``python -m app <args>`` (single node: standalone rendezvous;
    several nodes: c10d rendezvous at ``rdzv_endpoint`` = "host:port" of one node, the same ``rdzv_id``)."""
    cmd = [python, "-m", "torch.distributed.run", f"--nproc-per-node={nproc_per_node}"]
    if str(nnodes) in ("1", "1:1"):
        cmd.append("--standalone")
    else:
        if not rdzv_endpoint:
            raise ValueError("several nodes need rdzv_endpoint (host:port of the rendezvous node)")
        cmd += [f"--nnodes={nnodes}", "--rdzv-backend=c10d", f"--rdzv-endpoint={rdzv_endpoint}",
                f"--rdzv-id={rdzv_id or 'omicslab'}"]
    return [*cmd, "-m", "app", *args]


def run_rank(job: Callable[[dict, Reporter | None], dict], config: dict, reporter: Reporter | None = None) -> dict:
    """Run a job function in THIS process as one torchrun rank (the CLI's path under torchrun, instead of
    spawning a job child): joins the group, runs ``job(config, reporter)``, leaves the group."""
    info = init_distributed(str(config.get("device", "auto")))
    try:
        return job(config, reporter)
    finally:
        cleanup(info)
