"""FLOPs of a model, counted with ``torch.utils.flop_counter.FlopCounterMode``.

Reported as GFLOPs with **one multiply-add = 1 FLOP** (the convention of the paper's and
detectron2's tables; FlopCounterMode itself counts 2 per multiply-add). Only convolutions and
matrix products are counted (as detectron2/fvcore do); NMS, RoIAlign and mask pasting are not.
Used by ``maskkit models`` (on the ``meta`` device) and ``maskkit bench``.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["bench_image_size", "count_gflops", "centermask_gflops"]


def bench_image_size(min_size: int, max_size: int = 0) -> tuple[int, int]:
    """``(h, w)`` of a 4:3 landscape image with shorter side ``min_size`` (longer side capped at ``max_size``)."""
    h, w = min_size, round(min_size * 4 / 3)
    if max_size and w > max_size:
        h, w = round(h * max_size / w), max_size
    return int(h), int(w)


def count_gflops(fn: Callable[[], object]) -> float:
    """GFLOPs (multiply-add = 1) of everything ``fn()`` runs."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 2 / 1e9


def centermask_gflops(model: nn.Module, height: int, width: int, detections: int | None = None) -> float:
    """GFLOPs of a CenterMask forward on one ``height x width`` image with ``detections``
    RoIs (default: the config's ``detections_per_image``, 50) through the mask branch.

    The dense part (backbone, FPN, FCOS head) runs on the padded input; the mask branch
    (SAG-Mask + MaskIoU) on ``detections`` RoI feature maps. Works on a model built on the
    ``meta`` device (shapes only: instant, no memory), which ``maskkit models`` uses.
    """
    cfg = model.cfg
    n = cfg.fcos.detections_per_image if detections is None else detections
    d = max(cfg.size_divisibility, 1)
    hp, wp = -(-height // d) * d, -(-width // d) * d
    p = next(model.parameters())
    image = torch.zeros(1, 3, hp, wp, device=p.device, dtype=p.dtype)
    res = cfg.mask.pooler_resolution
    rois = torch.zeros(n, cfg.fpn_channels, res, res, device=p.device, dtype=p.dtype)
    probs = torch.zeros(n, 1, 2 * res, 2 * res, device=p.device, dtype=p.dtype)

    def forward():
        model.fcos(model.features(image)[0])
        model.mask_head(rois)
        if model.maskiou is not None:
            model.maskiou(rois, probs)

    was_training = model.training
    model.eval()
    try:
        return count_gflops(forward)
    finally:
        model.train(was_training)
