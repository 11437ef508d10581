"""Distributed plumbing: torchrun/DDP setup, rank helpers, the global-batch sampler and
gathering for evaluation.

One code path for one and many processes. ``torchrun --nproc_per_node=N -m maskkit train``
sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; :func:`init_distributed` then starts a process
group (NCCL on GPUs, Gloo on CPUs). Without those variables everything runs in-process and
the helpers below degrade to no-ops.

Data order is defined *globally*, independent of the number of processes: step ``s`` uses
global samples ``s*B .. (s+1)*B - 1`` of a seeded stream of epoch permutations, and rank
``r`` of ``W`` takes the ``r``-th contiguous shard of that global batch. Each sample also
carries its own seed (derived from the run seed and its position in the stream) so its
augmentation does not depend on which process or worker draws it, or on resuming. Hence 1
process and N processes at the same global batch see the same images with the same
augmentations, and a resumed run continues the exact stream.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist

from maskkit.config import ConfigError
from maskkit.errors import DataError, MaskkitError

__all__ = [
    "DistInfo",
    "resolve_device",
    "init_distributed",
    "dist_info",
    "is_main",
    "barrier",
    "all_reduce_sum",
    "all_gather_objects",
    "GlobalBatchSampler",
    "SeededSamples",
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


class GlobalBatchSampler:
    """Infinite batch sampler yielding this rank's shard of each global batch as
    ``[(index, sample_seed), ...]``.

    ``global_batch`` samples make one optimiser step: this rank's micro-batch is
    ``global_batch / (world_size * accum_steps)``; ``world_size * accum_steps`` micro-batches make
    one optimiser step. ``start_step`` skips the steps already done (resume). ``shuffle=False``
    maps stream position ``p`` to index ``p mod n`` (for datasets that are random by themselves,
    like the SharpMask window sampler).
    """

    def __init__(
        self,
        num_samples: int,
        global_batch: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        accum_steps: int = 1,
        start_step: int = 0,
        shuffle: bool = True,
    ):
        if num_samples <= 0:
            raise DataError("the training set is empty")
        micro = global_batch // (world_size * accum_steps)
        if micro * world_size * accum_steps != global_batch:
            raise ConfigError(
                f"train.batch_size={global_batch} is not divisible by "
                f"{world_size} process(es) x train.accum_steps={accum_steps}"
            )
        self.n, self.global_batch, self.seed = num_samples, global_batch, seed
        self.rank, self.world, self.accum, self.micro = rank, world_size, accum_steps, micro
        self.start_step, self.shuffle = start_step, shuffle

    def _position(self, pos: int) -> tuple[int, int]:
        """Global stream position -> (dataset index, sample seed)."""
        epoch, offset = divmod(pos, self.n)
        seed = (self.seed * 7_919 + pos) % (2**31 - 1)
        if not self.shuffle:
            return offset, seed
        perm = self._perm_cache.get(epoch)
        if perm is None:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            perm = torch.randperm(self.n, generator=g).tolist()
            self._perm_cache = {epoch: perm}
        return perm[offset], seed

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        self._perm_cache: dict[int, list[int]] = {}
        step = self.start_step
        while True:
            base = step * self.global_batch
            for a in range(self.accum):
                # micro-batch a of the step: the a-th slice of every rank's shard
                first = base + self.rank * (self.micro * self.accum) + a * self.micro
                yield [self._position(p) for p in range(first, first + self.micro)]
            step += 1


class SeededSamples(torch.utils.data.Dataset):
    """Wraps a dataset so item ``(index, seed)`` is produced with torch / numpy / random
    seeded by ``seed`` (augmentation reproducible anywhere), leaving the caller's RNG
    streams untouched."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]):
        index, seed = item
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            random.seed(seed)
            np.random.seed(seed)
            try:
                return self.dataset[index]
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)
