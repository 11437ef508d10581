"""How far a model's predictions at one precision agree with its float32 predictions on the
same images: the share of the reference detections found again (same label, box IoU at least
``iou``; one-to-one, best overlaps first) and the mask IoU of the pairs found. It needs no ground
truth, so it measures a deployment (bf16, INT8, another runtime) on any photos."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.ops import box_iou

from maskkit.structures import mask_iou

__all__ = ["Agreement", "match_detections", "agreement"]


def match_detections(boxes: torch.Tensor, labels: torch.Tensor, ref_boxes: torch.Tensor, ref_labels: torch.Tensor):
    """Greedy one-to-one matching, best box IoU first, among detections of the same label ->
    for each detection the index of the reference detection it matches and their IoU
    (``-1``, 0.0 where none is left)."""
    iou = box_iou(boxes.float(), ref_boxes.float()) if len(boxes) and len(ref_boxes) else torch.zeros(len(boxes), 0)
    iou[labels[:, None] != ref_labels[None, :]] = -1.0
    match, value = [-1] * len(boxes), [0.0] * len(boxes)
    for _ in range(min(len(boxes), len(ref_boxes))):
        v, flat = iou.flatten().max(0)
        if v < 0:
            break
        i, j = divmod(int(flat), iou.shape[1])
        match[i], value[i] = j, float(v)
        iou[i, :] = -1.0
        iou[:, j] = -1.0
    return match, value


@dataclass
class Agreement:
    """Accumulated over images: reference detections, those found again, and the found pairs'
    mask IoUs."""

    reference: int = 0
    found: int = 0
    mask_ious: list[float] = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.mask_ious = list(self.mask_ious or [])

    @property
    def found_fraction(self) -> float:
        return self.found / self.reference if self.reference else float("nan")

    @property
    def mean_mask_iou(self) -> float:
        return sum(self.mask_ious) / len(self.mask_ious) if self.mask_ious else float("nan")

    def add(self, reference: dict, pred: dict, iou: float = 0.9) -> None:
        """One image's reference and candidate predictions (the data contract)."""
        match, value = match_detections(pred["boxes"], pred["labels"], reference["boxes"], reference["labels"])
        self.reference += len(reference["boxes"])
        pairs = [(i, j) for i, (j, v) in enumerate(zip(match, value)) if j >= 0 and v >= iou]
        self.found += len(pairs)
        if pairs:
            a = pred["masks"].to_dense()[[i for i, _ in pairs]]
            b = reference["masks"].to_dense()[[j for _, j in pairs]]
            self.mask_ious += [float(mask_iou(x, y)[0, 0]) for x, y in zip(a, b)]  # x, y: [1, H, W]


def agreement(references: list[dict], preds: list[dict], iou: float = 0.9) -> Agreement:
    """:class:`Agreement` of ``preds`` with ``references``, image by image."""
    out = Agreement()
    for r, p in zip(references, preds):
        out.add(r, p, iou)
    return out
