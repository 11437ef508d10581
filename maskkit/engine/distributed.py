"""Distributed plumbing: torchrun/DDP setup, rank helpers and gathering (shared by training and
inference; the global data order is :class:`maskkit.data.loader.GlobalBatchSampler`).

One code path for one and many processes. ``torchrun --nproc_per_node=N -m maskkit train``
sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; :func:`init_distributed` then starts a process
group (NCCL on GPUs, Gloo on CPUs). Without those variables everything runs in-process and
the helpers below degrade to no-ops.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from maskkit.errors import MaskkitError

__all__ = [
    "DistInfo",
    "resolve_device",
    "init_distributed",
    "dist_info",
    "is_main",
    "barrier",
    "all_reduce_sum",
    "all_gather_objects",
]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def resolve_device(device: str | None) -> torch.device:
    """``auto``/None -> cuda when available, else cpu (per-rank GPU under torchrun)."""
    if device in (None, "", "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise MaskkitError(f"--device {device}: not a device (use auto, cpu, cuda or cuda:N)") from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise MaskkitError(f"--device {device}: maskkit runs on cpu or cuda (auto picks one), not {dev.type}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise MaskkitError(f"--device {device}: CUDA is not available on this machine")
        info = dist_info()
        if info.distributed and dev.index is None:
            dev = torch.device("cuda", info.local_rank)
    return dev


def init_distributed(device: str = "cpu") -> DistInfo:
    """Start the process group when launched by torchrun (env ``WORLD_SIZE`` > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        backend = "nccl" if str(device).startswith("cuda") and torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
    return dist_info()


def dist_info() -> DistInfo:
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))
    return DistInfo()


def is_main() -> bool:
    return dist_info().main


def barrier() -> None:
    if dist_info().distributed:
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over processes (in place, and returned); identity in one process."""
    if dist_info().distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_gather_objects(obj: Any) -> list[Any]:
    """Every process's ``obj`` (picklable, e.g. COCO result dicts), in rank order."""
    info = dist_info()
    if not info.distributed:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out
