"""RoIAlign (``aligned=True``, adaptive sampling, as detectron2) with a faster CPU backward.

The forward is torchvision's ``roi_align``. Its CPU backward is a scalar, single-threaded loop
over every (RoI, channel, bin, sample), a large share of a small model's training step
(``benchmarks/demo_training_cost.md``). RoIAlign is separable: a sample's bilinear
weight is a product of a row weight and a column weight, its validity (inside ``[-1, H] x [-1,
W]``) a product of a row and a column condition, and a bin's ``1 / count`` = ``1 / grid_h x 1 /
grid_w``. So the output of RoI ``r`` is ``Wy_r [S, H] @ F_b [C, H, W] @ Wx_r^T [W, S]``, and
the gradient of ``F_b`` is the sum over its RoIs of ``Wy_r^T @ G_r @ Wx_r``, computed here over
the rows and columns each RoI touches (two small matrix products per RoI, batched). No library
has this for the CPU. The row/column weights follow torchvision's ``roi_align_kernel.cpp``
(``bilinear_interpolate_gradient``) in float32, so the gradient equals torchvision's up to the
order of the sums (``tests/models/test_roi_align.py``).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import roi_align

__all__ = ["roi_align_adaptive"]


def _axis_weights(start: Tensor, length: Tensor, size: int, bins: int) -> Tensor:
    """One axis of RoIAlign's sampling for ``R`` RoIs starting at ``start [R]`` (feature cells,
    after the half-pixel offset) of extent ``length [R]`` over a ``size``-cell axis, ``bins``
    bins of ``ceil(length / bins)`` samples each -> ``W [R, bins, size]``: per bin, the sum of
    its samples' bilinear weights on each cell, each sample counted only if it lies in
    ``[-1, size]``, divided by the samples per bin)."""
    r = start.shape[0]
    grid = torch.ceil(length / bins).to(torch.int64)  # samples per bin (adaptive sampling ratio)
    g_max = max(int(grid.max()) if r else 0, 1)
    bin_size = length / bins
    ph = torch.arange(bins, dtype=torch.float32, device=start.device)
    it = torch.arange(g_max, dtype=torch.float32, device=start.device)
    # y = start + ph * bin + (iy + .5) * bin / grid, in float32 and torchvision's order of operations
    pos = (start[:, None, None] + ph[None, :, None] * bin_size[:, None, None]) + (it[None, None, :] + 0.5) * bin_size[
        :, None, None
    ] / grid.clamp(min=1)[:, None, None].to(torch.float32)  # [R, bins, g]
    used = it[None, None, :] < grid[:, None, None]  # samples beyond this RoI's grid do not exist
    valid = used & (pos >= -1.0) & (pos <= size)
    y = pos.nan_to_num(-2.0).clamp(0.0, float(size))  # (invalid samples weigh 0; this keeps their index in range)
    low = y.to(torch.int64)  # truncation, as (int)y for y >= 0
    at_end = low >= size - 1
    low = torch.where(at_end, torch.full_like(low, size - 1), low)
    high = torch.where(at_end, low, low + 1)
    y = torch.where(at_end, low.to(torch.float32), y)
    frac = y - low.to(torch.float32)  # ly
    w_low, w_high = (1.0 - frac) * valid, frac * valid
    out = torch.zeros(r, bins, size + 1, dtype=torch.float32, device=start.device)
    out.scatter_add_(2, low, w_low)
    out.scatter_add_(2, high, w_high)
    return out[..., :size] / grid.clamp(min=1)[:, None, None].to(torch.float32)


class _RoIAlignSeparableBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, feat: Tensor, rois: Tensor, output_size: int, spatial_scale: float) -> Tensor:
        ctx.save_for_backward(rois)
        ctx.shape, ctx.output_size, ctx.spatial_scale = feat.shape, output_size, spatial_scale
        return roi_align(feat, rois, output_size, spatial_scale=spatial_scale, sampling_ratio=0, aligned=True)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        (rois,) = ctx.saved_tensors
        b, c, h, w = ctx.shape
        s = ctx.output_size
        boxes = rois[:, 1:].to(torch.float32) * ctx.spatial_scale - 0.5  # aligned: half-pixel offset
        wy = _axis_weights(boxes[:, 1], boxes[:, 3] - boxes[:, 1], h, s)  # [R, S, H]
        wx = _axis_weights(boxes[:, 0], boxes[:, 2] - boxes[:, 0], w, s)  # [R, S, W]
        grad = grad_out.new_zeros((b, c, h, w), dtype=torch.float32)
        g = grad_out.to(torch.float32)
        # only the rows / columns a RoI's weights touch (a few cells for most RoIs)
        rows, cols = wy.sum(1) > 0, wx.sum(1) > 0  # weights are >= 0  # [R, H], [R, W]
        touching = (rows.any(1) & cols.any(1)).nonzero()[:, 0].tolist()  # empty RoIs take no samples
        batch = rois[:, 0].to(torch.int64).tolist()
        for i in touching:
            bi = batch[i]
            ry, rx = rows[i].nonzero()[:, 0], cols[i].nonzero()[:, 0]
            y0, y1, x0, x1 = int(ry[0]), int(ry[-1]) + 1, int(rx[0]), int(rx[-1]) + 1
            part = wy[i, :, y0:y1].t() @ g[i] @ wx[i, :, x0:x1]  # [C, h_i, w_i]
            grad[bi, :, y0:y1, x0:x1] += part
        return grad.to(grad_out.dtype), None, None, None


def roi_align_adaptive(feat: Tensor, rois: Tensor, output_size: int, spatial_scale: float) -> Tensor:
    """``torchvision.ops.roi_align(feat, rois, output_size, spatial_scale, sampling_ratio=0,
    aligned=True)``; on the CPU with a gradient to compute, the separable backward above."""
    if feat.device.type != "cpu" or not (torch.is_grad_enabled() and feat.requires_grad) or feat.dtype != torch.float32:
        return roi_align(feat, rois, output_size, spatial_scale=spatial_scale, sampling_ratio=0, aligned=True)
    return _RoIAlignSeparableBackward.apply(feat, rois, output_size, spatial_scale)
