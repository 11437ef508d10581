"""Results format: data-contract predictions <-> COCO results JSON, and its validation.

One JSON file valid for ``COCO.loadRes``: one dict per instance with ``image_id``,
``category_id`` (the dataset's own id), ``bbox`` (xywh floats), ``score`` (box score) and, for
models with masks, ``segmentation`` (RLE, counts as str) and ``segm_score`` (the mask score:
MaskIoU-rescored where the model predicts it, else the box score). Box AP ranks by ``score``;
mask AP drops the ``bbox`` and ranks by ``segm_score``.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools.coco import COCO

from maskkit.atomic import atomic_write_text
from maskkit.errors import MaskkitError
from maskkit.structures import masks_to_rle, rle_problem

__all__ = ["predictions_to_coco_results", "check_results", "load_results", "write_results"]


def predictions_to_coco_results(
    predictions: list[dict],
    image_ids: list[int],
    label_to_cat_id: dict[int, int] | None,
    mask_threshold: float = 0.5,
) -> list[dict]:
    """Data-contract predictions -> COCO results (one dict per instance, see module doc).

    ``predictions[i]`` belongs to ``image_ids[i]``: ``boxes [N,4]`` xyxy px, ``labels [N]``,
    ``scores [N]``, optional ``masks [N,1,H,W]`` (a compact :class:`maskkit.masks.BoxMasks`,
    encoded one mask at a time at its own threshold; or dense probabilities binarised at
    ``>= mask_threshold``, or binary) and ``mask_scores [N]``. ``label_to_cat_id`` maps the
    model's contiguous labels to the dataset's category ids (``None``: labels are the ids).
    """
    if len(predictions) != len(image_ids):
        raise MaskkitError(
            f"predictions_to_coco_results: {len(predictions)} predictions for {len(image_ids)} image ids"
        )
    results: list[dict] = []
    for pred, image_id in zip(predictions, image_ids):
        boxes = torch.as_tensor(pred["boxes"]).detach().to("cpu", torch.float64).reshape(-1, 4)
        n = boxes.shape[0]
        if n == 0:
            continue
        labels = torch.as_tensor(pred["labels"]).detach().cpu().reshape(-1).tolist()
        scores = torch.as_tensor(pred["scores"]).detach().cpu().to(torch.float64).reshape(-1).tolist()
        xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()  # [N, 4]
        rles = None
        if pred.get("masks") is not None:
            rles = masks_to_rle(pred["masks"], threshold=mask_threshold)
            if len(rles) != n:
                raise MaskkitError(f"image {image_id}: {len(rles)} masks for {n} boxes")
        mask_scores = pred.get("mask_scores")
        mask_scores = (
            scores
            if mask_scores is None
            else torch.as_tensor(mask_scores).detach().cpu().to(torch.float64).reshape(-1).tolist()
        )
        for j in range(n):
            label = int(labels[j])
            if label_to_cat_id is None:
                cat_id = label
            elif label in label_to_cat_id:
                cat_id = int(label_to_cat_id[label])
            else:
                raise MaskkitError(f"image {image_id}: label {label} has no category id in label_to_cat_id")
            r = {"image_id": int(image_id), "category_id": cat_id, "bbox": xywh[j], "score": float(scores[j])}
            if rles is not None:
                r["segmentation"] = rles[j]
                r["segm_score"] = float(mask_scores[j])
            results.append(r)
    return results


def _finite_number(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def _integer(x: Any) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def check_results(results: Any, coco_gt: COCO, source: str = "results", check_categories: bool = True) -> None:
    """Raise one :class:`MaskkitError` naming ``source`` and the first problem in ``results``:
    not a list of dicts, missing/ill-typed fields, image ids not in the ground truth, unknown
    category ids (unless ``check_categories`` is off, as for class-agnostic proposals), RLE
    size different from the image size."""
    if not isinstance(results, list):
        raise MaskkitError(f"{source}: expected a JSON list of COCO results, got {type(results).__name__}")
    images = coco_gt.imgs
    cats = coco_gt.cats
    for i, r in enumerate(results):
        where = f"{source}: result {i}"
        if not isinstance(r, dict):
            raise MaskkitError(f"{where}: expected an object with image_id/category_id/score, got {type(r).__name__}")
        image_id = r.get("image_id")
        if not _integer(image_id):
            raise MaskkitError(f"{where}: missing or non-integer 'image_id'")
        if image_id not in images:
            raise MaskkitError(f"{where}: image_id {image_id} is not in the ground-truth annotations")
        if check_categories:
            cat = r.get("category_id")
            if not _integer(cat):
                raise MaskkitError(f"{where}: missing or non-integer 'category_id'")
            if cat not in cats:
                raise MaskkitError(
                    f"{where}: category_id {cat} is not a category of the ground truth "
                    f"(known: {sorted(cats)[:10]}{'...' if len(cats) > 10 else ''})"
                )
        if not _finite_number(r.get("score")):
            raise MaskkitError(f"{where}: missing or non-finite 'score'")
        if "segm_score" in r and not _finite_number(r["segm_score"]):
            raise MaskkitError(f"{where}: non-finite 'segm_score'")
        if "bbox" not in r and "segmentation" not in r:
            raise MaskkitError(f"{where}: has neither 'bbox' nor 'segmentation'")
        if "bbox" in r:
            b = r["bbox"]
            if not (
                isinstance(b, list) and len(b) == 4 and all(_finite_number(v) for v in b) and b[2] >= 0 and b[3] >= 0
            ):
                raise MaskkitError(f"{where}: 'bbox' must be [x, y, w, h] finite numbers with w, h >= 0, got {b!r}")
        if "segmentation" in r:
            s = r["segmentation"]
            if not (
                isinstance(s, dict) and isinstance(s.get("counts"), (str, bytes)) and isinstance(s.get("size"), list)
            ):
                raise MaskkitError(
                    f"{where}: 'segmentation' must be a compressed RLE {{'size': [h, w], 'counts': str}}"
                )
            img = images[image_id]
            # before pycocotools sees it: its decoder loops forever on runs that miss h x w
            problem = rle_problem(s, img.get("height"), img.get("width")) if "height" in img else rle_problem(s)
            if problem is not None:
                raise MaskkitError(f"{where} (image {image_id}): {problem}")


def load_results(path: str | os.PathLike) -> list:
    """Read a COCO results JSON; :class:`MaskkitError` naming the file when it is missing, not
    JSON, or not a list."""
    path = Path(path)
    if not path.is_file():
        raise MaskkitError(f"{path}: predictions file not found")
    try:
        with open(path, encoding="utf-8") as f:
            results = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MaskkitError(f"{path}: predictions file is not valid JSON ({e})") from None
    except (RecursionError, ValueError) as e:  # nesting deeper than the parser's stack, or a 5000-digit integer
        raise MaskkitError(
            f"{path}: predictions file is not usable JSON ({type(e).__name__}: too deeply nested or a number too large)"
        ) from None
    if not isinstance(results, list):
        raise MaskkitError(
            f"{path}: predictions file must hold a JSON list of COCO results, got {type(results).__name__}"
        )
    return results


def write_results(results: list[dict], path: str | os.PathLike) -> Path:
    """A COCO results JSON at ``path`` (atomic); numpy scalars are written as numbers."""

    def default(o: Any) -> Any:
        if isinstance(o, np.generic):
            return o.item()
        raise TypeError(f"write_results: {type(o).__name__} is not JSON-serialisable")

    return atomic_write_text(Path(path), json.dumps(results, default=default))
