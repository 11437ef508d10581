"""A training target's instance masks kept as COCO RLE.

Dense ``[N, H, W]`` masks per image do not scale: one 1000x1000 image with 20k small
annotations is 20 GB as uint8. :class:`RLEMasks` keeps each instance's RLE as the annotation
file gives it and the list of geometric changes applied since (``transforms.v2`` resize and
horizontal flip, through the kernels registered here); pixels are made per instance, over the
instance's own bounding box, only where they are needed: the mask targets of the RoIs the
mask loss samples, SharpMask's training windows, ``maskkit data show``.

The pixels equal those of the dense pipeline exactly: each mask decoded at the file's size,
resized with centre-aligned nearest neighbour (``nearest-exact``, the source pixel of each
output pixel computed by torch's own kernel) and flipped, in the order the transforms ran.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils._pytree import tree_flatten
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as TF

from maskkit.errors import DataError
from maskkit.masks import CompactMasks, rle_runs

__all__ = ["RLEMasks", "rle_crop"]


def rle_crop(rle: dict, height: int, width: int) -> tuple[int, int, np.ndarray]:
    """``(r0, c0, crop)``: the foreground of one COCO RLE (compressed or not) of an
    ``height x width`` mask as the bool ``crop`` of its bounding box at row ``r0``, column ``c0``
    (``0x0`` for an empty mask), decoded from the runs over the box's columns only."""
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    runs = counts if isinstance(counts, list) else rle_runs(counts)
    if isinstance(runs, str):
        raise DataError(f"invalid RLE: {runs}")
    ends = np.cumsum(np.asarray(runs, dtype=np.int64))
    starts = ends - np.asarray(runs, dtype=np.int64)
    ones = slice(1, None, 2)  # runs alternate 0, 1, 0, ... starting with zeros
    s, e = starts[ones], ends[ones]
    s, e = s[e > s], e[e > s]
    if s.size == 0:
        return 0, 0, np.zeros((0, 0), bool)
    c0, c1 = int(s[0] // height), int((e[-1] - 1) // height) + 1
    base = c0 * height
    d = np.zeros((c1 - c0) * height + 1, np.int8)
    np.add.at(d, s - base, 1)
    np.add.at(d, e - base, -1)
    band = np.cumsum(d[:-1], dtype=np.int8).reshape(c1 - c0, height).T.astype(bool)  # [H, columns c0..c1)
    rows = np.flatnonzero(band.any(axis=1))
    return int(rows[0]), c0, band[rows[0] : rows[-1] + 1]


def _source_index(n_in: int, n_out: int) -> torch.Tensor:
    """For each of ``n_out`` output pixels, the source pixel of a ``nearest-exact`` resize from
    ``n_in`` (torch's own index computation: an index ramp resized by ``F.interpolate``)."""
    ramp = torch.arange(n_in, dtype=torch.float32)[None, None, :, None]
    return F.interpolate(ramp, size=(n_out, 1), mode="nearest-exact")[0, 0, :, 0].to(torch.int64)


def _resize_crop(r0: int, c0: int, crop: torch.Tensor, src: tuple[int, int], dst: tuple[int, int]):
    """The crop of a mask at ``(r0, c0)`` in a ``src`` image after a nearest-exact resize to ``dst``."""
    out = []
    for start, length, n_in, n_out in ((r0, crop.shape[0], src[0], dst[0]), (c0, crop.shape[1], src[1], dst[1])):
        idx = _source_index(n_in, n_out)
        inside = ((idx >= start) & (idx < start + length)).nonzero().flatten()
        out.append((int(inside[0]) if inside.numel() else 0, idx[inside] - start))
    (nr0, rows), (nc0, cols) = out
    return nr0, nc0, crop[rows][:, cols]


class RLEMasks(tv_tensors.TVTensor, CompactMasks):
    """N instance masks of a target, as COCO RLEs plus the geometric changes applied since.

    The tensor itself is int64 ``[N]``: each instance's entry in ``rles`` (so it is filtered with
    the boxes like a label); ``rles`` the compressed RLEs at ``source_size`` (H, W), ``ops`` the
    changes in order (``("resize", (h, w))``, ``("hflip",)``), ``canvas_size`` the current (H, W).
    As a :class:`maskkit.masks.CompactMasks`: ``len``, ``crops()``, ``to_dense()`` (uint8
    ``[N, H, W]``, the data contract's target masks), ``to_rle()``, ``area()``; indexing with
    indices or a bool mask gives the subset."""

    rles: list
    source_size: tuple[int, int]
    ops: tuple
    canvas_size: tuple[int, int]

    @classmethod
    def _wrap(cls, tensor: torch.Tensor, *, rles, source_size, ops, canvas_size) -> "RLEMasks":
        out = tensor.as_subclass(cls)
        out.rles, out.source_size, out.ops, out.canvas_size = rles, tuple(source_size), tuple(ops), tuple(canvas_size)
        return out

    def __new__(cls, rles: list, source_size: tuple[int, int], index=None, ops=(), canvas_size=None) -> "RLEMasks":
        data = torch.arange(len(rles)) if index is None else torch.as_tensor(index, dtype=torch.int64).reshape(-1)
        return cls._wrap(data, rles=rles, source_size=source_size, ops=ops, canvas_size=canvas_size or source_size)

    def _like(self, tensor: torch.Tensor, ops=None, canvas_size=None) -> "RLEMasks":
        return RLEMasks._wrap(
            tensor.as_subclass(torch.Tensor),
            rles=self.rles,
            source_size=self.source_size,
            ops=self.ops if ops is None else ops,
            canvas_size=self.canvas_size if canvas_size is None else canvas_size,
        )

    @classmethod
    def _wrap_output(cls, output: Any, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None) -> Any:
        flat, _ = tree_flatten(args + (tuple(kwargs.values()) if kwargs else ()))
        like = next(x for x in flat if isinstance(x, RLEMasks))
        if isinstance(output, torch.Tensor) and not isinstance(output, RLEMasks):
            return like._like(output)
        if isinstance(output, (tuple, list)):
            return type(output)(cls._wrap_output(part, args, kwargs) for part in output)
        return output

    def __getitem__(self, index) -> "RLEMasks":
        if isinstance(index, torch.Tensor):
            index = index.cpu()
        return self._like(self.as_subclass(torch.Tensor)[index].reshape(-1))

    def __len__(self) -> int:
        return int(self.as_subclass(torch.Tensor).shape[0])

    def __repr__(self) -> str:
        changes = ", ".join(op[0] if len(op) == 1 else f"{op[0]} {op[1][0]}x{op[1][1]}" for op in self.ops)
        return f"RLEMasks({len(self)} masks of {self.canvas_size[0]}x{self.canvas_size[1]}" + (
            f", from {self.source_size[0]}x{self.source_size[1]} by {changes})" if self.ops else ")"
        )

    @property
    def image_size(self) -> tuple[int, int]:
        return self.canvas_size

    def crops(self) -> Iterator[tuple[int, int, torch.Tensor]]:
        h0, w0 = self.source_size
        for k in self.as_subclass(torch.Tensor).cpu().tolist():
            r0, c0, crop = rle_crop(self.rles[k], h0, w0)
            crop, size = torch.from_numpy(crop), (h0, w0)
            for op in self.ops:
                if op[0] == "resize":
                    r0, c0, crop = _resize_crop(r0, c0, crop, size, op[1])
                    size = op[1]
                else:  # hflip: column c -> W - 1 - c
                    c0, crop = size[1] - c0 - crop.shape[1], crop.flip(1)
            yield r0, c0, crop

    def to_dense(self) -> torch.Tensor:
        """uint8 ``[N, H, W]`` at the current size (N full-image masks: for few or small ones)."""
        return self._dense(torch.uint8)

    def to_rle(self) -> list[dict]:
        if self.ops:
            return super().to_rle()
        rles = [dict(self.rles[k]) for k in self.as_subclass(torch.Tensor).cpu().tolist()]
        return [{"size": list(r["size"]), "counts": r["counts"].decode("ascii")} for r in rles]


# --------------------------------------------------------------------------- transforms.v2 kernels


@TF.register_kernel(functional=TF.resize, tv_tensor_cls=RLEMasks)
def _resize_rle_masks(inpt: RLEMasks, size, interpolation=None, max_size=None, antialias=True) -> RLEMasks:
    """Record a resize (always nearest-exact for masks, as :class:`ResizeShortestSide` resizes them)."""
    h, w = inpt.canvas_size
    new = tuple(int(v) for v in TF.resize_keypoints(torch.zeros(0, 2), size, (h, w), max_size)[1])  # as the image
    if new == (h, w):
        return inpt
    return inpt._like(inpt, ops=inpt.ops + (("resize", new),), canvas_size=new)


@TF.register_kernel(functional=TF.horizontal_flip, tv_tensor_cls=RLEMasks)
def _hflip_rle_masks(inpt: RLEMasks) -> RLEMasks:
    return inpt._like(inpt, ops=inpt.ops + (("hflip",),))


def _unsupported(name: str):
    def kernel(inpt: RLEMasks, *args, **kwargs):
        raise DataError(
            f"RLE target masks follow resize and horizontal flip only, not {name}: build the dataset with "
            "CocoDataset(..., dense_masks=True) for other transforms"
        )

    return kernel


for _fn in (
    TF.vertical_flip,
    TF.crop,
    TF.resized_crop,
    TF.center_crop,
    TF.pad,
    TF.rotate,
    TF.affine,
    TF.perspective,
    TF.elastic,
):
    TF.register_kernel(functional=_fn, tv_tensor_cls=RLEMasks)(_unsupported(_fn.__name__))
