"""Where a box's mask can land in the image: the rows and columns a paste must compute.

Torch-free (plain Python), so the NumPy runner of exported models
(:mod:`maskkit.engine.onnx_runtime`) and :class:`maskkit.masks.BoxMasks` paste the same pixels.
"""

from __future__ import annotations

import math
from typing import Iterable

__all__ = ["paste_regions"]


def paste_regions(
    boxes: Iterable[Iterable[float]], m: int, height: int, width: int, zero_outside: bool
) -> list[tuple[int, int, int, int]]:
    """Per xyxy box: ``(r0, c0, h, w)``, image rows/columns that hold every pixel its ``m x m``
    mask can touch: the box plus, when the bilinear bleed is kept (``zero_outside=False``), one
    mask cell, plus margin (the sampling decides which pixels are inside, not this rounding).
    The size depends only on the box's size; the region is shifted (not cut) to stay inside
    the image."""
    out = []
    for x0, y0, x1, y1 in boxes:
        bw = max(x1 - x0, 1e-6) if math.isfinite(x1 - x0) else float(width)
        bh = max(y1 - y0, 1e-6) if math.isfinite(y1 - y0) else float(height)
        bx, by = (0.0, 0.0) if zero_outside else (bw / m, bh / m)
        rw, rh = min(math.ceil(bw + 2 * bx) + 4, width), min(math.ceil(bh + 2 * by) + 4, height)
        c0 = min(max(math.floor(x0 - bx) - 1, 0), width - rw) if math.isfinite(x0) else 0
        r0 = min(max(math.floor(y0 - by) - 1, 0), height - rh) if math.isfinite(y0) else 0
        out.append((r0, c0, rh, rw))
    return out
