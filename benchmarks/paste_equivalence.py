"""Which resampling the mask paste is, and what it costs (issue #11 "make the paste cheap",
issue #14 item 1).

Three ways to put a 28x28 mask into its box in an image:

- ``grid_sample``: bilinear sampling (``align_corners=False``, zero padding) at every pixel
  centre, the mask's cells tiling the box exactly; detectron2's ``paste_masks_in_image``
  (``layers/mask_ops.py: _do_paste_mask``), which the official centermask2 post-processing
  calls, and maskkit's paste before this change (one grid over the box).
- ``separable``: the same sampling written as two small matrix products over the box
  (``Wy [h, 28] @ mask @ Wx^T [28, w]``): maskkit's paste now (:mod:`maskkit.masks`).
- ``interpolate``: ``F.interpolate(bilinear, align_corners=False)`` of the mask to the box
  rounded to whole pixels, placed at the rounded corner.

Prints the largest difference of each from ``grid_sample`` (probabilities, and binarised
pixels at 0.5) over random fractional boxes, and the time per mask (1 thread) for three box sizes.

    PYTHONPATH=$PWD python benchmarks/paste_equivalence.py
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from maskkit.masks import BoxMasks


def grid_sample_paste(masks: torch.Tensor, boxes: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Full-image bilinear sampling at pixel centres (the formula of detectron2's paste)."""
    n = masks.shape[0]
    x0, y0, x1, y1 = boxes.unbind(1)
    gx = ((torch.arange(w) + 0.5)[None] - x0[:, None]) / (x1 - x0)[:, None] * 2 - 1
    gy = ((torch.arange(h) + 0.5)[None] - y0[:, None]) / (y1 - y0)[:, None] * 2 - 1
    grid = torch.stack([gx[:, None, :].expand(n, h, w), gy[:, :, None].expand(n, h, w)], dim=3)
    return F.grid_sample(masks[:, None], grid, align_corners=False)[:, 0]


def interpolate_paste(masks: torch.Tensor, boxes: torch.Tensor, h: int, w: int) -> torch.Tensor:
    out = torch.zeros((masks.shape[0], h, w))
    for i, (x0, y0, x1, y1) in enumerate(boxes.round().int().tolist()):
        if x1 <= x0 or y1 <= y0:
            continue
        r = F.interpolate(masks[i][None, None], size=(y1 - y0, x1 - x0), mode="bilinear", align_corners=False)[0, 0]
        ys, xs = slice(max(y0, 0), min(y1, h)), slice(max(x0, 0), min(x1, w))
        if ys.stop <= ys.start or xs.stop <= xs.start:
            continue
        out[i, ys, xs] = r[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]
    return out


def grid_over_box(mask: torch.Tensor, box: list[float]) -> torch.Tensor:
    """maskkit's previous paste: one grid_sample over the box's pixels."""
    x0, y0, x1, y1 = box
    xs = torch.arange(int(x0), int(x1) + 1) + 0.5
    ys = torch.arange(int(y0), int(y1) + 1) + 0.5
    gx, gy = (xs - x0) / (x1 - x0) * 2 - 1, (ys - y0) / (y1 - y0) * 2 - 1
    grid = torch.stack([gx[None, :].expand(len(ys), -1), gy[:, None].expand(-1, len(xs))], dim=2)[None]
    return F.grid_sample(mask[None, None], grid, align_corners=False)[0, 0]


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    h, w, n = 300, 400, 200
    xy = torch.rand(n, 2) * torch.tensor([w, h]) * 1.1 - 10
    boxes = torch.cat([xy, xy + torch.rand(n, 2) * 150 + 2], 1)
    masks = torch.rand(n, 28, 28)
    ref = grid_sample_paste(masks, boxes, h, w)
    sep = BoxMasks(masks, boxes, (h, w), 0.5, zero_outside=False).probabilities()[:, 0]
    itp = interpolate_paste(masks, boxes, h, w)
    for name, got in (("separable", sep), ("interpolate", itp)):
        flips = ((got >= 0.5) != (ref >= 0.5)).sum().item()
        fg = (ref >= 0.5).sum().item()
        print(
            f"{name:12s} max |p - grid_sample| = {(got - ref).abs().max().item():.2e}; "
            f"binarised pixels differing: {flips} of {fg} foreground ({100 * flips / fg:.3f} %)"
        )
    for side, n in ((50, 100), (400, 100), (2000, 10), (None, 100)):
        if side is None:  # sizes 20-420 px, each its own: no two resampled together
            xy = torch.rand(n, 2) * torch.tensor([3500, 2500])
            boxes = torch.cat([xy, xy + torch.rand(n, 2) * 400 + 20], 1)
        else:  # one size: resampled together (SharpMask's windows of one scale)
            xy = torch.rand(n, 2) * torch.tensor([4000 - side, 3000 - side])
            boxes = torch.cat([xy, xy + torch.tensor([side, side * 0.75])], 1)
        masks = torch.rand(n, 28, 28)
        bm = BoxMasks(masks, boxes, (3000, 4000), 0.5)
        for name, fn in (
            ("grid over box", lambda: [grid_over_box(m, b) for m, b in zip(masks, boxes.tolist())]),
            ("separable", lambda: list(bm.prob_crops())),
        ):
            fn()
            t0 = time.perf_counter()
            for _ in range(3):
                fn()
            ms = (time.perf_counter() - t0) / 3 / n * 1000
            what = f"{side}x{int(side * 0.75)} px" if side else "20-420 px (mixed)"
            print(f"{n} boxes of {what:18s} {name:14s} {ms:7.2f} ms per mask")


if __name__ == "__main__":
    main()
