"""CenterMask's two post-processing conventions, chosen once per model as a small object.

``model.postprocess`` names one of :data:`POSTPROCESS`:

- ``"maskkit"``: boxes clipped to the image and empty ones dropped *before* NMS and the mask
  branch; mask score = box score x clamp(predicted IoU, 1e-3, 1) (where the MaskIoU head predicts
  no overlap, early in training or for poor masks, the ranking falls back to the box score
  instead of tying at 0); pasted masks zeroed outside their box.
- ``"centermask2"``: the authors' released code (REFERENCE "Inference"): unclipped boxes through
  NMS and RoIAlign (``fcos_outputs.predict_proposals``), mask score = box score x IoU unclamped
  (``maskiou_head.mask_iou_inference``), then at the output size the boxes clipped, empty ones
  dropped and the masks pasted into the clipped boxes with detectron2's bilinear bleed past the
  box (``detector_postprocess`` + ``paste_masks_in_image``).

Plain Python on array-likes (torch tensors and NumPy arrays alike), so the eager model, the export
graph and the torch-free NumPy runner of exported files read the same rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["PostProcess", "POSTPROCESS", "postprocess_of"]


@dataclass(frozen=True)
class PostProcess:
    """One post-processing convention (see the module docstring)."""

    name: str
    clip_before_nms: bool  # clip + drop empty boxes in the decode (else after the mask branch)
    clamp_mask_iou: bool  # mask score = score x clamp(IoU, 1e-3, 1) (else score x IoU)

    @property
    def zero_outside(self) -> bool:
        """Pasted masks are 0 outside their box (else detectron2's bilinear bleed is kept)."""
        return self.clip_before_nms

    def mask_scores(self, scores: Any, iou: Any) -> Any:
        """Mask scores ``[R]`` from box scores and the predicted IoU of each mask ``[R]``."""
        return scores * (iou.clamp(min=1e-3, max=1.0) if self.clamp_mask_iou else iou)

    def final_boxes(self, boxes: Any, size: tuple[int, int]) -> tuple[Any, Any]:
        """Boxes ``[N, 4]`` already at the output size ``(h, w)`` -> (boxes, kept rows or None):
        the official rule clips them here and keeps the non-empty ones (boxes are modified in
        place); maskkit's clipped them in the decode and keeps all."""
        if self.clip_before_nms:
            return boxes, None
        h, w = size
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
        return boxes, (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])


POSTPROCESS: dict[str, PostProcess] = {
    "maskkit": PostProcess("maskkit", clip_before_nms=True, clamp_mask_iou=True),
    "centermask2": PostProcess("centermask2", clip_before_nms=False, clamp_mask_iou=False),
}


def postprocess_of(name: str) -> PostProcess:
    """The convention called ``name`` (``model.postprocess``; the config checks the choice)."""
    return POSTPROCESS[name]
