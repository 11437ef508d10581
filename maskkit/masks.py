"""Instance masks without one full-image array per instance.

A full-image mask costs H x W bytes as bool, 4x that as float: a 12 MP photo with 100
detections is 1.2 GB as bool and 4.8 GB as float. The containers here keep each mask small and
produce full-image pixels one mask at a time, only where they are asked for:

- :class:`BoxMasks` (predictions): each mask an ``M x M`` probability map over its box, pasted
  into the image on demand (bilinear, as detectron2's ``paste_masks_in_image``) and binarised at
  the model's threshold: straight to COCO RLE, to a box-local crop (drawing, areas), or to a
  dense ``bool [N, 1, H, W]`` tensor when a caller asks for one.
- :class:`CompactMasks`: what every compact container offers (``crops``, ``to_rle``, ``area``,
  ``to_dense``); the training targets' RLE masks (:class:`maskkit.data.rle_masks.RLEMasks`)
  offer it too.

:func:`mask_crops`, :func:`masks_to_rle` and :func:`mask_areas` take a compact container or a
dense tensor ``[N, H, W]`` / ``[N, 1, H, W]`` (binary, or probabilities binarised at
``threshold``), so drawing and results writing accept both.

The paste (:meth:`BoxMasks.prob_crops`): a pixel's value is bilinear sampling of the mask, whose
``M`` cells tile the box exactly, at the pixel's centre (``grid_sample`` with
``align_corners=False`` and zero padding: detectron2's ``_do_paste_mask``, which the official
centermask2 post-processing uses). The sampling grid is separable, so each mask is resampled
as two small matrix products over its box only (``Wy [h, M] @ mask @ Wx^T [M, w]``), as the
NumPy runner does (:mod:`maskkit.export.numpy_ops`); the values equal ``grid_sample``'s to
float rounding (``benchmarks/paste_equivalence.py``).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from pycocotools import mask as mask_utils

from maskkit.geometry import paste_regions

__all__ = [
    "CompactMasks",
    "BoxMasks",
    "crop_to_rle",
    "rle_runs",
    "is_compact",
    "mask_crops",
    "masks_to_rle",
    "mask_areas",
    "dense_rows",
]


# --------------------------------------------------------------------------- the paste


def _axis_weights(start: torch.Tensor, size: int, lo: torch.Tensor, hi: torch.Tensor, m: int, zero_outside: bool):
    """Bilinear weights ``[k, size, m]`` of sampling an ``m``-cell axis spanning ``[lo, hi]``
    (``[k]``) at the pixel centres ``start + j + 0.5`` (``j < size``), as ``grid_sample``
    (``align_corners=False``, zero padding) computes them; ``zero_outside``: 0 for pixel centres
    outside ``[lo, hi]`` (so the product of the two axes is 0 outside the box)."""
    pix = (start[:, None] + torch.arange(size, device=start.device)).to(torch.float32) + 0.5  # [k, size]
    g = (pix - lo[:, None]) / (hi - lo).clamp(min=1e-6)[:, None] * 2 - 1  # the normalised grid coordinate
    src = ((g + 1) * m - 1) / 2  # grid_sample's unnormalisation (align_corners=False)
    i0 = src.floor()
    frac = (src - i0)[..., None]
    cells = torch.arange(m, device=start.device, dtype=torch.float32)
    # cells past the mask's border match no index: zero padding
    w = (cells == i0[..., None]) * (1 - frac) + (cells == i0[..., None] + 1) * frac
    if zero_outside:
        w = w * (g.abs() <= 1)[..., None]
    return w


def _regions(boxes: torch.Tensor, m: int, height: int, width: int, zero_outside: bool) -> list[tuple[int, ...]]:
    """:func:`maskkit.geometry.paste_regions` of ``boxes [N, 4]``."""
    return paste_regions(boxes.tolist(), m, height, width, zero_outside)


# --------------------------------------------------------------------------- RLE of a crop


def crop_to_rle(crop: np.ndarray | torch.Tensor, r0: int, c0: int, height: int, width: int) -> dict:
    """COCO RLE (``counts`` as str) of the ``height x width`` mask that holds the binary ``crop``
    ``[h, w]`` at row ``r0``, column ``c0`` and 0 elsewhere, without building the full mask.

    COCO RLE runs go down the columns (Fortran order): the runs of ones are found per crop
    column, placed at their positions in the image, merged where one continues into the next
    column, and pycocotools compresses the run lengths (the string equals ``encode``'s)."""
    a = crop.cpu().numpy() if isinstance(crop, torch.Tensor) else np.asarray(crop)
    a = a.astype(bool, copy=False)
    hc, wc = a.shape
    total = int(height) * int(width)
    if a.size == 0 or not a.any():
        counts = [total]
    else:
        col = np.zeros((wc, hc + 2), np.int8)
        col[:, 1:-1] = a.T  # one row per crop column, a zero above and below
        d = np.diff(col, axis=1)  # [wc, hc + 1]: +1 where a run starts, -1 one past its end
        sj, si = np.nonzero(d == 1)  # row-major: sorted by column, then row = image order
        ej, ei = np.nonzero(d == -1)
        starts = (c0 + sj).astype(np.int64) * height + r0 + si
        ends = (c0 + ej).astype(np.int64) * height + r0 + ei
        joined = ends[:-1] == starts[1:]  # a run reaching the bottom row continues at the next column's top
        if joined.any():
            starts = starts[np.concatenate([[True], ~joined])]
            ends = ends[np.concatenate([~joined, [True]])]
        counts = np.empty(2 * len(starts) + 1, np.int64)
        counts[0] = starts[0]
        counts[1::2] = ends - starts
        counts[2:-1:2] = starts[1:] - ends[:-1]
        counts[-1] = total - ends[-1]
        counts = counts.tolist() if counts[-1] else counts[:-1].tolist()  # no final empty run (as encode)
    rle = mask_utils.frPyObjects({"size": [int(height), int(width)], "counts": counts}, int(height), int(width))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def rle_runs(counts: str) -> list[int] | str:
    """Run lengths of a compressed RLE string, as pycocotools' ``rleFrString`` (maskApi.c) reads
    them: 6-bit groups from chr(48), 0x20 = more groups follow, 0x10 on the last group = negative,
    each run after the second a delta on the run two before. A string describing message when
    the string is not one (pycocotools would read past its end or decode garbage)."""
    runs: list[int] = []
    x = k = 0
    more = False
    for pos, ch in enumerate(counts):
        c = ord(ch) - 48
        if not 0 <= c < 64:
            return f"character {ch!r} at {pos} is not an RLE character"
        x |= (c & 0x1F) << (5 * k)
        more = bool(c & 0x20)
        k += 1
        if not more:
            if c & 0x10:
                x |= -1 << (5 * k)
            if len(runs) > 2:
                x += runs[-2]
            runs.append(x)
            x = k = 0
    if more:
        return "the counts string ends inside a run"
    return runs


# --------------------------------------------------------------------------- containers


class CompactMasks:
    """N binary masks of one ``H x W`` image, held without N full-image arrays.

    Subclasses give ``__len__`` and :meth:`crops`; the rest follows. ``image_size`` is ``(H, W)``."""

    image_size: tuple[int, int]

    def __len__(self) -> int:
        raise NotImplementedError

    def crops(self) -> Iterator[tuple[int, int, torch.Tensor]]:
        """Per mask, in order: ``(r0, c0, crop)`` with ``crop`` bool ``[h, w]`` the mask's pixels
        in rows ``r0..r0+h`` and columns ``c0..c0+w`` (the mask is 0 elsewhere)."""
        raise NotImplementedError

    def to_rle(self) -> list[dict]:
        """COCO RLEs (``counts`` as str, JSON-ready), one per mask, never a full-image array."""
        h, w = self.image_size
        return [crop_to_rle(c, r0, c0, h, w) for r0, c0, c in self.crops()]

    def area(self) -> torch.Tensor:
        """Foreground pixels per mask, int64 ``[N]``."""
        return torch.tensor([int(c.sum()) for _, _, c in self.crops()], dtype=torch.int64)

    def to(self, device, *args, **kwargs) -> "CompactMasks":
        """The container with its tensors on ``device`` (pixels are made on the CPU anyway)."""
        return self

    def _dense(self, dtype: torch.dtype) -> torch.Tensor:
        """``[N, H, W]`` of ``dtype`` on the CPU (N full-image masks)."""
        h, w = self.image_size
        out = torch.zeros((len(self), h, w), dtype=dtype)
        for i, (r0, c0, c) in enumerate(self.crops()):
            out[i, r0 : r0 + c.shape[0], c0 : c0 + c.shape[1]] = c.cpu()
        return out


class BoxMasks(CompactMasks):
    """A prediction's masks: ``probs [N, M, M]`` (probabilities over each box), ``boxes [N, 4]``
    (xyxy, image px: where each mask is pasted), ``image_size`` ``(H, W)``, binarised at
    ``>= threshold``; ``zero_outside=False`` keeps the bilinear bleed of half a mask cell past the
    box (detectron2's paste, ``postprocess="centermask2"``).

    Stands for the data contract's ``masks`` ``bool [N, 1, H, W]``: ``len``, ``shape``, ``dtype``
    (``torch.bool``), subsets by index (``masks[keep]``, ``masks[order]``, ``masks[:5]``; an
    integer or tuple index, e.g. ``masks[0, 0]``, indexes the dense tensor of the selected
    masks), ``to(device)``, ``numpy()`` / ``np.asarray``. Pixels: :meth:`to_rle`, :meth:`crops`,
    :meth:`area` (a few masks at a time), :meth:`to_dense` (``bool [N, 1, H, W]``),
    :meth:`probabilities` (the pasted float ``[N, 1, H, W]``).
    """

    def __init__(
        self,
        probs: torch.Tensor,
        boxes: torch.Tensor,
        image_size: tuple[int, int],
        threshold: float = 0.5,
        zero_outside: bool = True,
    ):
        if not 0 < float(threshold) <= 1:
            raise ValueError(f"BoxMasks: threshold must be in (0, 1], got {threshold}")
        if probs.dim() == 4:
            probs = probs[:, 0]
        if probs.shape[0] != boxes.shape[0]:
            raise ValueError(f"BoxMasks: {probs.shape[0]} masks for {boxes.shape[0]} boxes")
        self.probs = probs  # [N, M, M]
        self.boxes = boxes.reshape(-1, 4)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.threshold = float(threshold)
        self.zero_outside = bool(zero_outside)

    @classmethod
    def empty(cls, height: int, width: int, threshold: float = 0.5, device=None) -> "BoxMasks":
        return cls(
            torch.zeros((0, 1, 1), device=device), torch.zeros((0, 4), device=device), (height, width), threshold
        )

    def _like(self, probs: torch.Tensor, boxes: torch.Tensor) -> "BoxMasks":
        return BoxMasks(probs, boxes, self.image_size, self.threshold, self.zero_outside)

    # -- tensor-like

    def __len__(self) -> int:
        return int(self.probs.shape[0])

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self), 1, *self.image_size))

    @property
    def dtype(self) -> torch.dtype:
        return torch.bool

    @property
    def device(self) -> torch.device:
        return self.probs.device

    def dim(self) -> int:
        return 4

    def __getitem__(self, index) -> "BoxMasks | torch.Tensor":
        if isinstance(index, (tuple, int)):
            first, rest = (index[0], index[1:]) if isinstance(index, tuple) else (index, ())
            if isinstance(first, int):
                return self[[first]].to_dense()[(0, *rest)]
            return self[first].to_dense()[(slice(None), *rest)]
        if isinstance(index, list):
            index = torch.tensor(index, dtype=torch.int64)
        if isinstance(index, torch.Tensor):
            index = index.to(self.probs.device)
        return self._like(self.probs[index], self.boxes[index])

    def to(self, device, *args, **kwargs) -> "BoxMasks":
        return self._like(self.probs.to(device), self.boxes.to(device))

    def cpu(self) -> "BoxMasks":
        return self.to("cpu")

    def numpy(self) -> np.ndarray:
        return self.to_dense().cpu().numpy()

    def __array__(self, dtype=None, copy=None):
        a = self.numpy()
        return a if dtype is None else a.astype(dtype)

    def __repr__(self) -> str:
        m = self.probs.shape[-1]
        return (
            f"BoxMasks({len(self)} masks of {self.image_size[0]}x{self.image_size[1]}, {m}x{m} per box, "
            f"threshold {self.threshold:g}{'' if self.zero_outside else ', bleed kept'})"
        )

    # -- pixels

    def prob_crops(self, budget: int = 1 << 22) -> Iterator[tuple[int, int, torch.Tensor]]:
        """Per mask, in order: ``(r0, c0, float crop)``, the pasted probabilities over the rows and
        columns the mask can touch. Masks go in chunks of at most ``budget`` pixels: the two axes'
        weights and ``mask @ Wx^T`` of a chunk are batched, ``Wy @ (...)`` is one product per mask."""
        h, w = self.image_size
        m = self.probs.shape[-1]
        regions = _regions(self.boxes, m, h, w, self.zero_outside)
        i, n = 0, len(regions)
        while i < n:
            j, pixels = i, 0
            while j < n and (j == i or pixels + regions[j][2] * regions[j][3] <= budget):
                pixels += regions[j][2] * regions[j][3]
                j += 1
            part = regions[i:j]
            origin = torch.tensor([[c0, r0] for r0, c0, _, _ in part], device=self.device)
            hmax, wmax = max(r[2] for r in part), max(r[3] for r in part)
            boxes = self.boxes[i:j].to(torch.float32)
            wx = _axis_weights(origin[:, 0], wmax, boxes[:, 0], boxes[:, 2], m, self.zero_outside)  # [k, wmax, M]
            wy = _axis_weights(origin[:, 1], hmax, boxes[:, 1], boxes[:, 3], m, self.zero_outside)  # [k, hmax, M]
            right = self.probs[i:j].to(torch.float32) @ wx.transpose(1, 2)  # [k, M, wmax]
            for t, (r0, c0, rh, rw) in enumerate(part):
                yield r0, c0, wy[t, :rh] @ right[t, :, :rw]
            i = j

    def crops(self) -> Iterator[tuple[int, int, torch.Tensor]]:
        for r0, c0, p in self.prob_crops():
            yield r0, c0, p >= self.threshold

    def to_dense(self) -> torch.Tensor:
        """``bool [N, 1, H, W]`` (N full-image masks: for few masks or small images)."""
        return self._dense(torch.bool).to(self.device)[:, None]

    def probabilities(self) -> torch.Tensor:
        """The pasted probabilities, float ``[N, 1, H, W]`` (4 bytes per pixel and mask)."""
        h, w = self.image_size
        out = torch.zeros((len(self), 1, h, w), dtype=torch.float32, device=self.device)
        for i, (r0, c0, p) in enumerate(self.prob_crops()):
            out[i, 0, r0 : r0 + p.shape[0], c0 : c0 + p.shape[1]] = p
        return out

    def tight_boxes(self, fallback: torch.Tensor) -> torch.Tensor:
        """xyxy boxes ``[N, 4]`` enclosing each binarised mask's pixels; ``fallback [N, 4]`` where a
        mask is empty."""
        out = fallback.clone()
        for i, (r0, c0, c) in enumerate(self.crops()):
            rows, cols = c.any(dim=1).nonzero().flatten(), c.any(dim=0).nonzero().flatten()
            if rows.numel():
                out[i] = torch.tensor(
                    [c0 + int(cols[0]), r0 + int(rows[0]), c0 + int(cols[-1]) + 1, r0 + int(rows[-1]) + 1],
                    dtype=out.dtype,
                )
        return out


def is_compact(masks) -> bool:
    """A :class:`CompactMasks` container (not a dense tensor)."""
    return isinstance(masks, CompactMasks)


# --------------------------------------------------------------------------- any masks


def _dense_binary(masks, threshold: float) -> torch.Tensor:
    """A dense ``[N, H, W]`` / ``[N, 1, H, W]`` tensor or array -> bool ``[N, H, W]`` (CPU)."""
    if isinstance(masks, np.ndarray):
        masks = torch.from_numpy(masks)
    masks = torch.as_tensor(masks).as_subclass(torch.Tensor).detach().cpu()
    if masks.dim() == 4:
        masks = masks[:, 0]
    return masks if masks.dtype == torch.bool else masks.float() >= threshold


def mask_crops(masks, threshold: float = 0.5) -> Iterator[tuple[int, int, torch.Tensor]]:
    """``(r0, c0, bool crop)`` per mask (see :meth:`CompactMasks.crops`) of a compact container,
    or of a dense tensor (each whole mask, binarised at ``>= threshold``)."""
    if is_compact(masks):
        yield from masks.crops()
        return
    for m in _dense_binary(masks, threshold):
        yield 0, 0, m


def masks_to_rle(masks, threshold: float = 0.5) -> list[dict]:
    """Masks -> COCO RLEs with ``counts`` as ``str`` (JSON-ready): a compact container (a few
    masks at a time), or binary / probability masks ``[N, H, W]`` / ``[N, 1, H, W]``
    (probabilities binarised at ``>= threshold``)."""
    if is_compact(masks):
        return masks.to_rle()
    arr = _dense_binary(masks, threshold).numpy()
    if arr.shape[0] == 0:
        return []
    rles = mask_utils.encode(np.asfortranarray(arr.transpose(1, 2, 0).astype(np.uint8)))
    for r in rles:
        r["counts"] = r["counts"].decode("ascii")
    return rles


def mask_areas(masks, threshold: float = 0.5) -> torch.Tensor:
    """Foreground pixels per mask, int64 ``[N]`` (compact or dense, as :func:`mask_crops`)."""
    if is_compact(masks):
        return masks.area()
    return _dense_binary(masks, threshold).flatten(1).sum(1).to(torch.int64)


def dense_rows(masks, rows) -> torch.Tensor:
    """Masks ``rows`` (indices) as a dense ``[len(rows), H, W]`` tensor: of a compact container
    (its own dtype: bool for predictions, uint8 for targets) or of a dense ``[N, H, W]`` tensor."""
    if is_compact(masks):
        out = masks[torch.as_tensor(rows, dtype=torch.int64).reshape(-1).cpu()].to_dense()
        return out[:, 0] if out.dim() == 4 else out
    return torch.as_tensor(masks).as_subclass(torch.Tensor)[rows]
