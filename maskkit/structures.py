"""The data contract (torchvision's) and the box/mask helpers every part shares.

Image:      ``float32 [3, H, W]`` in 0..1, RGB.
Target:     ``dict(boxes=float32 [N,4] xyxy absolute px, labels=int64 [N] in 1..K,
            masks=uint8/bool [N,H,W], image_id=int, iscrowd=int64 [N])``; crowd regions are
            ignore regions, never positives.
Prediction: ``dict(boxes [N,4], labels [N], scores [N], masks [N,1,H,W] float probabilities
            (or binary), mask_scores [N] where the model predicts them)``. SharpMask
            proposals have ``labels`` all 1.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils

__all__ = [
    "empty_prediction",
    "paste_masks_in_image",
    "masks_to_rle",
    "rle_to_mask",
    "mask_iou",
]


def empty_prediction(height: int, width: int, with_mask_scores: bool = True, device=None) -> dict:
    """A well-formed prediction with no instances (for images with no detections)."""
    pred = {
        "boxes": torch.zeros((0, 4), dtype=torch.float32, device=device),
        "labels": torch.zeros((0,), dtype=torch.int64, device=device),
        "scores": torch.zeros((0,), dtype=torch.float32, device=device),
        "masks": torch.zeros((0, 1, height, width), dtype=torch.float32, device=device),
    }
    if with_mask_scores:
        pred["mask_scores"] = torch.zeros((0,), dtype=torch.float32, device=device)
    return pred


def paste_masks_in_image(masks: torch.Tensor, boxes: torch.Tensor, image_size: tuple[int, int],
                         zero_outside: bool = True) -> torch.Tensor:
    """Paste per-box mask probabilities ``[N, M, M]`` (or ``[N, 1, M, M]``) into the image.

    Each ``M x M`` mask covers its box ``[N, 4]`` (xyxy, image pixels); it is resampled
    bilinearly onto the pixel grid of the whole image in one batched ``grid_sample``
    (torchvision's ``paste_masks_in_image`` loops over masks in Python, which the hot path
    must not). Pixels outside a box get 0 (``zero_outside=False``: only those beyond the
    bilinear bleed of half a mask cell, as detectron2). Returns float ``[N, 1, H, W]``.
    """
    if masks.dim() == 4:
        masks = masks[:, 0]
    h, w = int(image_size[0]), int(image_size[1])
    n = masks.shape[0]
    if n == 0:
        return masks.new_zeros((0, 1, h, w), dtype=torch.float32)
    boxes = boxes.to(torch.float32)
    x0, y0, x1, y1 = boxes.unbind(1)  # [N] each
    # Pixel centres in image coordinates, mapped to [-1, 1] inside each box (align_corners=False:
    # the mask's M cells tile the box exactly, cell centres at box_x0 + (i + 0.5) * bw / M).
    xs = torch.arange(w, device=masks.device, dtype=torch.float32) + 0.5
    ys = torch.arange(h, device=masks.device, dtype=torch.float32) + 0.5
    gx = (xs[None, :] - x0[:, None]) / (x1 - x0).clamp(min=1e-6)[:, None] * 2 - 1  # [N, W]
    gy = (ys[None, :] - y0[:, None]) / (y1 - y0).clamp(min=1e-6)[:, None] * 2 - 1  # [N, H]
    grid = torch.stack(
        [gx[:, None, :].expand(n, h, w), gy[:, :, None].expand(n, h, w)], dim=3
    )  # [N, H, W, 2]
    out = F.grid_sample(masks[:, None].to(torch.float32), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if not zero_outside:  # as detectron2's paste_masks_in_image (mask_ops._do_paste_mask): keep the bleed
        return out
    # Bilinear sampling bleeds half a mask cell past the box edge; pixels whose centre lies
    # outside the box are set to 0 so low binarisation thresholds (SharpMask's 0.2) stay inside.
    inside = (gy.abs() <= 1)[:, :, None] & (gx.abs() <= 1)[:, None, :]  # [N, H, W]
    return out * inside[:, None]  # [N, 1, H, W]


def masks_to_rle(masks: torch.Tensor | np.ndarray, threshold: float = 0.5) -> list[dict]:
    """Binary or probability masks ``[N, H, W]`` / ``[N, 1, H, W]`` -> COCO RLEs with
    ``counts`` as ``str`` (JSON-ready). Probabilities are binarised at ``>= threshold``."""
    if isinstance(masks, torch.Tensor):
        if masks.dim() == 4:
            masks = masks[:, 0]
        if masks.dtype != torch.bool:
            masks = masks >= threshold
        arr = masks.cpu().numpy()
    else:
        arr = np.asarray(masks)
        if arr.ndim == 4:
            arr = arr[:, 0]
        if arr.dtype != bool:
            arr = arr >= threshold
    if arr.shape[0] == 0:
        return []
    rles = mask_utils.encode(np.asfortranarray(arr.transpose(1, 2, 0).astype(np.uint8)))
    for r in rles:
        r["counts"] = r["counts"].decode("ascii")
    return rles


def rle_to_mask(rle: dict) -> np.ndarray:
    """One COCO RLE (counts as str or bytes) -> uint8 ``[H, W]``."""
    r = dict(rle)
    if isinstance(r["counts"], str):
        r["counts"] = r["counts"].encode("ascii")
    return mask_utils.decode(r)


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of binary masks ``[N, H, W]`` x ``[M, H, W]`` -> ``[N, M]``."""
    a = a.flatten(1).to(torch.float32)
    b = b.flatten(1).to(torch.float32)
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    return inter / union.clamp(min=1e-6)
