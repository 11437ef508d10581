"""Image geometry shared by the torch code and the torch-free NumPy runner of exported models:
the test-time resize size, and where a box's mask can land in the image (the rows and columns a
paste must compute). Plain Python, so the runner, :mod:`maskkit.data.transforms`, the models and
:class:`maskkit.masks.BoxMasks` compute the same sizes and paste the same pixels.
"""

from __future__ import annotations

import math
from typing import Iterable

__all__ = ["test_resize_size", "paste_regions"]


def test_resize_size(height: int, width: int, min_size: int, max_size: int) -> tuple[int, int]:
    """Output ``(h, w)`` of the shortest-side resize; ``min_size <= 0`` keeps the size."""
    if min_size <= 0:
        return int(height), int(width)
    scale = min_size / min(height, width)
    if max_size > 0 and max(height, width) * scale > max_size:
        scale = max_size / max(height, width)
    # at least 1 px: a 1 x 4000 strip capped by max_size would round to 0 rows (interpolate fails)
    return max(1, int(round(height * scale))), max(1, int(round(width * scale)))


# Its name starts with "test_": tell pytest it is not a test when a test module imports it.
test_resize_size.__test__ = False  # type: ignore[attr-defined]


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
