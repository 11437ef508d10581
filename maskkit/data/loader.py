"""Batches for training: the seeded global-batch stream of images or windows, and moving a
batch to the device. One code path for one process and for torchrun (``rank`` of
``world_size`` processes).

Data order is defined *globally*, independent of the number of processes: step ``s`` uses
global samples ``s*B .. (s+1)*B - 1`` of a seeded stream of epoch permutations, and rank
``r`` of ``W`` takes the ``r``-th contiguous shard of that global batch. Each sample also
carries its own seed (derived from the run seed and its position in the stream) so its
augmentation does not depend on which process or worker draws it, or on resuming. Hence 1
process and N processes at the same global batch see the same images with the same
augmentations, and a resumed run continues the exact stream.
"""

from __future__ import annotations

import random
from typing import Any, Callable, Iterator

import numpy as np
import torch

from maskkit.config import ConfigError
from maskkit.data.windows import WindowSampler, collate_windows
from maskkit.errors import DataError
from maskkit.masks import CompactMasks

__all__ = ["GlobalBatchSampler", "SeededSamples", "to_device", "collate_pairs", "image_batches", "window_batches"]


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


def to_device(obj: Any, device: torch.device) -> Any:
    """Tensors (also inside dicts, lists, tuples) to ``device``; tv_tensors become plain tensors.
    Compact masks (a target's RLE masks) stay as they are: they make pixels on the CPU."""
    if isinstance(obj, CompactMasks):
        return obj
    if isinstance(obj, torch.Tensor):
        return obj.as_subclass(torch.Tensor).to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device) for v in obj)
    return obj


def collate_pairs(batch: list[tuple[Any, dict]]) -> tuple[list, list]:
    """[(image, target), ...] -> ([images], [targets]) (images of different sizes stay a list)."""
    return [b[0] for b in batch], [b[1] for b in batch]


def image_batches(
    dataset,
    cfg,
    rank: int,
    world_size: int,
    start_step: int,
    collate_fn: Callable = collate_pairs,
    shuffle: bool = True,
) -> Iterator:
    """Infinite (images, targets) micro-batches: this rank's shard of each seeded global batch."""
    tc = cfg.train
    sampler = GlobalBatchSampler(
        len(dataset), tc.batch_size, tc.seed, rank, world_size, tc.accum_steps, start_step, shuffle
    )
    workers = int(cfg.data.num_workers)
    loader = torch.utils.data.DataLoader(
        SeededSamples(dataset),
        batch_sampler=sampler,
        num_workers=workers,
        collate_fn=collate_fn,
        persistent_workers=workers > 0,
    )
    return iter(loader)


def window_batches(
    dataset, cfg, rank: int, world_size: int, start_step: int, pixel_mean: tuple[float, ...] | None = None
) -> Iterator:
    """SharpMask per-patch training (REFERENCE "Training data"): window ``p`` of the global
    stream is ``WindowSampler`` item ``p``, a deterministic function of (seed, p); the sampler
    makes all windows of one global step the same kind (all-mask or all-score). Crops past the
    image are filled with ``pixel_mean`` (the model's input convention; default the config's)."""
    tc = cfg.train
    windows = WindowSampler(
        dataset,
        cfg.model.sampler,
        pixel_mean=tuple(pixel_mean if pixel_mean is not None else cfg.model.pixel_mean),
        batch_size=tc.batch_size,
        length=tc.batch_size * max(1, tc.max_iter),
        seed=tc.seed,
    )
    return image_batches(windows, cfg, rank, world_size, start_step, collate_windows, shuffle=False)
