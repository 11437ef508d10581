"""Train/test transforms on tv_tensors (image, boxes and masks move together).

Sizing rule shared by training and testing (as detectron2's ResizeShortestEdge): the shorter
side goes to ``min_size`` unless that makes the longer side exceed ``max_size``, in which
case the longer side goes to ``max_size``.

The transforms work on ``(tv_tensors.Image, target)`` pairs as produced by
:class:`maskkit.data.coco.CocoDataset`; torchvision's ``transforms.v2`` dispatches on the
tv_tensor types, so boxes (``BoundingBoxes``), masks (``Mask``, or the dataset's
:class:`~maskkit.data.rle_masks.RLEMasks` that record the change and make pixels per instance
when needed; resized with centre-aligned nearest neighbour, ``nearest-exact``: as
PIL/detectron2, not torch's legacy ``nearest`` whose pixel grid is shifted up-left by up to one
source pixel) and polygon vertices
(:class:`PolygonVertices`, scaled and flipped exactly) follow every geometric change of the image.
``labels``/``iscrowd``/``area`` are
plain tensors that only :class:`~torchvision.transforms.v2.SanitizeBoundingBoxes` touches.
``area`` stays the annotation's area in the original image's pixels (COCO's definition, used
for COCO's small/medium/large ranges); it is not rescaled.

Training (CenterMask, REFERENCE "Training and test defaults"): shorter side drawn from
``min_size_train`` (or uniformly from its range), longer side capped, horizontal flip, then
boxes are clamped to the image and instances whose box is under 1 px wide or high are dropped
together with their label, mask, iscrowd and area. Crowd instances are kept (iscrowd=1).

Testing: one deterministic resize. Models that resize internally use :func:`resize_for_test`
and map their boxes back with :func:`boxes_to_original` so predictions come back in the
coordinates of the original image.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torchvision import ops, tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from maskkit.data.rle_masks import RLEMasks  # also registers the RLE masks' resize / flip kernels
from maskkit.geometry import test_resize_size

__all__ = [
    "PolygonVertices",
    "ResizeShortestSide",
    "build_train_transforms",
    "build_test_transforms",
    "resize_for_test",
    "boxes_to_original",
    "instance_fields",
]


class PolygonVertices(tv_tensors.KeyPoints):
    """All polygon vertices of a target, ``float64 [V, 2]`` (x, y) in continuous pixel
    coordinates (``canvas_size`` = (H, W)); the grouping into parts and instances lives in the
    target's ``polygon_parts`` / ``ann_index`` (see :func:`maskkit.structures.instance_polygons`).

    A KeyPoints subclass, so every torchvision geometric kernel applies, except the two
    overridden below: resize scales exactly by new/old (KeyPoints' does too, but keep it
    explicit) and the horizontal flip maps ``x -> W - x`` (KeyPoints use ``W - 1 - x``, the
    pixel-index convention; polygons, like boxes and detectron2's ``HFlipTransform``, use the
    continuous one)."""


@TF.register_kernel(functional=TF.resize, tv_tensor_cls=PolygonVertices)
def _resize_polygons(inpt: PolygonVertices, size, interpolation=None, max_size=None, antialias=True) -> PolygonVertices:
    old_h, old_w = inpt.canvas_size
    # The output size as torchvision computes it for the image (ResizeShortestSide passes [h, w]).
    new_h, new_w = TF.resize_keypoints(inpt.as_subclass(torch.Tensor), size, (old_h, old_w), max_size)[1]
    scale = inpt.new_tensor([new_w / old_w, new_h / old_h]).as_subclass(torch.Tensor)
    return PolygonVertices(inpt.as_subclass(torch.Tensor) * scale, canvas_size=(new_h, new_w))


@TF.register_kernel(functional=TF.horizontal_flip, tv_tensor_cls=PolygonVertices)
def _hflip_polygons(inpt: PolygonVertices) -> PolygonVertices:
    out = inpt.as_subclass(torch.Tensor).clone()
    out[:, 0] = inpt.canvas_size[1] - out[:, 0]
    return PolygonVertices(out, canvas_size=inpt.canvas_size)


# Per-instance target keys that must be filtered together with the boxes (masks are
# tv_tensors.Mask and are filtered by SanitizeBoundingBoxes itself).
_INSTANCE_KEYS = ("labels", "iscrowd", "area", "ann_index")


class ResizeShortestSide(v2.Transform):
    """Resize so the shorter side is a sampled ``min_size`` and the longer side <= ``max_size``.

    ``sampling="choice"`` picks one of ``min_sizes``; ``"range"`` draws an integer uniformly
    from ``[min(min_sizes), max(min_sizes)]`` (scale jitter). One size is drawn per call and
    applied to the image, boxes and masks alike (torch RNG, so ``torch.manual_seed`` makes it
    reproducible). Output size follows :func:`maskkit.geometry.test_resize_size`.
    """

    def __init__(self, min_sizes: int | Sequence[int], max_size: int, sampling: str = "choice") -> None:
        super().__init__()
        sizes = (int(min_sizes),) if isinstance(min_sizes, int) else tuple(int(s) for s in min_sizes)
        if not sizes or any(s <= 0 for s in sizes):
            raise ValueError(f"min_sizes must be positive sizes, got {min_sizes!r}")
        if sampling not in ("choice", "range"):
            raise ValueError(f"sampling must be 'choice' or 'range', got {sampling!r}")
        self.min_sizes = sizes
        self.max_size = int(max_size)
        self.sampling = sampling

    def sample_min_size(self) -> int:
        if self.sampling == "range":
            lo, hi = min(self.min_sizes), max(self.min_sizes)
            return int(torch.randint(lo, hi + 1, ()).item())
        return self.min_sizes[int(torch.randint(len(self.min_sizes), ()).item())]

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        return {"size": list(test_resize_size(height, width, self.sample_min_size(), self.max_size))}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        # F.resize dispatches: bilinear + antialias for images, boxes and polygons scaled; masks
        # with centre-aligned nearest (nearest-exact), not the legacy shifted "nearest".
        if isinstance(inpt, tv_tensors.Mask):
            return TF.resize(inpt, size=params["size"], interpolation=v2.InterpolationMode.NEAREST_EXACT)
        return self._call_kernel(TF.resize, inpt, size=params["size"], antialias=True)

    def extra_repr(self) -> str:
        return f"min_sizes={self.min_sizes}, max_size={self.max_size}, sampling={self.sampling!r}"


def instance_fields(sample: Any) -> tuple[torch.Tensor, ...]:
    """``labels_getter`` for SanitizeBoundingBoxes: every per-instance tensor of the target
    (labels, iscrowd, area, RLE masks) so they are dropped together with their boxes (dense
    ``tv_tensors.Mask`` masks are dropped by SanitizeBoundingBoxes itself)."""
    target = sample[1] if isinstance(sample, (tuple, list)) else sample
    fields = tuple(target[k] for k in _INSTANCE_KEYS if k in target)
    return fields + ((target["masks"],) if isinstance(target.get("masks"), RLEMasks) else ())


def _sanitize() -> list[v2.Transform]:
    # Clamp first: SanitizeBoundingBoxes would otherwise drop boxes poking out of the image.
    return [v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes(min_size=1.0, labels_getter=instance_fields)]


def build_train_transforms(data_cfg: Any) -> v2.Compose:
    """Scale jitter (``min_size_train``/``max_size_train``/``min_size_train_sampling``),
    horizontal flip with ``hflip_prob``, then clamp + sanitize boxes/masks (< 1 px dropped)."""
    steps: list[v2.Transform] = [
        ResizeShortestSide(data_cfg.min_size_train, data_cfg.max_size_train, data_cfg.min_size_train_sampling)
    ]
    if data_cfg.hflip_prob > 0:
        steps.append(v2.RandomHorizontalFlip(p=data_cfg.hflip_prob))
    return v2.Compose(steps + _sanitize())


def build_test_transforms(min_size: int, max_size: int) -> v2.Compose:
    """Deterministic resize to ``min_size_test``/``max_size_test`` (targets follow; nothing is
    dropped, so evaluation sees every ground-truth instance)."""
    return v2.Compose([ResizeShortestSide((min_size,), max_size)])


def resize_for_test(image: torch.Tensor, min_size: int, max_size: int) -> tuple[torch.Tensor, tuple[float, float]]:
    """Resize ``image [..., 3, H, W]`` by the shortest-side rule; returns the resized image and
    the ``(sy, sx)`` scale (new/old) that :func:`boxes_to_original` inverts."""
    height, width = image.shape[-2:]
    new_h, new_w = test_resize_size(height, width, min_size, max_size)
    if (new_h, new_w) == (height, width):
        return image, (1.0, 1.0)
    out = TF.resize(image, [new_h, new_w], antialias=True)
    return out, (new_h / height, new_w / width)


def boxes_to_original(boxes: torch.Tensor, scale: tuple[float, float], orig_size: tuple[int, int]) -> torch.Tensor:
    """Map xyxy ``boxes [N, 4]`` predicted on the resized image back to the original image
    (divide by the ``(sy, sx)`` of :func:`resize_for_test`) and clip to ``orig_size (H, W)``."""
    sy, sx = scale
    factor = boxes.new_tensor([sx, sy, sx, sy])
    return ops.clip_boxes_to_image(boxes / factor, (int(orig_size[0]), int(orig_size[1])))
