"""Mask scoring (MaskIoU head of Mask Scoring R-CNN, used by CenterMask Sec. 2.6 / Table 1).

The head regresses the IoU between each predicted mask and its ground truth; at inference
``mask_score = box score x predicted IoU`` ranks the segmentation results. Targets and loss
follow the official code (centermask2 ``mask_head.mask_rcnn_loss`` / ``maskiou_head.py``):
the IoU of the binarised predicted mask with the GT's *whole* area, and a 0.5 x squared
error averaged over the RoIs with a positive target. The "mask ratio" (share of the GT inside
the RoI) comes from the polygons as there; for RLE ground truth (where the official code
crashes) it comes from the dense mask.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maskkit.masks import is_compact, mask_crops
from maskkit.structures import polygon_area, polygon_area_in_box

__all__ = ["MaskIoUHead", "mask_ratios", "maskiou_targets", "maskiou_loss"]


class MaskIoUHead(nn.Module):
    """RoI features ``[R, C, 14, 14]`` + predicted mask probabilities ``[R, 1, 28, 28]``
    -> predicted mask IoU per class ``[R, K]``.

    The mask is max-pooled to 14x14 and concatenated (C + 1 channels); ``num_convs`` x
    (3x3 conv + ReLU), the last with stride 2 (-> 7x7); FC ``fc_dim``, FC ``fc_dim``; linear to K.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        num_convs: int = 4,
        channels: int = 256,
        fc_dim: int = 1024,
        resolution: int = 14,
        init: str = "official",
    ):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(num_convs):
            stride = 2 if i == num_convs - 1 else 1
            layers += [
                nn.Conv2d(in_channels + 1 if i == 0 else channels, channels, 3, stride=stride, padding=1),
                nn.ReLU(inplace=True),
            ]
        self.convs = nn.Sequential(*layers)
        out_res = (resolution + 1) // 2
        self.fc1 = nn.Linear(channels * out_res * out_res, fc_dim)
        self.fc2 = nn.Linear(fc_dim, fc_dim)
        self.predictor = nn.Linear(fc_dim, num_classes)
        for m in self.convs:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.constant_(m.bias, 0.0)
        if init not in ("official", "maskkit"):
            raise ValueError(f"init must be 'official' or 'maskkit', got {init!r}")
        for m in (self.fc1, self.fc2):
            if init == "official":  # centermask2 maskiou_head.py: He normal, fan_out, ReLU gain
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            else:  # maskkit: Caffe2-style Xavier fill (He uniform, a=1)
                nn.init.kaiming_uniform_(m.weight, a=1)
            nn.init.constant_(m.bias, 0.0)
        nn.init.normal_(self.predictor.weight, std=0.01)
        nn.init.constant_(self.predictor.bias, 0.0)

    def forward(self, roi_feats: Tensor, mask_probs: Tensor) -> Tensor:
        x = torch.cat([roi_feats, F.max_pool2d(mask_probs, kernel_size=2, stride=2)], dim=1)
        x = self.convs(x).flatten(1)
        return self.predictor(F.relu(self.fc2(F.relu(self.fc1(x)))))


@torch.no_grad()
def mask_ratios(gt_masks, boxes: Tensor, gt_idx: Tensor, gt_polygons: list | None = None) -> Tensor:
    """Share of each matched GT inside its RoI -> ``[P]`` float64 in [0, 1].

    gt_masks ``[G, H, W]`` (dense, or compact: :mod:`maskkit.masks`), boxes ``[P, 4]``, gt_idx
    ``[P]``, gt_polygons as in :func:`maskkit.models.centermask.mask_head.mask_targets`. Polygon
    GT (official): polygon area rasterised on the RoI's whole-pixel grid / shoelace area of the
    polygons. Mask GT (RLE): mask pixels whose centre lies in the RoI / all mask pixels, counted
    on each matched GT's crop (:func:`maskkit.masks.mask_crops`).
    """
    ratios = torch.zeros(boxes.shape[0], dtype=torch.float64)
    box_np = boxes.detach().to("cpu", torch.float32).numpy()
    h, w = gt_masks.image_size if is_compact(gt_masks) else gt_masks.shape[-2:]
    crops: dict[int, tuple[int, int, Tensor]] = {}
    for r in range(boxes.shape[0]):
        g = int(gt_idx[r])
        poly = gt_polygons[g] if gt_polygons is not None else None
        if poly is not None:
            total = polygon_area(poly)
            total = float(np.float32(total))  # detectron2 PolygonMasks.area() is a float32 tensor
            ratios[r] = polygon_area_in_box(poly, box_np[r]) / total if total > 0 else 0.0
            continue
        if g not in crops:  # (r0, c0, bool crop) of this GT's mask, once
            crops[g] = next(mask_crops(gt_masks[[g]] if is_compact(gt_masks) else gt_masks[g : g + 1].cpu()))
        r0, c0, crop = crops[g]
        x0, y0, x1, y1 = (float(v) for v in box_np[r])
        # pixel (i, j) has its centre at (j + 0.5, i + 0.5): centre in [x0, x1) x [y0, y1)
        cols = (max(math.ceil(x0 - 0.5), 0), min(max(math.ceil(x1 - 0.5), 0), w))
        rows = (max(math.ceil(y0 - 0.5), 0), min(max(math.ceil(y1 - 0.5), 0), h))
        inside = crop[max(rows[0] - r0, 0) : max(rows[1] - r0, 0), max(cols[0] - c0, 0) : max(cols[1] - c0, 0)]
        area = float(crop.sum())
        ratios[r] = float(inside.sum()) / area if area > 0 else 0.0
    ratios = ratios.clamp(0.0, 1.0)
    return ratios.to(boxes.device, torch.float32 if boxes.device.type == "mps" else torch.float64)


@torch.no_grad()
def maskiou_targets(mask_logits: Tensor, targets: Tensor, ratios: Tensor) -> Tensor:
    """IoU of the binarised predicted mask with the *whole* GT mask (official formula).

    mask_logits ``[P, M, M]`` (the GT class's mask), targets ``[P, M, M]`` (GT cropped to the
    RoI), ratios ``[P]`` (:func:`mask_ratios`) -> ``[P]`` float64 (float32 on MPS, which has
    no float64), as the official code. The GT's full area in RoI cells is
    ``targets.sum / max(ratio, 1e-10)``; the union is at least 1 cell.
    """
    dt = torch.float32 if targets.device.type == "mps" else torch.float64
    pred = (mask_logits > 0).to(torch.float32)  # probability > 0.5
    full = targets.sum(dim=(1, 2)).to(dt) / ratios.to(dt).clamp(min=1e-10)
    inter = (pred * targets).sum(dim=(1, 2)).to(dt).clamp(min=0)
    union = (pred.sum(dim=(1, 2)).to(dt) + full - inter).clamp(min=1.0)
    return inter / union


def maskiou_loss(pred: Tensor, labels: Tensor, targets: Tensor) -> Tensor:
    """Official MaskIoU loss (centermask2 ``maskiou_head.mask_iou_loss``): the GT class's
    predicted IoU (pred ``[P, K]``, labels ``[P]`` 1..K) against the IoU target ``[P]``,
    ``sum(0.5 * (pred - target)^2) / #positive`` over the RoIs whose target is > 0 (0 when
    none is). The caller multiplies by the loss weight."""
    if pred.shape[0] == 0:
        return pred.sum() * 0
    sel = pred[:, 0] if pred.shape[1] == 1 else pred[torch.arange(pred.shape[0], device=pred.device), labels - 1]
    pos = targets > 0
    if not pos.any():
        return sel.sum() * 0
    d = sel[pos].to(targets.dtype) - targets[pos]
    return (0.5 * d * d).sum().div(pos.sum()).to(pred.dtype)
