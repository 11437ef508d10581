"""The NumPy twins of maskkit's torch pre- and post-processing, for the torch-free runner of
exported files (:mod:`maskkit.export.runtime`): each equals its torch original, which it names,
on random inputs (``tests/export/test_numpy_ops.py``). Written out because no NumPy-only library
reproduces torch's numbers (PIL's float resize differs by up to ~5e-5).

- :func:`resize_antialias` / :func:`resize_align_corners`: torchvision's antialiased bilinear
  resize (CenterMask's test resize, SharpMask's pyramid) / ``F.interpolate(align_corners=True)``
  (SharpMask's ``pyramid="official"``)
- :func:`centermask_input`: ``CenterMask._test_resize`` + ``CenterMask.preprocess``
- :func:`paste_masks`: ``BoxMasks.probabilities`` (each mask over the pixels its box can touch)
- :func:`sharpmask_canvases`: ``SharpMask.canvas`` per scale
- :func:`window_boxes` / :func:`canonical_boxes`: ``SharpMask.window_boxes`` / the fallback boxes
  of ``SharpMask.proposals_to_prediction``
- :func:`paste_window_masks`: ``maskkit.models.sharpmask.model.paste_window_masks``
"""

from __future__ import annotations

import numpy as np

from maskkit.geometry import paste_regions, test_resize_size

__all__ = [
    "resize_antialias",
    "resize_align_corners",
    "centermask_input",
    "paste_masks",
    "sharpmask_canvases",
    "window_boxes",
    "canonical_boxes",
    "paste_window_masks",
]


def _aa_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Taps ``idx [n_out, T]`` and weights ``[n_out, T]`` of PyTorch's antialiased bilinear
    resize along one axis (ATen ``UpSampleKernel.cpp``: ``_compute_indices_min_size_weights_aa``
    with the triangle filter, ``align_corners=False``). Written out because no NumPy-only
    library reproduces torch's numbers (PIL's float mode differs by up to ~5e-5)."""
    f32 = np.float32  # ATen computes scale, centres and weights in float32 for float images
    scale = f32(n_in) / f32(n_out)
    support = scale if scale >= 1.0 else f32(1.0)  # interp_size 2 (bilinear) * 0.5, widened when downsampling
    invscale = f32(1.0) / scale if scale >= 1.0 else f32(1.0)
    centers = scale * (np.arange(n_out, dtype=f32) + f32(0.5))
    xmin = np.maximum((centers - support + f32(0.5)).astype(np.int64), 0)
    xmax = np.minimum((centers + support + f32(0.5)).astype(np.int64), n_in)
    taps = int((xmax - xmin).max())
    j = np.arange(taps)[None, :]
    idx = xmin[:, None] + j
    w = np.maximum(f32(1.0) - np.abs((idx.astype(f32) - centers[:, None] + f32(0.5)) * invscale), f32(0.0))
    w[idx >= xmax[:, None]] = 0.0
    total = np.zeros(n_out, f32)
    for t in range(taps):  # sequential sum, as ATen
        total += w[:, t]
    w /= total[:, None]
    return np.minimum(idx, n_in - 1), w


def resize_antialias(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """float32 ``[C, H, W]`` -> ``[C, height, width]``, separable (width, then height)."""
    c, h, w = image.shape
    if (h, w) == (height, width):
        return image
    out = image
    if w != width:
        idx, wt = _aa_taps(w, width)
        out = np.einsum("chwt,wt->chw", out[:, :, idx], wt, optimize=False).astype(np.float32)
    if h != height:
        idx, wt = _aa_taps(h, height)
        out = np.einsum("chtw,ht->chw", out[:, idx, :], wt, optimize=False).astype(np.float32)
    return np.ascontiguousarray(out, dtype=np.float32)


def _bilinear_weights(coord: np.ndarray, lo: np.ndarray, hi: np.ndarray, m: int, zero_outside: bool) -> np.ndarray:
    """``[N, P, M]`` weights of bilinear sampling (``grid_sample``, ``align_corners=False``, zero
    padding) of an ``M``-cell mask spanning ``[lo, hi]`` (``[N]``) at pixel centres ``coord [N, P]``;
    ``zero_outside``: 0 for pixel centres outside ``[lo, hi]`` (as ``maskkit.masks._axis_weights``)."""
    g = (coord - lo[:, None]) / np.maximum(hi - lo, np.float32(1e-6))[:, None] * np.float32(2) - np.float32(1)
    src = ((g + np.float32(1)) * np.float32(m) - np.float32(1)) / np.float32(2)  # [N, P]
    i0 = np.floor(src)
    frac = (src - i0).astype(np.float32)
    i0 = i0.astype(np.int64)
    cells = np.arange(m)[None, None, :]
    w = (cells == i0[..., None]) * (np.float32(1) - frac)[..., None] + (cells == i0[..., None] + 1) * frac[..., None]
    if zero_outside:
        w = w * (np.abs(g) <= 1)[..., None]
    return w.astype(np.float32)


def _box_crops(masks: np.ndarray, boxes: np.ndarray, size: tuple[int, int], zero_outside: bool):
    """Per mask: ``(r0, c0, float crop)``, its pasted probabilities over the rows and columns it
    can touch (:func:`maskkit.geometry.paste_regions`), as ``BoxMasks.prob_crops``. The
    sampling grid is separable (x depends on the column only, y on the row), so the bilinear
    resample is two small matrix products per mask, ``Wy [h, M] @ mask @ Wx^T [M, w]``."""
    h, w = int(size[0]), int(size[1])
    n, m = masks.shape[0], masks.shape[-1]
    boxes = boxes.astype(np.float32)
    probs = masks.reshape(n, m, m).astype(np.float32)
    half = np.float32(0.5)
    for i, (r0, c0, rh, rw) in enumerate(paste_regions(boxes.tolist(), m, h, w, zero_outside)):
        b = boxes[i : i + 1]
        px = (np.arange(rw, dtype=np.float32) + np.float32(c0) + half)[None]  # pixel centres of the region
        py = (np.arange(rh, dtype=np.float32) + np.float32(r0) + half)[None]
        wx = _bilinear_weights(px, b[:, 0], b[:, 2], m, zero_outside)[0]
        wy = _bilinear_weights(py, b[:, 1], b[:, 3], m, zero_outside)[0]
        yield r0, c0, wy @ (probs[i] @ wx.T)  # the order of maskkit.masks


def paste_masks(masks: np.ndarray, boxes: np.ndarray, size: tuple[int, int], zero_outside: bool = True) -> np.ndarray:
    """NumPy twin of :meth:`maskkit.masks.BoxMasks.probabilities`: ``[N, M, M]`` mask
    probabilities into their boxes ``[N, 4]`` -> float32 ``[N, 1, H, W]``, each computed over
    the pixels it can touch only (a full-image product per mask cost 1.7 s for 50 masks at
    600x800 with BLAS threads competing: benchmarks/export_runtimes.md)."""
    h, w = int(size[0]), int(size[1])
    out = np.zeros((masks.shape[0], 1, max(h, 0), max(w, 0)), np.float32)
    if h > 0 and w > 0:
        for i, (r0, c0, crop) in enumerate(_box_crops(masks, boxes, (h, w), zero_outside)):
            out[i, 0, r0 : r0 + crop.shape[0], c0 : c0 + crop.shape[1]] = crop
    return out


def resize_align_corners(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """float32 ``[C, H, W]`` -> ``[C, height, width]``, bilinear with corners aligned and no
    antialiasing (``F.interpolate(align_corners=True)``; SharpMask's ``pyramid="official"``)."""

    def taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        scale = np.float32(n_in - 1) / np.float32(n_out - 1) if n_out > 1 else np.float32(0)
        src = scale * np.arange(n_out, dtype=np.float32)
        i0 = src.astype(np.int64)
        lam = (src - i0).astype(np.float32)
        return i0, np.minimum(i0 + 1, n_in - 1), lam

    c, h, w = image.shape
    y0, y1, ly = taps(h, height)
    x0, x1, lx = taps(w, width)
    rows = image[:, y0, :] * (np.float32(1) - ly)[None, :, None] + image[:, y1, :] * ly[None, :, None]
    out = rows[:, :, x0] * (np.float32(1) - lx) + rows[:, :, x1] * lx
    return np.ascontiguousarray(out, dtype=np.float32)


def sharpmask_canvases(image: np.ndarray, spec: dict) -> list[np.ndarray]:
    """SharpMask's per-scale inputs (``SharpMask._scale_maps``): the image resized by ``2^s``,
    normalised, padded by half a window (mean colour or ``border_fill``) and to whole stride-16
    cells -> one ``[1, 3, H_s, W_s]`` per scale."""
    h0, w0 = image.shape[-2:]
    mean = np.asarray(spec["pixel_mean"], np.float32)[:, None, None]
    std = np.asarray(spec["pixel_std"], np.float32)[:, None, None]
    pad = spec["window"] // 2
    fill = np.float32(0) if spec["border_fill"] is None else (np.float32(spec["border_fill"]) - mean) / std
    out = []
    for s in spec["scales"]:
        f = 2.0**s
        if spec["pyramid"] == "official":
            h, w = max(1, int(np.floor(h0 * f + 0.5))), max(1, int(np.floor(w0 * f + 0.5)))
            x = image if (h, w) == (h0, w0) else resize_align_corners(image, h, w)
        else:
            h, w = max(1, round(h0 * f)), max(1, round(w0 * f))
            x = resize_antialias(image, h, w)
        ch, cw = h + 2 * pad, w + 2 * pad
        canvas = np.zeros((3, ch + (-ch) % 16, cw + (-cw) % 16), np.float32) + fill
        canvas[:, pad : pad + h, pad : pad + w] = (x - mean) / std
        out.append(canvas[None])
    return out


def paste_window_masks(
    masks: np.ndarray, boxes: np.ndarray, size: tuple[int, int], threshold: float, fallback: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """NumPy twin of :func:`maskkit.models.sharpmask.model.paste_window_masks`: window masks
    ``[N, M, M]`` over windows ``boxes [N, 4]`` -> bool ``[N, 1, H, W]`` (bilinear, binarised at
    ``threshold``, pixels whose centre is outside the window cleared) and the masks' tight
    boxes (``fallback`` where empty). Each mask is resampled over its window only."""
    h, w = size
    out = np.zeros((masks.shape[0], 1, h, w), bool)
    tight = fallback.astype(np.float32).copy()
    for i, (r0, c0, crop) in enumerate(_box_crops(masks, boxes, (h, w), True)):
        vals = crop >= threshold
        out[i, 0, r0 : r0 + vals.shape[0], c0 : c0 + vals.shape[1]] = vals
        rows, cols = vals.any(axis=1), vals.any(axis=0)
        if rows.any():
            ys, xs = np.nonzero(rows)[0], np.nonzero(cols)[0]
            tight[i] = [c0 + xs[0], r0 + ys[0], c0 + xs[-1] + 1, r0 + ys[-1] + 1]
    return out, tight


def centermask_input(image: np.ndarray, spec: dict) -> tuple[np.ndarray, np.ndarray]:
    """``CenterMask._test_resize`` + ``preprocess`` of one float32 ``[3, H, W]`` image (0..1) with
    a runtime spec's settings -> (normalised, zero-padded ``[1, 3, H_pad, W_pad]``, the resized
    ``(h, w)`` as int64 ``[2]``)."""
    h0, w0 = image.shape[-2:]
    h, w = test_resize_size(h0, w0, spec["min_size_test"], spec["max_size_test"])
    img = resize_antialias(image, h, w)
    if spec["input_format"] == "BGR255":
        img = img[::-1] * np.float32(255.0)
    mean = np.asarray(spec["pixel_mean"], np.float32)[:, None, None]
    std = np.asarray(spec["pixel_std"], np.float32)[:, None, None]
    d = max(int(spec["size_divisibility"]), 1)
    batch = np.zeros((1, 3, -(-h // d) * d, -(-w // d) * d), np.float32)
    batch[0, :, :h, :w] = (img - mean) / std
    return batch, np.asarray([h, w], np.int64)


def window_boxes(scale_index: np.ndarray, cells: np.ndarray, scales: list[float], window: int) -> np.ndarray:
    """``SharpMask.window_boxes``: each window in image px, xyxy ``[N, 4]`` float32 (2^s and the
    window side are Python floats, rounded to float32 where they meet arrays, as torch does)."""
    factor = np.asarray([2.0**s for s in scales], np.float32)[scale_index]
    side = np.asarray([window / 2.0**s for s in scales], np.float32)[scale_index]
    pad = np.float32(window // 2)
    x0 = (cells[:, 1].astype(np.float32) * np.float32(16) - pad) / factor
    y0 = (cells[:, 0].astype(np.float32) * np.float32(16) - pad) / factor
    return np.stack([x0, y0, x0 + side, y0 + side], axis=1).reshape(-1, 4).astype(np.float32)


def canonical_boxes(boxes: np.ndarray, canonical_size: int, window: int) -> np.ndarray:
    """The canonical object box of each window ``[N, 4]`` (an empty mask's box in
    ``SharpMask.proposals_to_prediction``): the centred ``canonical_size / window`` of it."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]) * np.float32(canonical_size / window) / 2
    return np.concatenate([centre - half, centre + half], axis=1).astype(np.float32)
