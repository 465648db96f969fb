"""Choosing the compute device and thread count for a job."""

from __future__ import annotations

import os

import torch

from app.data.errors import OmicsLabError
from app.engine.events import DeviceInfo


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA if available, else CPU (MPS only when asked for explicitly, as it is still
    incomplete for some ops); ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` as given, with a clear error if absent."""
    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise OmicsLabError(f"device {name!r} was asked for but no CUDA GPU is visible; use --device cpu or auto.")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise OmicsLabError("device 'mps' was asked for but Apple MPS is not available; use cpu or auto.")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise OmicsLabError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps.") from exc


def resolve_threads(n: int | None = None, *, many_fits: bool = False) -> int:
    """The thread count a job uses: ``n`` as given, or (None) one thread.

    The one rule for every job and face (a config's ``threads`` field defaults to None or its own number).
    Pure Python, so the job process can size OpenMP before torch is imported. One by default: the models here
    run many small operations, where torch's intra-op threads cost more than they give. Measured on the 2-core
    VM (load ~3): embedding 5,000 cells with the shipped CellLM took 6.9 s on 1 thread and 37.5 s on 2 (7x the
    CPU time); the deep GP models and a small MLP showed the same. Ask for more with ``--threads``. Jobs of many
    independent fits (``many_fits``: the GP cv/train jobs) default to :func:`fit_threads` instead: there each thread
    trains its own network on one intra-op thread, so the cores add up.
    """
    if n is not None and n >= 1:
        return int(n)
    return fit_threads() if many_fits else 1


def fit_threads(limit: int = 8) -> int:
    """Default threads of a job made of many independent small fits (the deep GP CV: folds x repeats x
    networks): the usable cores, at most ``limit``. Such a job trains one network per thread
    (``app.engine.gp.parallel``), each on one intra-op thread, so a core is never shared by two of its threads
    and the count does not change any network's result."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(int(limit), cores))


def set_threads(n: int | None = None, *, many_fits: bool = False) -> int:
    """Set torch's intra-op threads explicitly (``resolve_threads``); returns the count.

    Torch's own default oversubscribes small shared VMs (measured ~15x slower on 2 cores for a small MLP).
    """
    n = resolve_threads(n, many_fits=many_fits)
    torch.set_num_threads(n)
    return n


def resolve_compute(device: str = "auto", threads: int | None = None, *,
                    many_fits: bool = False) -> tuple[torch.device, int]:
    """Device and threads of a job, decided in one place: (torch device, threads set); ``many_fits`` for a
    job of many independent small fits (see :func:`resolve_threads`)."""
    return resolve_device(device), set_threads(threads, many_fits=many_fits)


def device_info(device: torch.device) -> DeviceInfo:
    """What a job reports about its device (and, on CUDA, memory in use)."""
    if device.type == "cuda":
        idx = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(idx)
        return DeviceInfo(str(device), props.name, int(torch.cuda.memory_allocated(idx)), int(props.total_memory))
    return DeviceInfo(str(device), "CPU" if device.type == "cpu" else device.type)


def available_devices() -> list[str]:
    """Device choices to offer a user: auto, cpu, each visible CUDA GPU, mps when present."""
    out = ["auto", "cpu"]
    if torch.cuda.is_available():
        out += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        out.append("mps")
    return out
