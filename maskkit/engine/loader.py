"""Batches for training: the seeded global-batch stream of images or windows, and moving a
batch to the device. One code path for one process and for torchrun (see
:mod:`maskkit.engine.distributed` for the sampler)."""

from __future__ import annotations

from typing import Any, Callable, Iterator

import torch

from maskkit.data.windows import WindowSampler, collate_windows
from maskkit.engine.distributed import DistInfo, GlobalBatchSampler, SeededSamples
from maskkit.masks import CompactMasks

__all__ = ["to_device", "collate_pairs", "image_batches", "window_batches"]


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
    dataset, cfg, info: DistInfo, start_step: int, collate_fn: Callable = collate_pairs, shuffle: bool = True
) -> Iterator:
    """Infinite (images, targets) micro-batches: this rank's shard of each seeded global batch."""
    tc = cfg.train
    sampler = GlobalBatchSampler(
        len(dataset), tc.batch_size, tc.seed, info.rank, info.world_size, tc.accum_steps, start_step, shuffle
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


def window_batches(dataset, cfg, info: DistInfo, start_step: int) -> Iterator:
    """SharpMask per-patch training (REFERENCE "Training data"): window ``p`` of the global
    stream is ``WindowSampler`` item ``p``, a deterministic function of (seed, p); the sampler
    makes all windows of one global step the same kind (all-mask or all-score)."""
    tc = cfg.train
    windows = WindowSampler(
        dataset,
        cfg.model.sampler,
        pixel_mean=tuple(cfg.model.pixel_mean),
        batch_size=tc.batch_size,
        length=tc.batch_size * max(1, tc.max_iter),
        seed=tc.seed,
    )
    return image_batches(windows, cfg, info, start_step, collate_windows, shuffle=False)
