"""The data contract (torchvision's) and the box/mask helpers every part shares.

Image:      ``float32 [3, H, W]`` in 0..1, RGB.
Target:     ``dict(boxes=float32 [N,4] xyxy absolute px, labels=int64 [N] in 1..K,
            masks=uint8/bool [N,H,W], image_id=int, iscrowd=int64 [N])``; crowd regions are
            ignore regions, never positives. Optional ``polygons``: a list of N entries, each
            None (instance known only as a dense mask, e.g. RLE) or a list of 1-D float arrays
            ``[x0, y0, x1, y1, ...]`` (the instance's polygon parts in the image's pixel
            coordinates). Where present, CenterMask's training mask targets rasterise them
            exactly inside each RoI, as the official code does (:func:`polygons_to_mask_in_box`).
Prediction: ``dict(boxes [N,4], labels [N], scores [N], masks [N,1,H,W] binary, mask_scores [N]
            where the model predicts them)``. maskkit's models give ``masks`` as a compact
            :class:`maskkit.masks.BoxMasks` (each mask M x M over its box, pasted on demand:
            ``to_rle()``, ``crops()``, ``to_dense()`` bool ``[N,1,H,W]``, ``probabilities()``
            float ``[N,1,H,W]``), not N full-image arrays; every consumer (results, drawing, the
            web page) also takes a dense tensor (binary, or probabilities binarised at the
            model's mask threshold). SharpMask proposals have ``labels`` all 1.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from pycocotools import mask as mask_utils

from maskkit.masks import BoxMasks, masks_to_rle, rle_runs

__all__ = [
    "empty_prediction",
    "select_instances",
    "paste_masks_in_image",
    "masks_to_rle",
    "rle_to_mask",
    "rle_problem",
    "mask_iou",
    "Polygons",
    "polygons_to_mask_in_box",
    "polygon_area",
    "polygon_area_in_box",
    "instance_polygons",
]


def empty_prediction(
    height: int, width: int, with_mask_scores: bool = True, device=None, mask_threshold: float = 0.5
) -> dict:
    """A well-formed prediction with no instances (for images with no detections)."""
    pred = {
        "boxes": torch.zeros((0, 4), dtype=torch.float32, device=device),
        "labels": torch.zeros((0,), dtype=torch.int64, device=device),
        "scores": torch.zeros((0,), dtype=torch.float32, device=device),
        "masks": BoxMasks.empty(height, width, mask_threshold, device=device),
    }
    if with_mask_scores:
        pred["mask_scores"] = torch.zeros((0,), dtype=torch.float32, device=device)
    return pred


def select_instances(pred: dict, index) -> dict:
    """The instances ``index`` (bool mask or indices) of a prediction: every per-instance entry
    (tensors with N rows, compact masks, lists of N) subset, the rest kept."""
    n = int(torch.as_tensor(pred["boxes"]).reshape(-1, 4).shape[0])
    index = torch.as_tensor(index)
    rows = index.nonzero().flatten() if index.dtype == torch.bool else index.reshape(-1)
    out = {}
    for k, v in pred.items():
        if isinstance(v, (torch.Tensor, BoxMasks)) and len(v.shape) and v.shape[0] == n:
            out[k] = v[rows.to(v.device)]
        elif isinstance(v, list) and len(v) == n:
            out[k] = [v[int(i)] for i in rows]
        else:
            out[k] = v
    return out


def paste_masks_in_image(
    masks: torch.Tensor, boxes: torch.Tensor, image_size: tuple[int, int], zero_outside: bool = True
) -> torch.Tensor:
    """Paste per-box mask probabilities ``[N, M, M]`` (or ``[N, 1, M, M]``) into the image ->
    float ``[N, 1, H, W]`` (N full-image arrays: prefer :class:`maskkit.masks.BoxMasks`).

    Each ``M x M`` mask covers its box ``[N, 4]`` (xyxy, image pixels) and is resampled
    bilinearly (``grid_sample``, align_corners=False: the M cells tile the box exactly) onto
    the image's pixel centres. Pixels outside a box get 0 (``zero_outside=False``: only those
    beyond the bilinear bleed of half a mask cell, as detectron2). Each mask is sampled over its
    box only (:mod:`maskkit.masks`)."""
    h, w = int(image_size[0]), int(image_size[1])
    if masks.shape[0] == 0:
        return masks.new_zeros((0, 1, h, w), dtype=torch.float32)
    return BoxMasks(masks, boxes, (h, w), 0.5, zero_outside).probabilities()


def rle_to_mask(rle: dict) -> np.ndarray:
    """One COCO RLE (counts as str or bytes) -> uint8 ``[H, W]``."""
    r = dict(rle)
    if isinstance(r["counts"], str):
        r["counts"] = r["counts"].encode("ascii")
    return mask_utils.decode(r)


def rle_problem(segm: dict, height: int | None = None, width: int | None = None) -> str | None:
    """What is wrong with an RLE ``{'size': [h, w], 'counts': str | list[int]}`` (None when it is
    valid): a size that is not two non-negative integers or differs from ``height``x``width``,
    counts that are not an RLE string / list of non-negative integers, or runs that do not add
    up to h x w. Checked before pycocotools sees the RLE: its C decoder loops forever on runs
    that do not sum to h x w and reads out of bounds on a truncated string)."""
    if not isinstance(segm, dict):
        return f"expected an RLE object, got {type(segm).__name__}"
    size, counts = segm.get("size"), segm.get("counts")
    if not (
        isinstance(size, (list, tuple))
        and len(size) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in size)
    ):
        return f"'size' must be [height, width] non-negative integers, got {size!r}"
    if height is not None and list(size) != [height, width]:
        return f"RLE size {size[0]}x{size[1]} differs from the image size {height}x{width}"
    if isinstance(counts, bytes):
        try:
            counts = counts.decode("ascii")
        except UnicodeDecodeError:
            return "'counts' is not an ASCII RLE string"
    if isinstance(counts, str):
        runs = rle_runs(counts)
        if isinstance(runs, str):
            return f"'counts' is not a valid compressed RLE ({runs})"
    elif isinstance(counts, list):
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in counts):
            return "uncompressed RLE 'counts' must be a list of integers"
        runs = counts
    else:
        return f"'counts' must be a string or a list of integers, got {type(counts).__name__}"
    if any(r < 0 for r in runs):
        return "RLE has a negative run length"
    total, pixels = sum(runs), size[0] * size[1]
    if total != pixels:
        return f"RLE runs sum to {total} pixels, not {size[0]}x{size[1]}={pixels}"
    return None


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of binary masks ``[N, H, W]`` x ``[M, H, W]`` -> ``[N, M]``."""
    a = a.flatten(1).to(torch.float32)
    b = b.flatten(1).to(torch.float32)
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    return inter / union.clamp(min=1e-6)


def instance_polygons(target: dict, n: int, image_size: tuple[int, int] | None = None) -> list | None:
    """The ``polygons`` entry of a target as a list of ``n`` entries (None or a list of
    float64 arrays), or None when the target has none.

    Accepts the documented list form, or the packed form :class:`maskkit.data.coco.CocoDataset`
    produces so that the polygons follow the image through ``transforms.v2``: ``polygons``
    ``[V, 2]`` (all vertices), ``polygon_parts`` int64 ``[P, 2]`` (annotation index, vertex
    count; parts in order) and ``ann_index`` int64 ``[N]`` (each instance's annotation index).
    With ``image_size`` (H, W), packed vertices carrying a ``canvas_size`` must match it (a
    transform that moved the image but not the polygons would otherwise go unnoticed).
    Raises ValueError on a malformed entry (the model turns it into a MaskkitError).
    """
    polys = target.get("polygons")
    if polys is None:
        return None
    if isinstance(polys, torch.Tensor):
        canvas = getattr(polys, "canvas_size", None)
        if image_size is not None and canvas is not None and tuple(canvas) != tuple(image_size):
            raise ValueError(f"polygons are for a {tuple(canvas)} image, the image is {tuple(image_size)}")
        parts, ann_index = target.get("polygon_parts"), target.get("ann_index")
        if parts is None or ann_index is None:
            raise ValueError("packed 'polygons' needs 'polygon_parts' and 'ann_index'")
        verts = polys.detach().to("cpu", torch.float64).reshape(-1, 2).numpy()
        parts = torch.as_tensor(parts).reshape(-1, 2).tolist()
        if sum(c for _, c in parts) != verts.shape[0]:
            raise ValueError(
                f"'polygon_parts' counts {sum(c for _, c in parts)} vertices, 'polygons' has {verts.shape[0]}"
            )
        by_ann: dict[int, list] = {}
        start = 0
        for a, c in parts:
            by_ann.setdefault(int(a), []).append(verts[start : start + c].reshape(-1).copy())
            start += c
        ann_index = torch.as_tensor(ann_index).reshape(-1).tolist()
        if len(ann_index) != n:
            raise ValueError(f"'ann_index' has {len(ann_index)} entries for {n} instances")
        return [by_ann.get(int(a)) for a in ann_index]
    if not isinstance(polys, (list, tuple)) or len(polys) != n:
        raise ValueError(f"'polygons' must be a list of {n} entries (None or a list of [x0, y0, x1, y1, ...])")
    out = []
    for p in polys:
        if p is None:
            out.append(None)
            continue
        parts = [
            np.asarray(q.detach().cpu() if isinstance(q, torch.Tensor) else q, dtype=np.float64).reshape(-1) for q in p
        ]
        if any(q.size < 6 or q.size % 2 for q in parts):
            raise ValueError("each polygon part needs an even number >= 6 of coordinates")
        out.append(parts)
    return out


Polygons = list  # one instance: a list of 1-D float64 arrays [x0, y0, x1, y1, ...] (its parts)


def _box_origin_size(box) -> tuple[float, float, float, float]:
    """(x0, y0, w, h) of a float32 box, the width and height rounded to float32 as the
    official code computes them (numpy float32 boxes), so rasterisation edges agree exactly."""
    b = np.asarray(box, dtype=np.float32).reshape(4)
    return float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])


def _ratio(size: int, extent: float) -> float:
    """``size / max(extent, 0.1)`` with the official float32 rounding (numpy 2 scalar rules)."""
    return float(np.float32(size / extent)) if extent > 0.1 else size / 0.1


def polygons_to_mask_in_box(polygons: Polygons, box, size: int) -> np.ndarray:
    """Rasterise one instance's polygons inside ``box`` (x0, y0, x1, y1) at ``size x size`` ->
    bool ``[size, size]``.

    As detectron2's ``rasterize_polygons_within_box`` (used by the official CenterMask for
    its mask targets): the polygons are shifted to the box origin, scaled exactly by
    ``size / max(w, 0.1)`` and ``size / max(h, 0.1)``, and rasterised by pycocotools
    (``frPyObjects`` + ``merge`` + ``decode``); no dense resize, so no half-pixel shift.
    """
    x0, y0, w, h = _box_origin_size(box)
    rw, rh = _ratio(size, w), _ratio(size, h)
    parts = []
    for p in polygons:
        q = np.array(p, dtype=np.float64).reshape(-1)
        q[0::2] = (q[0::2] - x0) * rw
        q[1::2] = (q[1::2] - y0) * rh
        parts.append(q)
    if not parts:
        return np.zeros((size, size), dtype=bool)
    rle = mask_utils.merge(mask_utils.frPyObjects(parts, size, size))
    with warnings.catch_warnings():  # pycocotools' own numpy-2 DeprecationWarning
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(rle).astype(bool)


def polygon_area(polygons: Polygons) -> float:
    """Sum of the shoelace areas of an instance's polygon parts (detectron2's
    ``PolygonMasks.area``; overlapping parts count twice, as there)."""
    total = 0.0
    for p in polygons:
        q = np.asarray(p, dtype=np.float64).reshape(-1)
        x, y = q[0::2], q[1::2]
        total += 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))
    return total


def polygon_area_in_box(polygons: Polygons, box) -> float:
    """Pixel area of the polygons inside ``box``: each part shifted to the box origin and
    rasterised by pycocotools on the ``int(h) x int(w)`` box grid, areas summed over parts.
    This is the numerator of the official MaskIoU "mask ratio" (centermask2
    ``mask_head.mask_rcnn_loss``); the box size is truncated to whole pixels there too."""
    x0, y0, wf, hf = _box_origin_size(box)
    h, w = int(hf), int(wf)
    parts = []
    for p in polygons:
        q = np.array(p, dtype=np.float64).reshape(-1)
        q[0::2] -= x0
        q[1::2] -= y0
        parts.append(q)
    if not parts or h <= 0 or w <= 0:
        return 0.0
    return float(mask_utils.area(mask_utils.frPyObjects(parts, h, w)).sum())
