"""COCO-format instance segmentation dataset (pycocotools), with validation of its input.

:class:`CocoDataset` reads an ``instances_*.json`` and an image folder and returns the data
contract of ``maskkit/structures.py`` as torchvision ``tv_tensors`` so that
``transforms.v2`` moves image, boxes and masks together::

    image:  tv_tensors.Image float32 [3, H, W] in 0..1, RGB (EXIF orientation applied)
    target: boxes    tv_tensors.BoundingBoxes XYXY float32 [N, 4] (canvas_size=(H, W))
            labels   int64 [N], contiguous 1..K (``label_to_cat_id`` maps back to the file's ids)
            masks    RLEMasks [N]: the instances' RLEs, pixels made per instance when needed
                     (``to_dense()`` -> uint8 [N, H, W]; ``dense_masks=True``: a
                     tv_tensors.Mask uint8 [N, H, W] instead)
            iscrowd  int64 [N]
            area     float32 [N] (the annotation's area, in the file's pixels, as COCO defines it)
            image_id int
            orig_size (H, W) of the image file, before any transform
            polygons       PolygonVertices float64 [V, 2]: every vertex of the polygon
                           annotations (``polygons=True``, the default)
            polygon_parts  int64 [P, 2]: (annotation index, vertex count) of each part, in order
            ann_index      int64 [N]: each instance's index in the image's annotation list
                           (filtered with the boxes; RLE instances have no parts)

The three polygon entries let CenterMask rasterise its training mask targets from the exactly
transformed polygons, as the official code does (:func:`maskkit.structures.instance_polygons`
turns them into the per-instance ``polygons`` list of the data contract).

Crowd annotations (``iscrowd=1``, usually RLE over a group of objects) are KEPT in the target
with ``iscrowd=1``: their boxes/masks are ignore regions for the losses and never positives.

Segmentations may be polygons, uncompressed RLE (``counts`` a list) or compressed RLE
(``counts`` a string). Category ids may be any distinct integers (COCO's are 1..90 with
gaps); they are mapped, sorted, to contiguous labels 1..K and back.

Bad input raises one :class:`maskkit.errors.DataError` naming the file and the problem (not
COCO instances JSON, annotations pointing at unknown images or categories, RLE of the wrong
size, missing or unreadable images). Degenerate annotations (polygons with fewer than 3
points, boxes of zero area or wholly outside the image) are dropped with one counted warning
per dataset, and also removed from ``dataset.coco`` so that evaluation sees the same ground
truth as training.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from torchvision import tv_tensors

from maskkit.data.images import PIXEL_LIMIT_ENV, load_image, pil_to_tensor  # noqa: F401 (re-exported)
from maskkit.data.rle_masks import RLEMasks
from maskkit.data.transforms import PolygonVertices
from maskkit.errors import DataError
from maskkit.structures import rle_problem

__all__ = [
    "CocoDataset",
    "validate_instances",
    "load_instances",
    "load_image",
    "resolve_data",
    "open_split",
    "collate",
]

# --------------------------------------------------------------------------- images


OUTSIDE_IMAGES_ENV = "MASKKIT_ALLOW_OUTSIDE_IMAGES"  # file_name values with ../ or absolute paths


# --------------------------------------------------------------------------- annotation file


def read_instances_json(ann_file: Path) -> dict:
    """Parse and structurally check a COCO instances JSON; DataError naming the file."""
    if not ann_file.is_file():
        raise DataError(f"{ann_file}: annotation file not found")
    try:
        with open(ann_file, "rb") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{ann_file}: not a JSON file ({e})") from None
    except (RecursionError, ValueError) as e:  # nesting deeper than the parser's stack, or a 5000-digit integer
        raise DataError(
            f"{ann_file}: not usable JSON ({type(e).__name__}: too deeply nested or a number too large)"
        ) from None
    except OSError as e:
        raise DataError(f"{ann_file}: cannot read ({e.strerror or e})") from None
    if not isinstance(data, dict):
        raise DataError(f"{ann_file}: not COCO instances JSON (top level is a {type(data).__name__}, not an object)")
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(data.get(k), list)]
    if missing:
        raise DataError(
            f"{ann_file}: not COCO instances JSON (missing or non-list key(s) {', '.join(missing)}; "
            "expected 'images', 'annotations' and 'categories' lists)"
        )
    return data


def _check_images(ann_file: Path, images: list) -> None:
    seen: set[int] = set()
    for k, img in enumerate(images):
        if not isinstance(img, dict) or not all(key in img for key in ("id", "file_name", "height", "width")):
            raise DataError(f"{ann_file}: images[{k}] needs 'id', 'file_name', 'height' and 'width'")
        if not isinstance(img["id"], int) or isinstance(img["id"], bool):
            raise DataError(f"{ann_file}: images[{k}] has a non-integer id {img['id']!r} (COCO image ids are integers)")
        if img["id"] in seen:
            raise DataError(f"{ann_file}: duplicate image id {img['id']}")
        h, w = img["height"], img["width"]
        if not all(isinstance(v, (int, float)) and float(v).is_integer() and v > 0 for v in (h, w)):
            raise DataError(f"{ann_file}: image {img['id']} has an invalid size {h!r}x{w!r}")
        img["height"], img["width"] = int(h), int(w)
        seen.add(img["id"])


def _check_categories(ann_file: Path, categories: list) -> None:
    if not categories:
        raise DataError(f"{ann_file}: 'categories' is empty (need at least one category)")
    seen: set[int] = set()
    for k, cat in enumerate(categories):
        if not isinstance(cat, dict) or not isinstance(cat.get("id"), int) or isinstance(cat.get("id"), bool):
            raise DataError(f"{ann_file}: categories[{k}] needs an integer 'id'")
        if cat["id"] in seen:
            raise DataError(f"{ann_file}: duplicate category id {cat['id']}")
        seen.add(cat["id"])


def _clean_polygons(segm: list) -> list | None:
    """Keep polygon parts with >= 3 points (an even number >= 6 of coordinates); None if
    nothing is left. COCO polygons are ``[[x0, y0, x1, y1, ...], ...]``."""
    parts = [p for p in segm if isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0]
    return parts or None


def _polygon_problem(parts: list, h: int, w: int) -> str | None:
    """What is wrong with a polygon's coordinates (None when usable): not numbers, NaN or
    infinite, or beyond one image size outside the image (x, y outside ``[-S, 2S]``, ``S`` the
    longer side). Parts reaching a little past the border are fine (rasterisation keeps what is
    inside, as COCO's); far-out or absurd values would only stall the rasteriser. A few C-level
    passes per part (sum, min, max), so COCO train's 860k polygons cost about a second."""
    side = float(max(h, w))
    for p in parts:
        try:
            total, lo, hi = sum(p), min(p), max(p)
        except TypeError:
            return "polygon coordinates must be numbers"
        if not math.isfinite(total):  # NaN or infinity somewhere (or finite values so large they overflow)
            bad = next((v for v in p if not math.isfinite(v)), None)
            if bad is not None:
                return f"polygon coordinate {bad} is not a finite number"
        if lo < -side or hi > 2 * side:
            far = lo if lo < -side else hi
            return (
                f"polygon coordinate {far:g} is far outside the {h}x{w} image "
                f"(coordinates must lie in {-side:g}..{2 * side:g})"
            )
    return None


def _check_annotation(ann_file: Path, ann: dict, img: dict) -> str | None:
    """Validate one annotation in place (polygons cleaned, bbox filled from the mask when
    absent). Returns a reason string when it is degenerate (to be dropped), raises DataError
    when it is malformed."""
    aid = ann["id"]
    h, w = img["height"], img["width"]
    segm = ann.get("segmentation")
    if isinstance(segm, list):
        cleaned = _clean_polygons(segm)
        if cleaned is None:
            return "polygon with fewer than 3 points"
        problem = _polygon_problem(cleaned, h, w)
        if problem is not None:
            raise DataError(f"{ann_file}: annotation {aid} (image {img['id']}, {img['file_name']}): {problem}")
        ann["segmentation"] = cleaned
    elif isinstance(segm, dict):
        problem = rle_problem(segm, h, w)  # before pycocotools sees it: it hangs on bad runs
        if problem is not None:
            raise DataError(f"{ann_file}: annotation {aid} (image {img['id']}, {img['file_name']}): {problem}")
    else:
        raise DataError(
            f"{ann_file}: annotation {aid}: 'segmentation' must be a polygon list or an RLE dict, "
            f"got {type(segm).__name__}"
        )
    if "bbox" not in ann or "area" not in ann:  # some writers omit them: take the mask's
        rle = _segm_to_rle(ann["segmentation"], h, w)
        ann.setdefault("bbox", [float(v) for v in mask_utils.toBbox(rle)])
        ann.setdefault("area", float(mask_utils.area(rle)))
    bbox = ann["bbox"]
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
        raise DataError(f"{ann_file}: annotation {aid}: 'bbox' must be [x, y, width, height], got {bbox!r}")
    if not all(math.isfinite(v) for v in bbox):
        return "non-finite box"
    x, y, bw, bh = bbox
    if bw <= 0 or bh <= 0:
        return "box of zero area"
    if min(x + bw, w) - max(x, 0) <= 0 or min(y + bh, h) - max(y, 0) <= 0:
        return "box outside the image"
    return None


def _pack_polygons(anns: list[dict], h: int, w: int) -> dict[str, Any]:
    """The polygon annotations of one image as ``polygons`` / ``polygon_parts`` / ``ann_index``
    (module docstring); coordinates in float64 as detectron2's ``PolygonMasks``."""
    verts, parts = [], []
    for k, a in enumerate(anns):
        if isinstance(a["segmentation"], list):
            for p in a["segmentation"]:
                verts.extend(p)
                parts.append((k, len(p) // 2))
    return {
        "polygons": PolygonVertices(torch.tensor(verts, dtype=torch.float64).reshape(-1, 2), canvas_size=(h, w)),
        "polygon_parts": torch.tensor(parts, dtype=torch.int64).reshape(-1, 2),
        "ann_index": torch.arange(len(anns), dtype=torch.int64),
    }


def _segm_to_rle(segm: list | dict, h: int, w: int) -> dict:
    """Polygon list / uncompressed RLE / compressed RLE -> one compressed RLE (pycocotools)."""
    if isinstance(segm, list):
        return mask_utils.merge(mask_utils.frPyObjects(segm, h, w))
    if isinstance(segm["counts"], list):
        return mask_utils.frPyObjects(segm, h, w)
    counts = segm["counts"]
    return {"size": segm["size"], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


def validate_instances(ann_file: Path, data: dict) -> int:
    """The one ground-truth check, for training, ``eval`` and ``eval --predictions`` alike:
    images (ids, sizes), categories, annotations (unique ids, known image/category ids, RLE
    size and runs, polygons); degenerate annotations (polygons under 3 points, empty boxes) are
    dropped from ``data`` with one warning. Returns how many were dropped; raises
    :class:`DataError` naming the file and annotation."""
    f = ann_file
    _check_images(f, data["images"])
    _check_categories(f, data["categories"])
    imgs = {img["id"]: img for img in data["images"]}
    cat_ids = {c["id"] for c in data["categories"]}
    kept, dropped, seen = [], {}, set()
    for k, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or "id" not in ann:
            raise DataError(f"{f}: annotations[{k}] has no 'id'")
        aid = ann["id"]
        if aid in seen:
            raise DataError(f"{f}: duplicate annotation id {aid}")
        seen.add(aid)
        if ann.get("image_id") not in imgs:
            raise DataError(f"{f}: annotation {aid} refers to unknown image_id {ann.get('image_id')!r}")
        if ann.get("category_id") not in cat_ids:
            raise DataError(f"{f}: annotation {aid} refers to unknown category_id {ann.get('category_id')!r}")
        reason = _check_annotation(f, ann, imgs[ann["image_id"]])
        if reason is None:
            ann.setdefault("iscrowd", 0)
            kept.append(ann)
        else:
            dropped[aid] = reason
    data["annotations"] = kept
    if dropped:
        shown = ", ".join(str(a) for a in list(dropped)[:8]) + (", ..." if len(dropped) > 8 else "")
        reasons = sorted(set(dropped.values()))
        warnings.warn(
            f"{f.name}: dropped {len(dropped)} degenerate annotation(s) (ids {shown}): {'; '.join(reasons)}",
            stacklevel=3,
        )
    return len(dropped)


def load_instances(ann_file: str | Path) -> COCO:
    """A validated (:func:`validate_instances`) and indexed pycocotools ``COCO`` of ``ann_file``."""
    ann_file = Path(ann_file)
    data = read_instances_json(ann_file)
    validate_instances(ann_file, data)
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
        coco.createIndex()
    return coco


# --------------------------------------------------------------------------- dataset


class CocoDataset(torch.utils.data.Dataset):
    """A COCO-format instance segmentation dataset (see the module docstring for the target).

    Args:
        ann_file: ``instances_*.json``.
        image_dir: folder the images' ``file_name`` are relative to.
        transforms: callable ``(image, target) -> (image, target)`` on tv_tensors (e.g.
            :func:`maskkit.data.transforms.build_train_transforms`).
        skip_crowd_only: leave out images whose only annotations are crowd regions.
        remove_images_without_annotations: leave out images with no annotation at all
            (after degenerate ones are dropped).
        dense_masks: ``masks`` as a dense ``tv_tensors.Mask`` ``[N, H, W]`` (for transforms other
            than resize and horizontal flip) instead of :class:`RLEMasks` (an image with many
            annotations takes gigabytes as dense masks).

    Attributes: ``coco`` (pycocotools COCO of the ground truth, less the dropped degenerate
    annotations; for COCOeval), ``image_ids``, ``class_names`` (``class_names[label-1]``),
    ``cat_ids`` (``cat_ids[label-1]`` = the file's category id), ``label_to_cat_id``,
    ``cat_id_to_label``, ``ann_file``, ``image_dir``, ``num_dropped`` (degenerate annotations).
    """

    def __init__(
        self,
        ann_file: str | Path,
        image_dir: str | Path,
        transforms: Callable | None = None,
        skip_crowd_only: bool = False,
        remove_images_without_annotations: bool = False,
        polygons: bool = True,
        dense_masks: bool = False,
    ) -> None:
        self.ann_file = Path(ann_file)
        self.image_dir = Path(image_dir)
        self.transforms = transforms
        self.polygons = polygons
        self.dense_masks = dense_masks
        if not self.image_dir.is_dir():
            raise DataError(f"{self.image_dir}: image folder not found")
        data = read_instances_json(self.ann_file)
        self._validate(data)
        self.coco = COCO()
        self.coco.dataset = data
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
            self.coco.createIndex()

        cats = sorted(data["categories"], key=lambda c: c["id"])
        self.cat_ids: list[int] = [c["id"] for c in cats]
        self.class_names: list[str] = [str(c.get("name", c["id"])) for c in cats]
        self.cat_id_to_label: dict[int, int] = {cid: k + 1 for k, cid in enumerate(self.cat_ids)}
        self.label_to_cat_id: dict[int, int] = {k + 1: cid for k, cid in enumerate(self.cat_ids)}

        ids = sorted(self.coco.imgs)
        if skip_crowd_only or remove_images_without_annotations:
            keep = []
            for i in ids:
                anns = self.coco.imgToAnns.get(i, [])
                if remove_images_without_annotations and not anns:
                    continue
                if skip_crowd_only and anns and all(a.get("iscrowd", 0) for a in anns):
                    continue
                keep.append(i)
            ids = keep
        self.image_ids: list[int] = ids
        self._check_files_exist()

    # -- validation at load time (cheap checks only; pixels are read in __getitem__)

    def _validate(self, data: dict) -> None:
        self.num_dropped = validate_instances(self.ann_file, data)

    def _check_files_exist(self) -> None:
        present = {p.name for p in self.image_dir.iterdir()}
        missing = []
        outside_ok = os.environ.get(OUTSIDE_IMAGES_ENV) == "1"
        for i in self.image_ids:
            name = self.coco.imgs[i]["file_name"]
            if not outside_ok and (Path(name).is_absolute() or ".." in Path(name).parts):
                raise DataError(
                    f"{self.ann_file}: image {i}'s file_name {name!r} points outside {self.image_dir}; "
                    f"set {OUTSIDE_IMAGES_ENV}=1 to allow it"
                )
            if name not in present and not (self.image_dir / name).is_file():
                missing.append(name)
        if missing:
            shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
            raise DataError(
                f"{self.ann_file}: {len(missing)} of {len(self.image_ids)} image file(s) not found in "
                f"{self.image_dir} ({shown})"
            )

    # -- access

    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def num_classes(self) -> int:
        return len(self.cat_ids)

    def image_info(self, i: int) -> dict:
        """The JSON entry (id, file_name, height, width, ...) of the ``i``-th image."""
        return self.coco.imgs[self.image_ids[i]]

    def load_image(self, i: int) -> torch.Tensor:
        """The ``i``-th image as float32 ``[3, H, W]`` in 0..1, RGB, EXIF-transposed; its size
        must match the JSON's height/width (else DataError naming both)."""
        info = self.image_info(i)
        path = self.image_dir / info["file_name"]
        image = load_image(path)
        h, w = image.shape[-2:]
        if (h, w) != (info["height"], info["width"]):
            hint = " (the file's EXIF orientation rotates it)" if (w, h) == (info["height"], info["width"]) else ""
            raise DataError(
                f"{path}: image size {h}x{w} differs from the annotation file's {info['height']}x{info['width']}"
                f" for image {info['id']}{hint}"
            )
        return image

    def load_target(self, i: int) -> dict[str, Any]:
        """The ``i``-th image's target (see the module docstring), before transforms."""
        info = self.image_info(i)
        h, w = info["height"], info["width"]
        anns = self.coco.imgToAnns.get(info["id"], [])
        n = len(anns)
        boxes = torch.zeros((n, 4), dtype=torch.float32)
        if n:
            xywh = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32)  # [N, 4]
            boxes = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1)
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
        try:
            rles = [_segm_to_rle(a["segmentation"], h, w) for a in anns]
            if self.dense_masks:
                with warnings.catch_warnings():  # pycocotools' own numpy-2 DeprecationWarning
                    warnings.simplefilter("ignore", DeprecationWarning)
                    decoded = mask_utils.decode(rles) if rles else np.zeros((h, w, 0), np.uint8)  # [H, W, N]
                masks = tv_tensors.Mask(torch.from_numpy(decoded).permute(2, 0, 1).contiguous())  # [N, H, W]
            else:
                masks = RLEMasks(rles, (h, w))
        except (ValueError, TypeError, OverflowError) as e:
            raise DataError(f"{self.ann_file}: image {info['id']}: cannot decode a segmentation ({e})") from None
        target = {
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(h, w)),
            "labels": torch.tensor([self.cat_id_to_label[a["category_id"]] for a in anns], dtype=torch.int64),
            "masks": masks,
            "iscrowd": torch.tensor([int(bool(a.get("iscrowd", 0))) for a in anns], dtype=torch.int64),
            "area": torch.tensor([float(a["area"]) for a in anns], dtype=torch.float32),
            "image_id": int(info["id"]),
            "orig_size": (int(h), int(w)),
        }
        if self.polygons:
            try:
                target.update(_pack_polygons(anns, h, w))
            except (TypeError, ValueError) as e:
                raise DataError(
                    f"{self.ann_file}: image {info['id']}: polygon coordinates are not numbers ({e})"
                ) from None
        return target

    def __getitem__(self, i: int) -> tuple[tv_tensors.Image, dict[str, Any]]:
        image = tv_tensors.Image(self.load_image(i))
        target = self.load_target(i)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def __repr__(self) -> str:
        return (
            f"CocoDataset({self.ann_file.name}: {len(self)} images, {len(self.coco.anns)} annotations, "
            f"{self.num_classes} classes, images in {self.image_dir})"
        )


def collate(batch: list[tuple[torch.Tensor, dict]]) -> tuple[list, list]:
    """DataLoader ``collate_fn``: images differ in size, so keep lists (images, targets)."""
    images = [b[0] for b in batch]
    targets = [b[1] for b in batch]
    return images, targets


# --------------------------------------------------------------------------- locating data


def resolve_data(
    data: str | Path | None,
    split: str,
    ann: str | Path | None = None,
    images: str | Path | None = None,
) -> tuple[Path, Path]:
    """Find ``(annotation json, image folder)`` for ``split``.

    Explicit ``ann`` + ``images`` win. Otherwise ``data`` is a COCO-style root: the json is
    ``annotations/instances_<split>*.json`` (or ``instances_<split>*.json`` in the root
    itself; an exact ``instances_<split>.json`` is preferred over longer names) and the image
    folder is ``<split><suffix>/`` beside it, where ``<suffix>`` is what follows the split in
    the json name (``instances_val2017.json`` -> ``val2017/``; ``instances_val.json`` -> ``val/``),
    also looked for under ``images/``. DataError lists what was looked for.
    """
    if ann is not None or images is not None:
        if ann is None or images is None:
            raise DataError("--ann FILE and --images DIR must be given together")
        ann, images = Path(ann), Path(images)
        if not ann.is_file():
            raise DataError(f"{ann}: annotation file not found")
        if not images.is_dir():
            raise DataError(f"{images}: image folder not found")
        return ann, images
    if data is None:
        raise DataError("no dataset given: pass --data DIR (a COCO-style root) or --ann FILE --images DIR")
    root = Path(data)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found")
    looked = [root / "annotations" / f"instances_{split}*.json", root / f"instances_{split}*.json"]
    ann_file = None
    for pattern in looked:
        matches = sorted(pattern.parent.glob(pattern.name)) if pattern.parent.is_dir() else []
        exact = [m for m in matches if m.name == f"instances_{split}.json"]
        if exact:
            ann_file = exact[0]
        elif len(matches) == 1:
            ann_file = matches[0]
        elif len(matches) > 1:
            names = ", ".join(m.name for m in matches)
            raise DataError(
                f"{root}: several annotation files match split {split!r} ({names}); "
                f"pass e.g. --split {matches[0].stem[10:]}"
            )
        if ann_file is not None:
            break
    if ann_file is None:
        raise DataError(
            f"{root}: no annotations for split {split!r} (looked for {' and '.join(str(p) for p in looked)})"
        )
    folder = ann_file.stem[len("instances_") :]  # e.g. "val2017"
    candidates = []
    for base in (root, root / "images"):
        candidates += [base / folder, base / split]
    for c in dict.fromkeys(candidates):
        if c.is_dir():
            return ann_file, c
    raise DataError(
        f"{root}: found {ann_file.name} but no image folder for it (looked for "
        f"{', '.join(str(c) + '/' for c in dict.fromkeys(candidates))}); pass --images DIR"
    )


def open_split(
    data: str | Path | None,
    split: str,
    ann: str | Path | None = None,
    images: str | Path | None = None,
    transforms: Callable | None = None,
) -> CocoDataset:
    """The :class:`CocoDataset` of ``split`` under the COCO-style root ``data`` (or the explicit
    ``ann`` + ``images``), located by :func:`resolve_data`."""
    ann_file, image_dir = resolve_data(data, split, ann, images)
    return CocoDataset(ann_file, image_dir, transforms=transforms)
