"""DeepMask / SharpMask window sampler: per-patch training samples from any COCO-format dataset.

Class-agnostic (REFERENCE 'Training data', DeepMask Sec. 3.1 / SharpMask Sec. 3.3). With window
``W`` (160), context ``C`` (32) and canonical object size ``c`` (92 px longest side):

- **mask samples** (positives only): a category uniformly, then one of its instances (not crowd,
  area >= 100 px, box sides >= 5 px); the window is centred on the box centre shifted by
  ``U(-16, 16)`` window px and scaled so the longest side is ``c * 2^U(-0.25, 0.25)``; label =
  that instance's mask over the central ``W x W`` region (other objects are background),
  ``{-1, +1}``.
- **score samples**, 50 % positive (an instance exactly centred at the canonical scale) and
  50 % negative (image scale ``2^u``, ``u`` in ``neg_scales`` by 0.25, window centre uniform in the
  image), a negative being rejected while any object (crowd regions too: they are ignore
  regions) of a similar scale (``|log2(size / c)| <= 1``) is centred within 48 window px
  (max-norm) of the window centre.
- crops are ``W + C`` px (mean-colour padding outside the image), flipped horizontally with
  p = 0.5. Images stay 0..1 RGB; the model normalises.

A batch is all-mask or all-score (p = ``mask_batch_prob``): the kind of item ``i`` is drawn from
``(seed, epoch, i // batch_size)``, so a ``DataLoader(sampler, batch_size=sampler.batch_size,
shuffle=False, collate_fn=collate_windows)`` yields homogeneous batches (the sampler is random
by itself; don't shuffle). Every item is a deterministic function of ``(seed, epoch, i)``, so
workers agree; call :meth:`WindowSampler.set_epoch` for fresh samples each epoch, and give each
distributed rank its own ``seed`` (no DistributedSampler: it would interleave batches).

Item: ``(crop float [3, S, S], info)`` with ``info = {"kind": "mask"|"score", "mask": float
[W, W] in {-1, +1}, "score": float (+1/-1), "window": float [4] (the W x W window in image px,
xyxy), "scale": window px per image px, "flipped": bool, "item": dataset index, "instance":
row in the target or -1}``. :func:`collate_windows` stacks a list of items into
``(crops [B, 3, S, S], {"kind", "masks" [B, W, W], "scores" [B], "windows" [B, 4], "scales" [B],
"flipped" [B], "items" [B], "instances" [B]})`` — the targets ``SharpMask`` takes in train mode.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np
import torch

from maskkit.config import WindowSamplerConfig
from maskkit.errors import DataError, MaskkitError
from maskkit.masks import is_compact, mask_areas

__all__ = ["WindowSampler", "collate_windows", "crop_window", "is_near_positive"]


def _axis_weights(start: float, length: float, out: int, n: int) -> torch.Tensor:
    """``[out, n]`` weights of one axis of ``roi_align(aligned=True, sampling_ratio=0)`` over a
    box from ``start`` spanning ``length`` px of an ``n`` px axis: each output pixel averages
    ``ceil(length / out)`` bilinear samples (the adaptive grid), with torchvision's border rule
    (samples beyond ``[-1, n]`` are zero, ``[-1, 0]`` reads pixel 0, past ``n - 1`` the last)."""
    g = max(1, math.ceil(length / out))
    k = np.arange(out * g)
    pos = start - 0.5 + (k // g + (k % g + 0.5) / g) * (length / out)
    valid = (pos >= -1.0) & (pos <= n)
    pos = np.maximum(pos, 0.0)
    low = np.minimum(np.floor(pos).astype(np.int64), n - 1)
    frac = np.where(low >= n - 1, 0.0, pos - low)
    high = np.minimum(low + 1, n - 1)
    rows = (k // g) * n  # numpy: a few dozen tiny torch ops cost more than the crop itself
    w = np.bincount(rows + low, valid * (1 - frac), out * n) + np.bincount(rows + high, valid * frac, out * n)
    return torch.from_numpy(w.reshape(out, n) / g)


def crop_window(
    image: torch.Tensor, centre: tuple[float, float], scale: float, size: int, fill: torch.Tensor | float = 0.0
) -> torch.Tensor:
    """Resample the square region of ``size / scale`` image px centred at ``centre`` (x, y) to
    ``[C, size, size]`` (``scale`` = output px per image px); outside the image gets ``fill``
    (per channel ``[C]`` or a number).

    The result of one ``torchvision.ops.roi_align`` (aligned, adaptive sampling: anti-aliased
    when shrinking; the fill applied by shifting values so its zero outside becomes ``fill``),
    computed as two small matrix products: roi_align's bilinear samples and their per-bin
    average are separable, and torchvision's CPU kernel was most of the sampler's time
    (benchmarks/synthetic_protocol.md, "A cheaper window crop");
    ``tests/data/test_windows.py`` checks it equals roi_align."""
    return _crop(image, (0, 0), tuple(image.shape[-2:]), centre, scale, size, fill)


def _crop(
    region: torch.Tensor,
    origin: tuple[int, int],
    image_size: tuple[int, int],
    centre: tuple[float, float],
    scale: float,
    size: int,
    fill: torch.Tensor | float,
) -> torch.Tensor:
    """:func:`crop_window` of an ``image_size`` image that is ``fill`` everywhere but ``region``
    ``[C, h, w]``, whose top-left pixel is at row, column ``origin`` (a mask's box crop)."""
    fill = torch.as_tensor(fill, dtype=region.dtype, device=region.device).reshape(-1, 1, 1)
    half = size / (2.0 * scale)
    cx, cy = centre
    (r0, c0), (h, w) = origin, region.shape[-2:]
    wy = _axis_weights(cy - half, 2 * half, size, image_size[0])[:, r0 : r0 + h].to(region.dtype)  # [size, h]
    wx = _axis_weights(cx - half, 2 * half, size, image_size[1])[:, c0 : c0 + w].to(region.dtype)  # [size, w]
    return wy @ (region - fill) @ wx.T + fill  # [C, size, size]


def is_near_positive(centre: tuple[float, float], scale: float, boxes: torch.Tensor, cfg: WindowSamplerConfig) -> bool:
    """Negative-window rejection rule: True when an object of ``boxes [N, 4]`` (image px) has a
    similar scale (``|log2(longest side * scale / canonical)| <= neg_reject_octaves``) and its
    box centre lies within ``neg_reject_dist`` window px (max-norm) of the window centre."""
    if boxes.numel() == 0:
        return False
    ctr = (boxes[:, :2] + boxes[:, 2:]) / 2
    d = (ctr - torch.tensor(centre, dtype=boxes.dtype)).abs().amax(dim=1) * scale  # window px
    side = (boxes[:, 2:] - boxes[:, :2]).amax(dim=1).clamp(min=1e-3) * scale
    similar = (side / cfg.canonical_size).log2().abs() <= cfg.neg_reject_octaves
    return bool(((d <= cfg.neg_reject_dist) & similar).any())


def _plain(x: Any) -> torch.Tensor:
    return x.as_subclass(torch.Tensor) if isinstance(x, torch.Tensor) else torch.as_tensor(x)


def _mask_crop(masks, row: int) -> tuple[int, int, torch.Tensor]:
    """Instance ``row``'s pixels as ``(r0, c0, crop)``: its box crop for compact (RLE) masks, which
    are not decoded to a full image; the whole mask (at 0, 0) of a dense ``[N, H, W]`` tensor."""
    if is_compact(masks):
        return next(iter(masks[torch.tensor([row])].crops()))
    return 0, 0, _plain(masks)[row]


def _valid_rows(target: dict, cfg: WindowSamplerConfig) -> torch.Tensor:
    """Rows of a target usable as positives: not crowd, area >= min_area, box sides >= min_side."""
    boxes = _plain(target["boxes"]).reshape(-1, 4).float()
    n = boxes.shape[0]
    crowd = _plain(target.get("iscrowd", torch.zeros(n, dtype=torch.int64))).reshape(-1).bool()
    if "area" in target:
        area = _plain(target["area"]).reshape(-1).float()
    else:
        area = mask_areas(target["masks"]).float() if n else torch.zeros(0)
    wh = boxes[:, 2:] - boxes[:, :2]
    ok = ~crowd & (area >= cfg.min_area) & (wh.amin(dim=1) >= cfg.min_side)
    return ok.nonzero().flatten()


def _instance_index(dataset, cfg: WindowSamplerConfig) -> dict[int, list[tuple[int, int]]]:
    """label -> [(dataset index, target row)] of the instances usable as positives.

    A ``CocoDataset`` (``coco``, ``image_ids``, ``cat_id_to_label``) is indexed from its
    annotations without reading pixels (rows follow ``coco.imgToAnns`` order, as its targets);
    any other dataset of ``(image, target)`` items is scanned once."""
    index: dict[int, list[tuple[int, int]]] = defaultdict(list)
    if all(hasattr(dataset, a) for a in ("coco", "image_ids", "cat_id_to_label")):
        for i, img_id in enumerate(dataset.image_ids):
            for k, a in enumerate(dataset.coco.imgToAnns.get(img_id, [])):
                x, y, w, h = a["bbox"]
                if a.get("iscrowd", 0) or a.get("area", w * h) < cfg.min_area or min(w, h) < cfg.min_side:
                    continue
                index[dataset.cat_id_to_label[a["category_id"]]].append((i, k))
        return dict(index)
    for i in range(len(dataset)):
        _, target = dataset[i]
        labels = _plain(target["labels"]).reshape(-1)
        for k in _valid_rows(target, cfg).tolist():
            index[int(labels[k])].append((i, k))
    return dict(index)


class WindowSampler(torch.utils.data.Dataset):
    """Map-style dataset of training windows (see the module docstring).

    Args:
        dataset: items ``(image float [3, H, W] 0..1, target dict(boxes [N, 4] xyxy, labels [N],
            masks [N, H, W], iscrowd [N]))`` — a :class:`maskkit.data.coco.CocoDataset` or any
            object with ``__len__``/``__getitem__`` of that form.
        cfg: the model config's ``sampler`` section.
        pixel_mean: the padding colour (the model's ``pixel_mean``: 0 after normalisation).
        batch_size: windows per training step (the all-mask / all-score unit).
        length: items per epoch (default: the number of usable instances, at least one batch,
            rounded up to whole batches).
        seed: base of every random draw.
    """

    def __init__(
        self,
        dataset,
        cfg: WindowSamplerConfig,
        pixel_mean: tuple[float, ...] = (0.485, 0.456, 0.406),
        batch_size: int = 32,
        length: int | None = None,
        seed: int = 0,
    ) -> None:
        if (cfg.context % 32) or cfg.window % 16:
            raise MaskkitError(
                f"window sampler: window must be a multiple of 16 and context of 32, got {cfg.window}/{cfg.context}"
            )
        self.dataset = dataset
        self.cfg = cfg
        self.fill = torch.tensor(pixel_mean, dtype=torch.float32)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.epoch = 0
        self.index = _instance_index(dataset, cfg)
        self.labels = sorted(self.index)
        if not self.labels:
            name = getattr(dataset, "ann_file", type(dataset).__name__)
            raise DataError(
                f"{name}: no instance usable for window sampling (all crowd, smaller than "
                f"{cfg.min_area:g} px or with a box side under {cfg.min_side:g} px)"
            )
        n = sum(len(v) for v in self.index.values()) if length is None else int(length)
        self.length = max(1, math.ceil(max(n, self.batch_size) / self.batch_size)) * self.batch_size
        self.neg_grid = np.arange(cfg.neg_scales[0], cfg.neg_scales[-1] + 1e-9, 0.25)
        self._cache: dict[int, tuple[torch.Tensor, dict]] = {}  # item -> (image, target), cfg.cache_mb
        self._cache_bytes = 0
        self._mask_cache: dict[tuple[int, int], tuple[int, int, torch.Tensor]] = {}  # of cached images

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    @property
    def crop_size(self) -> int:
        return self.cfg.window + self.cfg.context

    def kind_of(self, i: int) -> str:
        """ "mask" or "score": the same for every item of a batch (``i // batch_size``)."""
        rng = np.random.default_rng([self.seed, self.epoch, i // self.batch_size, 1])
        return "mask" if rng.random() < self.cfg.mask_batch_prob else "score"

    # -- sample construction

    def _load(self, item: int) -> tuple[torch.Tensor, dict]:
        if item in self._cache:
            image, target = self._cache[item]
            return (image.float() / 255 if image.dtype == torch.uint8 else image), target
        image, target = self.dataset[item]
        image = _plain(image)
        if image.dim() != 3 or image.shape[0] != 3 or not image.is_floating_point():
            raise DataError(
                f"window sampler: item {item} image must be float [3, H, W], got {image.dtype} {tuple(image.shape)}"
            )
        if self.cfg.cache_mb > 0:
            self._remember(item, image, target)
        return image, target

    def _remember(self, item: int, image: torch.Tensor, target: dict) -> None:
        """Keep a decoded image while the cache holds under ``cache_mb``: as 8-bit when that is
        exact (an 8-bit file read as ``x / 255``, so the cached copy gives the same floats), else as is."""
        stored = (image * 255).round().to(torch.uint8)
        if not torch.equal(stored.float() / 255, image):
            stored = image
        size = stored.numel() * stored.element_size()
        if self._cache_bytes + size <= self.cfg.cache_mb * 2**20:
            self._cache[item] = (stored, target)
            self._cache_bytes += size

    def _instance_mask(self, item: int, target: dict, row: int) -> tuple[int, int, torch.Tensor]:
        """Instance ``row``'s ``(r0, c0, box crop)``, kept beside a cached image (decoding the RLE
        again for every window was a large share of the sampler's work)."""
        if item not in self._cache:
            return _mask_crop(target["masks"], row)
        key = (item, row)
        if key not in self._mask_cache:
            self._mask_cache[key] = _mask_crop(target["masks"], row)
        return self._mask_cache[key]

    def _pick_instance(self, rng: np.random.Generator) -> tuple[torch.Tensor, dict, int, int]:
        """A category uniformly, then one of its instances (REFERENCE); re-checked on the loaded target."""
        label = self.labels[rng.integers(len(self.labels))]
        item, row = self.index[label][rng.integers(len(self.index[label]))]
        image, target = self._load(item)
        valid = _valid_rows(target, self.cfg)
        if row not in valid.tolist():  # transforms changed the target: any usable row of this image
            if valid.numel() == 0:
                raise DataError(f"window sampler: item {item} has no usable instance after loading")
            row = int(valid[rng.integers(valid.numel())])
        return image, target, item, row

    def _sample(
        self,
        image: torch.Tensor,
        centre: tuple[float, float],
        scale: float,
        mask: tuple[int, int, torch.Tensor] | None,
        rng: np.random.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor, bool]:
        crop = crop_window(image, centre, scale, self.crop_size, self.fill).clamp_(0.0, 1.0)  # [3, S, S]
        if mask is not None:
            m = _crop(mask[2][None].float(), mask[:2], image.shape[-2:], centre, scale, self.cfg.window, 0.0)[0]
            label = torch.where(m >= 0.5, 1.0, -1.0)
        else:
            label = torch.full((self.cfg.window, self.cfg.window), -1.0)
        flipped = bool(rng.random() < self.cfg.hflip_prob)
        if flipped:
            crop, label = crop.flip(-1), label.flip(-1)
        return crop, label, flipped

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict]:
        if not 0 <= i < self.length:
            raise IndexError(i)
        cfg = self.cfg
        kind = self.kind_of(i)
        rng = np.random.default_rng([self.seed, self.epoch, i, 0])
        positive = kind == "mask" or rng.random() < 0.5
        if positive:
            image, target, item, row = self._pick_instance(rng)
            box = _plain(target["boxes"]).reshape(-1, 4)[row].float()
            side = float((box[2:] - box[:2]).max())
            cx, cy = float(box[0] + box[2]) / 2, float(box[1] + box[3]) / 2
            scale = cfg.canonical_size / side
            if kind == "mask":  # jitter: scale 2^U(-0.25, 0.25), shift U(-16, 16) window px
                scale *= 2.0 ** rng.uniform(-cfg.scale_jitter, cfg.scale_jitter)
                dx, dy = rng.uniform(-cfg.shift_jitter, cfg.shift_jitter, size=2)
                cx, cy = cx + dx / scale, cy + dy / scale
            mask = self._instance_mask(item, target, row)
            crop, label, flipped = self._sample(image, (cx, cy), scale, mask, rng)
        else:
            image, target, item, cx, cy, scale = self._negative(rng)
            row = -1
            crop, label, flipped = self._sample(image, (cx, cy), scale, None, rng)
        half = cfg.window / (2 * scale)
        info = {
            "kind": kind,
            "mask": label,
            "score": 1.0 if positive else -1.0,
            "window": torch.tensor([cx - half, cy - half, cx + half, cy + half]),
            "scale": float(scale),
            "flipped": flipped,
            "item": int(item),
            "instance": int(row),
        }
        return crop, info

    def _negative(self, rng: np.random.Generator, tries: int = 200):
        """A window at a random scale and position with no similar-scale object centred near it."""
        for t in range(tries):
            if t % 20 == 0:  # a new image every 20 positions
                item = int(rng.integers(len(self.dataset)))
                image, target = self._load(item)
                boxes = _plain(target["boxes"]).reshape(-1, 4).float()
                h, w = image.shape[-2:]
            scale = float(2.0 ** self.neg_grid[rng.integers(len(self.neg_grid))])
            cx, cy = float(rng.uniform(0, w)), float(rng.uniform(0, h))
            if not is_near_positive((cx, cy), scale, boxes, self.cfg):
                return image, target, item, cx, cy, scale
        raise DataError(f"window sampler: no negative window found in {tries} tries (every window is near an object)")


def collate_windows(batch: list[tuple[torch.Tensor, dict]]) -> tuple[torch.Tensor, dict]:
    """Items of one kind -> ``(crops [B, 3, S, S], targets)`` (see the module docstring)."""
    if not batch:
        raise MaskkitError("collate_windows: empty batch")
    kinds = {info["kind"] for _, info in batch}
    if len(kinds) != 1:
        raise MaskkitError(
            f"collate_windows: a batch must be all-mask or all-score, got {sorted(kinds)} "
            "(use batch_size=sampler.batch_size and shuffle=False)"
        )
    infos = [info for _, info in batch]
    return torch.stack([c for c, _ in batch]), {
        "kind": kinds.pop(),
        "masks": torch.stack([d["mask"] for d in infos]),
        "scores": torch.tensor([d["score"] for d in infos], dtype=torch.float32),
        "windows": torch.stack([d["window"] for d in infos]),
        "scales": torch.tensor([d["scale"] for d in infos], dtype=torch.float32),
        "flipped": torch.tensor([d["flipped"] for d in infos]),
        "items": torch.tensor([d["item"] for d in infos]),
        "instances": torch.tensor([d["instance"] for d in infos]),
    }
