"""Write the synthetic "shapes" instance-segmentation dataset in COCO format (the embedded default).

Six categories with distinct silhouettes that make mask quality matter: concave outlines
(star, cross, crescent, arrow), thin parts (arrow shaft, crescent horns, gear teeth, thin
rings) and holes (ring, gear). Each image holds 1-15 annotated instances whose sizes span the
COCO small (< 32^2 px), medium and large (> 96^2 px) ranges at the default 320 px, on a
textured background cluttered with unannotated distractors (blobs, ellipses, rectangles,
triangles, lines), with colour/lighting variation, mild blur and sensor noise.

Scene rules (the annotations follow them exactly):

* Instances are painted back to front. An instance's annotation is its *visible* (modal)
  mask: its own in-image mask minus everything painted in front of it (later instances and
  the few unannotated distractors that are drawn on top).
* Visibility is decided front to back: an instance is dropped when its visible area is below
  40 % of its full area (the full area counts the part cut off by the image border too) or
  below 24 px. A dropped instance is removed from the scene, never painted, so every pixel
  showing a category's silhouette is annotated (no unannotated positives to confuse training);
  the instances behind it then count only the kept ones in front as occluders.
* A third of the instances are placed anywhere in the image (centre inside), so they may be
  cut by the border; they are kept when enough of them is visible (same rule). The rest are
  placed wholly inside when they fit.
* Object areas are log-uniform and scale with the image area; at 320 px the visible areas
  come out about 37 % COCO-small, 51 % medium, 12 % large, 6.8 instances per image on average.

Images are square ``size x size`` RGB PNG (lossless); masks are written as COCO compressed
RLE with ``counts`` as str, which is exact (polygons are not exact for holes and 1-px parts).
Every image is drawn from its own ``numpy.random.Generator`` seeded by ``(seed, split,
index)``, so an image does not depend on how many others were made and ``--train`` does not
change the val split; the same seed writes the same bytes.

Layout written::

    OUT/annotations/instances_train.json   OUT/train/000000000001.png ...
    OUT/annotations/instances_val.json     OUT/val/000000000001.png ...
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from pycocotools import mask as mask_utils
from tqdm import tqdm

from maskkit.errors import MaskkitError

__all__ = [
    "CATEGORIES",
    "MAX_INSTANCES",
    "MIN_SIZE",
    "SCENES",
    "SPLITS",
    "scene_settings",
    "generate",
    "render_image",
    "image_rng",
    "split_summary",
]

CATEGORIES: list[str] = ["star", "ring", "cross", "crescent", "gear", "arrow"]

SPLITS = {"train": 0, "val": 1}  # the split's number in the per-image seed (seed, split, index)
MIN_SIZE = 64  # smallest image side accepted: below it the small shapes lose their silhouettes
MIN_VISIBLE_FRACTION = 0.4  # of the full (unclipped, unoccluded) area, else the instance is dropped
MIN_VISIBLE_PX = 24
MAX_INSTANCES = 15

# A silhouette is a list of drawing operations in unit coordinates (shape radius ~1, centred on
# the origin): (polygon [P, 2] xy, fill) with fill 1 adding area and fill 0 cutting a hole.
Ops = list[tuple[np.ndarray, int]]


# ----------------------------------------------------------------------------- silhouettes
def _ellipse(rx: float, ry: float, cx: float = 0.0, cy: float = 0.0, n: int = 72) -> np.ndarray:
    t = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], 1)


def _star(rng: np.random.Generator) -> Ops:
    k = int(rng.integers(5, 7))  # 5 or 6 points
    inner = rng.uniform(0.36, 0.5)
    t = np.arange(2 * k) * np.pi / k
    r = np.where(np.arange(2 * k) % 2 == 0, 1.0, inner)
    return [(np.stack([r * np.sin(t), -r * np.cos(t)], 1), 1)]


def _ring(rng: np.random.Generator) -> Ops:
    inner = rng.uniform(0.5, 0.72)  # 0.72: a thin band
    return [(_ellipse(1.0, 1.0), 1), (_ellipse(inner, inner), 0)]


def _cross(rng: np.random.Generator) -> Ops:
    w = rng.uniform(0.2, 0.33)  # half-width of the arms
    up, down, left, right = rng.uniform(0.75, 1.0, size=4)
    pts = [
        (w, -up),
        (w, -w),
        (right, -w),
        (right, w),
        (w, w),
        (w, down),
        (-w, down),
        (-w, w),
        (-left, w),
        (-left, -w),
        (-w, -w),
        (-w, -up),
    ]
    return [(np.array(pts, dtype=np.float64), 1)]


def _crescent(rng: np.random.Generator) -> Ops:
    ri = rng.uniform(0.78, 0.92)
    d = rng.uniform(0.32, 0.5)  # d + ri > 1: the cut opens the disc, leaving two horns
    return [(_ellipse(1.0, 1.0), 1), (_ellipse(ri, ri, cx=d), 0)]


def _gear(rng: np.random.Generator) -> Ops:
    teeth = int(rng.integers(8, 13))
    root = rng.uniform(0.72, 0.8)
    step = 2 * np.pi / teeth
    pts = []
    for k in range(teeth):  # trapezoid teeth: rise, top, fall, then the root until the next tooth
        a = k * step
        for da, r in ((0.0, root), (0.12, 1.0), (0.42, 1.0), (0.54, root)):
            pts.append((r * np.cos(a + da * step), r * np.sin(a + da * step)))
    hole = rng.uniform(0.22, 0.34)
    return [(np.array(pts), 1), (_ellipse(hole, hole), 0)]


def _arrow(rng: np.random.Generator) -> Ops:
    neck = rng.uniform(0.05, 0.35)  # where the head starts
    head = rng.uniform(0.42, 0.6)  # half-width of the head
    shaft = rng.uniform(0.1, 0.17)  # half-width of the (thin) shaft
    pts = [(-1, -shaft), (neck, -shaft), (neck, -head), (1, 0), (neck, head), (neck, shaft), (-1, shaft)]
    return [(np.array(pts, dtype=np.float64), 1)]


SILHOUETTES: dict[str, Callable[[np.random.Generator], Ops]] = {
    "star": _star,
    "ring": _ring,
    "cross": _cross,
    "crescent": _crescent,
    "gear": _gear,
    "arrow": _arrow,
}
assert list(SILHOUETTES) == CATEGORIES


# Distractors: unannotated clutter whose silhouettes are none of the categories (convex or
# smooth, no holes, no spikes), so they are separable from the objects by shape, not colour.
def _blob(rng: np.random.Generator) -> Ops:
    t = np.linspace(0.0, 2 * np.pi, 48, endpoint=False)
    r = 0.8 + sum(rng.uniform(0.0, 0.12) * np.cos(f * t + rng.uniform(0, 2 * np.pi)) for f in (2, 3))
    return [(np.stack([r * np.cos(t), r * np.sin(t)], 1), 1)]


def _oval(rng: np.random.Generator) -> Ops:
    return [(_ellipse(1.0, rng.uniform(0.3, 0.8)), 1)]


def _rectangle(rng: np.random.Generator) -> Ops:
    h = rng.uniform(0.3, 0.9)
    return [(np.array([(-1, -h), (1, -h), (1, h), (-1, h)], dtype=np.float64), 1)]


def _triangle(rng: np.random.Generator) -> Ops:
    a = np.pi / 2 + np.array([0.0, 2.1, 4.2]) + rng.uniform(-0.25, 0.25, size=3)
    return [(np.stack([np.cos(a), np.sin(a)], 1), 1)]


DISTRACTORS: list[Callable[[np.random.Generator], Ops]] = [_blob, _oval, _rectangle, _triangle]


# ----------------------------------------------------------------------------- rasterising
class _Shape:
    """One placed silhouette: its mask on a local canvas ``[h, w]`` at ``(x0, y0)`` (which may
    lie partly outside the image) and its full area in px, border cut included."""

    def __init__(self, local: np.ndarray, x0: int, y0: int):
        self.local, self.x0, self.y0 = local, x0, y0
        self.full_area = int(local.sum())

    def crop(self, size: int) -> tuple[tuple[slice, slice], np.ndarray]:
        """The image window ``(rows, cols)`` the shape covers and its mask there, clipped to
        the ``size x size`` image (may be empty)."""
        h, w = self.local.shape
        ya, yb = max(self.y0, 0), max(min(self.y0 + h, size), max(self.y0, 0))
        xa, xb = max(self.x0, 0), max(min(self.x0 + w, size), max(self.x0, 0))
        window = (slice(ya, yb), slice(xa, xb))
        return window, self.local[ya - self.y0 : yb - self.y0, xa - self.x0 : xb - self.x0]

    def in_image(self, size: int) -> np.ndarray:
        """The part inside the image as a bool ``[size, size]`` mask."""
        out = np.zeros((size, size), dtype=bool)
        window, sub = self.crop(size)
        out[window] = sub
        return out


def _place(ops: Ops, centre: tuple[float, float], radius: float, angle: float, aspect: float) -> _Shape:
    """Scale (with aspect), rotate and translate unit-coordinate ops, and rasterise them with
    PIL's polygon fill on a canvas just covering the shape (fill 0 cuts the holes)."""
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    scale = np.array([aspect, 1.0 / aspect]) * radius
    placed = [((p * scale) @ rot.T + np.asarray(centre), fill) for p, fill in ops]
    allpts = np.concatenate([p for p, fill in placed if fill])
    x0, y0 = np.floor(allpts.min(0)).astype(int) - 1
    x1, y1 = np.ceil(allpts.max(0)).astype(int) + 2
    canvas = Image.new("L", (int(x1 - x0), int(y1 - y0)), 0)
    draw = ImageDraw.Draw(canvas)
    for p, fill in placed:
        draw.polygon((p - (x0, y0)).ravel().tolist(), fill=fill)  # flat [x0, y0, x1, y1, ...]
    return _Shape(np.asarray(canvas, dtype=bool), int(x0), int(y0))


def _line(rng: np.random.Generator, size: int, width: float) -> _Shape:
    """A thick polyline across part of the image (unannotated clutter)."""
    pts = rng.uniform(-0.1, 1.1, size=(int(rng.integers(2, 4)), 2)) * size
    w = max(1, int(round(width)))
    x0, y0 = np.floor(pts.min(0)).astype(int) - w
    x1, y1 = np.ceil(pts.max(0)).astype(int) + w + 1
    canvas = Image.new("L", (int(x1 - x0), int(y1 - y0)), 0)
    ImageDraw.Draw(canvas).line([(float(x - x0), float(y - y0)) for x, y in pts], fill=1, width=w, joint="curve")
    return _Shape(np.asarray(canvas, dtype=bool), int(x0), int(y0))


# ----------------------------------------------------------------------------- appearance
def _upsampled_noise(rng: np.random.Generator, cells: int, h: int, w: int) -> np.ndarray:
    """Smooth colour noise: a ``cells x cells`` random RGB grid resized bicubically. ``[h, w, 3]`` 0..255."""
    small = rng.integers(0, 256, size=(cells, cells, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC), dtype=np.float32)


def _stripes(rng: np.random.Generator, h: int, w: int, period: float) -> np.ndarray:
    """``[h, w]`` in -1..1: a sinusoidal grating with a random direction and phase."""
    a = rng.uniform(0, np.pi)
    yy, xx = np.ogrid[0:h, 0:w]  # [h, 1], [1, w]
    phase = (xx * math.cos(a) + yy * math.sin(a)) * (2 * np.pi / period) + rng.uniform(0, 2 * np.pi)
    return np.sin(phase.astype(np.float32))


def _background(rng: np.random.Generator, size: int, textured: bool = True) -> np.ndarray:
    """Textured background ``[size, size, 3]`` float 0..255: low-frequency colour clouds, mixed
    with a grating or a checkerboard of a second colour and fine grain (only the clouds when
    not ``textured``)."""
    base = _upsampled_noise(rng, int(rng.integers(2, 7)), size, size)
    base = base * rng.uniform(0.4, 0.8) + rng.uniform(0, 255, size=3).astype(np.float32) * 0.4
    if not textured:
        return base.astype(np.float32, copy=False)
    kind = rng.integers(3)
    if kind == 0:
        pattern = _stripes(rng, size, size, rng.uniform(6, 30) * size / 320)[..., None]
    elif kind == 1:
        cell = max(4, int(rng.uniform(8, 40) * size / 320))
        yy, xx = np.ogrid[0:size, 0:size]
        pattern = (((yy // cell + xx // cell) % 2) * 2 - 1).astype(np.float32)[..., None]
    else:
        pattern = _upsampled_noise(rng, int(rng.integers(16, 48)), size, size)[..., :1] / 127.5 - 1.0
    colour = rng.uniform(0, 255, size=3).astype(np.float32)
    bg = base + rng.uniform(0.1, 0.35) * pattern * (colour - base)
    return bg.astype(np.float32, copy=False)


def _paint(
    canvas: np.ndarray, owner: np.ndarray, label: int, shape: _Shape, rng: np.random.Generator, min_contrast: float
) -> None:
    """Paint a textured, shaded fill into ``canvas`` ``[H, W, 3]`` where ``shape`` lies, and
    record ``label`` as the owner of those pixels in ``owner`` ``[H, W]``.

    The colour is redrawn (a few times) until it differs by at least ``min_contrast`` (RGB
    distance) from what is under the shape, so objects are separable from their surroundings
    by their edges but share colours with the clutter (colour alone does not tell them apart).
    """
    window, sub = shape.crop(canvas.shape[0])
    if not sub.any():
        return
    h, w = sub.shape
    region = canvas[window]  # a view: painting it paints the canvas
    under = region[sub].mean(0)  # [3]
    for _ in range(8):
        colour = rng.uniform(0, 255, size=3).astype(np.float32)
        if np.linalg.norm(colour - under) >= min_contrast:
            break
    kind = rng.integers(4)
    if kind == 0:  # flat
        fill = colour
    elif kind == 1:  # stripes of a darker/lighter shade
        fill = colour * (1 + rng.uniform(0.1, 0.3) * _stripes(rng, h, w, rng.uniform(3, 10))[..., None])
    elif kind == 2:  # mottled
        fill = colour + (_upsampled_noise(rng, int(rng.integers(3, 8)), h, w) - 127.5) * rng.uniform(0.1, 0.3)
    else:  # shaded (linear light across the object)
        a = rng.uniform(0, 2 * np.pi)
        yy, xx = np.ogrid[0:h, 0:w]
        ramp = (((xx - w / 2) * math.cos(a) + (yy - h / 2) * math.sin(a)) / max(h, w)).astype(np.float32)
        fill = colour * (1 + rng.uniform(0.2, 0.6) * ramp[..., None])
    np.copyto(region, fill, where=sub[..., None])
    np.copyto(owner[window], np.int16(label), where=sub)


def _lighting(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Global illumination: a gain, a linear light gradient, a vignette and a colour cast."""
    size = img.shape[0]
    xx = (np.arange(size, dtype=np.float32) / size - 0.5)[None, :]  # [1, W]
    yy = xx.T  # [H, 1]
    a = rng.uniform(0, 2 * np.pi)
    light = rng.uniform(0.75, 1.2) * (1 + rng.uniform(0, 0.5) * (xx * math.cos(a) + yy * math.sin(a)))
    light = light * (1 - rng.uniform(0, 0.5) * (xx**2 + yy**2))
    cast = rng.uniform(0.88, 1.12, size=3).astype(np.float32)
    return img * light[..., None] * cast


# ----------------------------------------------------------------------------- scene
def _areas(rng: np.random.Generator, n: int, size: int, min_area: float | None = None) -> np.ndarray:
    """Target full areas in px, log-uniform from 200 px (about 14^2) to 45 % of the image at
    320 px, scaling with the image area (never below 100 px). Crowded images hold smaller
    objects (as in COCO): above 5 instances the upper bound shrinks as 5/n, so large
    (> 96^2 px) objects come with few neighbours. Visible areas at 320 px come out about
    35 % COCO-small, 50 % medium, 15 % large. ``min_area`` (px) replaces the lower bound."""
    lo = max(100.0, 200.0 * (size / 320) ** 2) if min_area is None else float(min_area)
    hi = 0.45 * size * size * min(1.0, 5.0 / n)
    return np.exp(rng.uniform(math.log(lo), math.log(max(hi, 2 * lo)), size=n))


def _radius_for_area(ops: Ops, area: float) -> float:
    """The radius at which silhouette ``ops`` covers ``area`` px (its unit area measured by
    rasterising it at radius 32, within ~2 %; aspect changes keep the area)."""
    unit = _place(ops, (0.0, 0.0), 32.0, 0.0, 1.0).full_area / 32.0**2
    return math.sqrt(area / unit)


def _check_scene(size: int, max_instances: int, min_area: float | None) -> None:
    """One clear error for a bad scene argument (used by :func:`_render` and :func:`generate`)."""
    if size < MIN_SIZE:
        raise MaskkitError(f"synthetic image size must be at least {MIN_SIZE} px, got {size}")
    if not 1 <= max_instances <= MAX_INSTANCES:
        raise MaskkitError(f"max_instances must be in 1..{MAX_INSTANCES}, got {max_instances}")
    if min_area is not None and not 0 < min_area < 0.45 * size * size:
        raise MaskkitError(f"min_area must be in (0, {0.45 * size * size:.0f}) px for {size} px images, got {min_area}")


def render_image(
    rng: np.random.Generator,
    size: int,
    max_instances: int = MAX_INSTANCES,
    clutter: bool = True,
    min_area: float | None = None,
) -> tuple[np.ndarray, list[dict]]:
    """Render one scene (``max_instances``, ``clutter`` and ``min_area`` as in :func:`generate`).

    Returns the image ``uint8 [size, size, 3]`` RGB and its annotated instances, back to front,
    each ``dict(category=int (0-based index into CATEGORIES), mask=bool [size, size] visible
    (modal) mask, full_area=int px of the whole shape (border cut and occluded parts
    included), truncated=bool (cut by the image border), occluded=bool (partly hidden by
    something in front))``. At least 1 and at most ``max_instances`` instances.
    """
    image, instances, _ = _render(rng, size, max_instances, clutter, min_area)
    return image, instances


def _render(
    rng: np.random.Generator,
    size: int,
    max_instances: int = MAX_INSTANCES,
    clutter: bool = True,
    min_area: float | None = None,
) -> tuple[np.ndarray, list[dict], np.ndarray]:
    """:func:`render_image`, also returning who painted each pixel last: int16 ``[size, size]``,
    ``k + 1`` for instance ``k`` and 0 for background and clutter (tests check masks with it)."""
    _check_scene(size, max_instances, min_area)
    canvas = _background(rng, size, textured=clutter)
    owner = np.zeros((size, size), dtype=np.int16)
    # Unannotated clutter behind the objects: 2..8 distractor shapes and maybe a thick line
    # (none with clutter=False, whose background is only the smooth colour clouds).
    for _ in range(int(rng.integers(2, 9)) if clutter else 0):
        ops = DISTRACTORS[int(rng.integers(len(DISTRACTORS)))](rng)
        d = np.exp(rng.uniform(np.log(0.05 * size), np.log(0.4 * size)))
        shape = _place(ops, tuple(rng.uniform(0, size, 2)), d / 2, rng.uniform(0, 2 * np.pi), rng.uniform(0.8, 1.25))
        _paint(canvas, owner, 0, shape, rng, min_contrast=40)
    if clutter and rng.random() < 0.5:
        _paint(canvas, owner, 0, _line(rng, size, rng.uniform(2, 8) * size / 320), rng, min_contrast=40)
    # Maybe a thin line in front of the objects: an unannotated occluder.
    front = [
        _line(rng, size, rng.uniform(1.5, 4) * size / 320) for _ in range(int(rng.integers(0, 2)) if clutter else 0)
    ]

    while True:  # resample the layout in the (rare) case that every instance gets dropped
        n = int(rng.integers(1, max_instances + 1))
        cats = rng.integers(len(CATEGORIES), size=n)
        areas = _areas(rng, n, size, min_area)
        shapes = []
        for c, area in zip(cats, areas):
            ops = SILHOUETTES[CATEGORIES[c]](rng)
            radius = _radius_for_area(ops, area)
            # A third of the centres anywhere in the image (often cut by the border, but never
            # by more than about half, so the silhouette stays recognisable); the rest keep the
            # shape (extent <= 1.25 radius) inside when it fits.
            margin = 0.0 if rng.random() < 1 / 3 else min(1.25 * radius, size / 2)
            centre = tuple(rng.uniform(margin, size - margin, size=2))
            shapes.append(_place(ops, centre, radius, rng.uniform(0, 2 * np.pi), rng.uniform(0.8, 1.25)))
        # Decide visibility front to back; only kept instances occlude the ones behind them.
        occluder = np.zeros((size, size), dtype=bool)
        for shape in front:
            occluder |= shape.in_image(size)
        kept: list[tuple[int, np.ndarray, np.ndarray]] = []  # (index, full in-image mask, visible mask)
        for i in range(n - 1, -1, -1):
            full = shapes[i].in_image(size)
            visible = full & ~occluder
            area = int(visible.sum())
            if area >= MIN_VISIBLE_PX and area >= MIN_VISIBLE_FRACTION * shapes[i].full_area:
                kept.append((i, full, visible))
                occluder |= full
        if kept:
            break
    kept.reverse()  # back to front

    instances = []
    for k, (i, full, visible) in enumerate(kept):
        _paint(canvas, owner, k + 1, shapes[i], rng, min_contrast=60)
        in_image = int(full.sum())
        instances.append(
            dict(
                category=int(cats[i]),
                mask=visible,
                full_area=shapes[i].full_area,
                truncated=in_image < shapes[i].full_area,
                occluded=int(visible.sum()) < in_image,
            )
        )
    for shape in front:
        _paint(canvas, owner, 0, shape, rng, min_contrast=40)

    canvas = _lighting(rng, canvas)
    img = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0) * size / 320))
    # Sensor noise, uniform in +-k grey levels (numpy's Gaussian sampler costs 5x more per pixel).
    k = int(rng.integers(2, 9))
    out = np.asarray(img, dtype=np.int16) + rng.integers(-k, k + 1, size=(size, size, 3), dtype=np.int16)
    return np.clip(out, 0, 255).astype(np.uint8), instances, owner


# ----------------------------------------------------------------------------- COCO writer
def _annotation(inst: dict, ann_id: int, image_id: int) -> dict:
    rle = mask_utils.encode(np.asfortranarray(inst["mask"].astype(np.uint8)))
    x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))  # tight box of the visible mask, xywh
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": inst["category"] + 1,
        "segmentation": {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")},
        "area": int(inst["mask"].sum()),
        "bbox": [x, y, w, h],
        "iscrowd": 0,
    }


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator that draws image ``index`` (0-based) of ``split`` ("train"/"val"); it
    depends on nothing else, so splits and images are independent of the counts asked for."""
    return np.random.default_rng([seed, SPLITS[split], index])


def _write_split(
    out: Path,
    split: str,
    num: int,
    seed: int,
    size: int,
    progress: bool,
    max_instances: int,
    clutter: bool,
    min_area: float | None,
) -> None:
    image_dir = out / split
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index in tqdm(range(num), desc=f"synth {split}", unit="img", disable=not progress):
        image, instances = render_image(image_rng(seed, split, index), size, max_instances, clutter, min_area)
        image_id = index + 1
        file_name = f"{image_id:012d}.png"
        Image.fromarray(image).save(image_dir / file_name, compress_level=1)
        images.append({"id": image_id, "file_name": file_name, "width": size, "height": size})
        for inst in instances:
            annotations.append(_annotation(inst, len(annotations) + 1, image_id))
    coco = {
        "info": {
            "description": f"maskkit synthetic shapes ({split})",
            "version": "1.0",
            "contributor": "maskkit data synth",
            "seed": seed,
            "size": size,
            "max_instances": max_instances,
            "clutter": clutter,
            "min_area": min_area,
        },
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": k + 1, "name": name, "supercategory": "shape"} for k, name in enumerate(CATEGORIES)],
    }
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    (out / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco, separators=(",", ":")))


# Named scene settings for ``generate`` / ``maskkit data synth --scenes NAME``. "benchmark" is the
# full dataset (the synthetic benchmark protocol, benchmarks/synthetic_protocol.md); "demo" is the
# easier variant that ``maskkit demo`` trains on within its 10-minute budget: 128 px
# images with at most 3 instances, no unannotated clutter and untextured backgrounds, and objects
# of at least 700 px (so about a quarter are COCO-small instead of ~57 % at these settings).
SCENES: dict[str, dict] = {
    "benchmark": dict(size=320, max_instances=MAX_INSTANCES, clutter=True, min_area=None),
    "demo": dict(size=128, max_instances=3, clutter=False, min_area=700.0),
}


def scene_settings(name: str, **overrides) -> dict:
    """The ``generate`` keyword arguments of the named scenes, with every override that is not None
    put in their place (``maskkit data synth --scenes NAME --size ...``, the demo's plans)."""
    if name not in SCENES:
        raise MaskkitError(f"unknown scenes {name!r}; known: {', '.join(SCENES)}")
    return {**SCENES[name], **{k: v for k, v in overrides.items() if v is not None}}


def generate(
    out_dir: str | Path,
    num_train: int = 1000,
    num_val: int = 200,
    seed: int = 0,
    size: int = 320,
    progress: bool = True,
    max_instances: int = MAX_INSTANCES,
    clutter: bool = True,
    min_area: float | None = None,
) -> Path:
    """Write the dataset to ``out_dir`` (train and val splits, COCO layout; see the module
    docstring) and return ``out_dir`` as a Path. Deterministic: the same arguments write the
    same bytes. Images are ``size x size``.

    Three scene knobs make an easier variant (the defaults are the full dataset): at most
    ``max_instances`` (1..15) instances per image, which also makes objects larger on average
    (the size cap of crowded scenes shrinks as 5/n); ``min_area`` (px) to raise the smallest
    drawn object area (default: 200 px at 320 px, scaling with the image area), for fewer
    COCO-small objects; and ``clutter=False`` to drop the unannotated distractor shapes and
    lines and the background's texture (the smooth colour clouds, textured object fills,
    occlusion between instances, lighting, blur and noise stay)."""
    out = Path(out_dir)
    if num_train < 0 or num_val < 0:
        raise MaskkitError(f"image counts must be >= 0, got train={num_train} val={num_val}")
    if seed < 0:
        raise MaskkitError(f"seed must be >= 0, got {seed}")
    _check_scene(size, max_instances, min_area)  # before anything is written
    if out.exists() and not out.is_dir():
        raise MaskkitError(f"{out}: exists and is not a directory")
    try:
        for split, num in (("train", num_train), ("val", num_val)):
            _write_split(out, split, num, seed, size, progress, max_instances, clutter, min_area)
    except OSError as e:  # unwritable folder, full disk: one line naming the file
        raise MaskkitError(f"{e.filename or out}: cannot write the dataset ({e.strerror or e})") from None
    return out


# ----------------------------------------------------------------------------- CLI


def split_summary(ann_file: Path) -> str:
    """One line on a written split: images, instances, COCO size classes of the visible areas."""
    data = json.loads(ann_file.read_text())
    areas = np.array([a["area"] for a in data["annotations"]], dtype=np.float64)
    if areas.size == 0:
        return f"{len(data['images'])} images, no instances"
    small, large = (areas < 32**2).mean(), (areas > 96**2).mean()
    return (
        f"{len(data['images'])} images, {areas.size} instances "
        f"({small:.0%} small, {1 - small - large:.0%} medium, {large:.0%} large)"
    )
