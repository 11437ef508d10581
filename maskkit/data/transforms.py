"""Train/test transforms on tv_tensors (image, boxes and masks move together).

Sizing rule shared by training and testing (as detectron2's ResizeShortestEdge): the shorter
side goes to ``min_size`` unless that makes the longer side exceed ``max_size``, in which
case the longer side goes to ``max_size``.
"""
from __future__ import annotations


def test_resize_size(height: int, width: int, min_size: int, max_size: int) -> tuple[int, int]:
    """Output ``(h, w)`` of the shortest-side resize; ``min_size <= 0`` keeps the size."""
    if min_size <= 0:
        return int(height), int(width)
    scale = min_size / min(height, width)
    if max_size > 0 and max(height, width) * scale > max_size:
        scale = max_size / max(height, width)
    return int(round(height * scale)), int(round(width * scale))
