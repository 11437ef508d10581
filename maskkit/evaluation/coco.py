"""COCO evaluation: box and mask AP (CenterMask), class-agnostic proposal AR (SharpMask).

Figures come from pycocotools' COCOeval, the official protocol, and are returned as one flat
dict of named floats in 0..1 (``bbox/AP``, ``segm/AP50``, ``proposals/segm/AR@100``, ...). A
figure COCOeval cannot define (it reports -1: no ground truth in that area range or category)
is ``nan`` here and ``null`` in ``metrics.json``. This package scores; it runs no model
(:mod:`maskkit.engine.inference` does, then calls these functions).
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path
from typing import Iterable

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from maskkit.data.coco import load_instances
from maskkit.errors import MaskkitError
from maskkit.evaluation.results import check_results

__all__ = ["STAT_NAMES", "IOU_TYPES", "load_coco_gt", "evaluate_coco", "evaluate_proposals", "proposal_recall_curve"]

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
AREA_SUFFIX = ("", "s", "m", "l")  # COCOeval's default areaRng order: all, small, medium, large
IOU_TYPES = ("bbox", "segm")


# --------------------------------------------------------------------------- loading
def load_coco_gt(ann_file: str | os.PathLike) -> COCO:
    """Read a COCO annotation file with the data layer's one validation
    (:func:`maskkit.data.coco.validate_instances`: ids, sizes, RLE runs, polygons), quietly;
    :class:`DataError` naming the file and annotation."""
    return load_instances(Path(ann_file))


def _as_coco(coco_gt: COCO | str | os.PathLike) -> COCO:
    return coco_gt if isinstance(coco_gt, COCO) else load_coco_gt(coco_gt)


# --------------------------------------------------------------------------- COCOeval plumbing
def _results_for(results: list[dict], iou_type: str, source: str, agnostic_category: int | None = None) -> list[dict]:
    """Copies of ``results`` for one IoU type, so that ``loadRes`` takes the branch we mean:
    bbox -> box + box score; segm -> RLE only (loadRes would otherwise take the box area as the
    mask's area) ranked by ``segm_score``. ``loadRes`` writes into the dicts: hence copies.

    ``agnostic_category``: give every result this (ground-truth) category id. Even with
    ``useCats = 0`` COCOeval only collects results whose id is in ``params.catIds`` (the
    ground truth's), so class-agnostic proposals labelled 1 would silently score 0 on a
    dataset without category 1."""
    key = "bbox" if iou_type == "bbox" else "segmentation"
    out = []
    for i, r in enumerate(results):
        if key not in r:
            raise MaskkitError(f"{source}: result {i} has no '{key}': cannot evaluate {iou_type}")
        score = r.get("segm_score", r["score"]) if iou_type == "segm" else r["score"]
        cat = r.get("category_id") if agnostic_category is None else agnostic_category
        out.append({"image_id": r["image_id"], "category_id": cat, key: r[key], "score": score})
    return out


def _load_dt(coco_gt: COCO, results: list[dict]) -> COCO:
    """``coco_gt.loadRes`` that also accepts an empty list (loadRes indexes ``anns[0]``)."""
    with contextlib.redirect_stdout(io.StringIO()):
        if results:
            return coco_gt.loadRes(results)
        dt = COCO()
        dt.dataset = {
            "images": list(coco_gt.dataset["images"]),
            "categories": list(coco_gt.dataset["categories"]),
            "annotations": [],
        }
        dt.createIndex()
        return dt


def _check_image_ids(coco_gt: COCO, image_ids: Iterable[int] | None) -> list[int]:
    if image_ids is None:
        return sorted(coco_gt.getImgIds())
    ids = sorted({int(i) for i in image_ids})
    missing = [i for i in ids if i not in coco_gt.imgs]
    if missing:
        raise MaskkitError(f"image ids {missing[:5]} are not in the ground-truth annotations")
    return ids


def _nan_if_undefined(x: float) -> float:
    """COCOeval reports -1 where a figure is undefined (no ground truth): nan here."""
    return float("nan") if x < 0 else float(x)


def _run_cocoeval(
    coco_gt: COCO, coco_dt: COCO, iou_type: str, image_ids: list[int], use_cats: bool, max_dets: list[int] | None = None
) -> COCOeval:
    e = COCOeval(coco_gt, coco_dt, iouType=iou_type)
    e.params.imgIds = image_ids
    e.params.useCats = int(use_cats)
    if max_dets is not None:
        e.params.maxDets = sorted(max_dets)
    with contextlib.redirect_stdout(io.StringIO()):
        e.evaluate()
        e.accumulate()
    return e


# --------------------------------------------------------------------------- detection AP
def evaluate_coco(
    coco_gt: COCO | str | os.PathLike,
    results: list[dict],
    iou_types: Iterable[str] = ("bbox", "segm"),
    image_ids: Iterable[int] | None = None,
    per_category: bool = True,
    *,
    source: str = "results",
) -> dict[str, float]:
    """COCO box/mask AP of ``results`` (COCO results format) against ``coco_gt``.

    Returns ``{"<type>/<stat>": value}`` for the 12 COCOeval statistics (``AP, AP50, AP75, APs,
    APm, APl, AR1, AR10, AR100, ARs, ARm, ARl``) of each IoU type, in 0..1, plus
    ``"<type>/AP-<category name>"`` (AP@[.5:.95], all areas, 100 dets) when ``per_category``.
    Undefined figures are ``nan``. ``image_ids`` restricts the evaluation (default: every
    ground-truth image, so images without results count as misses). Empty ``results`` give 0
    for every defined figure.
    """
    coco_gt = _as_coco(coco_gt)
    check_results(results, coco_gt, source)
    ids = _check_image_ids(coco_gt, image_ids)
    metrics: dict[str, float] = {}
    for iou_type in iou_types:
        if iou_type not in IOU_TYPES:
            raise MaskkitError(f"unknown IoU type {iou_type!r} (choose from {', '.join(IOU_TYPES)})")
        dt = _load_dt(coco_gt, _results_for(results, iou_type, source))
        e = _run_cocoeval(coco_gt, dt, iou_type, ids, use_cats=True)
        with contextlib.redirect_stdout(io.StringIO()):
            e.summarize()
        for name, value in zip(STAT_NAMES, e.stats):
            metrics[f"{iou_type}/{name}"] = _nan_if_undefined(value)
        if per_category:
            precision = e.eval["precision"]  # [T, R, K, A, M]: IoU thr, recall thr, category, area, maxDets
            for k, cat_id in enumerate(e.params.catIds):
                p = precision[:, :, k, 0, -1]
                p = p[p > -1]
                name = coco_gt.cats[cat_id].get("name", str(cat_id))
                metrics[f"{iou_type}/AP-{name}"] = float(p.mean()) if p.size else float("nan")
    return metrics


# --------------------------------------------------------------------------- proposal AR
def proposal_recall_curve(e: COCOeval) -> np.ndarray:
    """Recall at every proposal count from a class-agnostic ``COCOeval`` after ``evaluate()``.

    Returns ``[A, T, D]``: for area range ``a``, IoU threshold ``t`` and count ``k = d + 1``
    (1..maxDets[-1]), the fraction of non-ignored ground truth matched by one of the image's
    top-``k`` proposals. COCOeval matches greedily in score order, so the matches made by the
    top ``k`` proposals do not depend on the proposals ranked below them: one ``evaluate()``
    at the largest count gives every smaller count, exactly as ``accumulate()`` would with
    ``maxDets = [k]``. Written here because COCOeval only accumulates at a few counts, and
    running it for 1000 counts is 1000x slower. ``nan`` where an area range has no ground truth.
    """
    p = e.params
    n_area, n_img, n_thr, max_det = len(p.areaRng), len(p.imgIds), len(p.iouThrs), p.maxDets[-1]
    hits = np.zeros((n_area, n_thr, max_det + 1), dtype=np.int64)  # [A, T, rank]; last bin = unmatched
    npig = np.zeros(n_area, dtype=np.int64)
    # evalImgs is ordered [category][area][image]; useCats=0 -> one category (-1).
    for a in range(n_area):
        for ev in e.evalImgs[a * n_img : (a + 1) * n_img]:
            if ev is None:
                continue
            keep = np.asarray(ev["gtIgnore"]) == 0
            npig[a] += int(keep.sum())
            if not keep.any() or not ev["dtIds"]:
                continue
            dt_ids = np.asarray(ev["dtIds"])  # in score order
            matched = np.asarray(ev["gtMatches"])[:, keep]  # [T, G'] id of the matching proposal, 0 = none
            sorter = np.argsort(dt_ids)
            pos = np.searchsorted(dt_ids, matched, sorter=sorter).clip(max=len(dt_ids) - 1)
            rank = sorter[pos]  # [T, G'] proposal rank within its image
            rank = np.where(matched > 0, rank, max_det)
            for t in range(n_thr):
                hits[a, t] += np.bincount(rank[t], minlength=max_det + 1)
    cum = np.cumsum(hits[:, :, :max_det], axis=2).astype(np.float64)  # [A, T, D]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(npig[:, None, None] > 0, cum / npig[:, None, None], np.nan)


def evaluate_proposals(
    coco_gt: COCO | str | os.PathLike,
    results: list[dict],
    max_dets: Iterable[int] = (10, 100, 1000),
    iou_types: Iterable[str] = ("segm", "bbox"),
    image_ids: Iterable[int] | None = None,
    *,
    source: str = "results",
) -> dict[str, float]:
    """Class-agnostic proposal recall (SharpMask paper Sec. 5, Table 3): COCOeval with
    ``useCats = 0`` and ``maxDets = max_dets``; results are ranked by score per image and their
    category ids are ignored (missing ones are allowed).

    Per IoU type ``x``: ``proposals/x/AR@k`` for every ``k`` in ``max_dets`` (AR = recall
    averaged over IoU 0.5:0.05:0.95), ``proposals/x/AR{s,m,l}@K`` at ``K = max(max_dets)``, and
    ``proposals/x/AUC`` = AR averaged over every count 1..K (``AUC{s,m,l}`` per object size):
    ``mean_k mean_t recall(t, k)`` from :func:`proposal_recall_curve`, one ``evaluate()``.
    """
    coco_gt = _as_coco(coco_gt)
    check_results(results, coco_gt, source, check_categories=False)
    ids = _check_image_ids(coco_gt, image_ids)
    max_dets = sorted({int(k) for k in max_dets})
    if not max_dets or max_dets[0] < 1:
        raise MaskkitError(f"max_dets must be positive proposal counts, got {max_dets}")
    top = max_dets[-1]
    if not coco_gt.cats:
        raise MaskkitError("the ground truth has no categories")
    any_cat = min(coco_gt.cats)
    metrics: dict[str, float] = {}
    for iou_type in iou_types:
        if iou_type not in IOU_TYPES:
            raise MaskkitError(f"unknown IoU type {iou_type!r} (choose from {', '.join(IOU_TYPES)})")
        dt = _load_dt(coco_gt, _results_for(results, iou_type, source, agnostic_category=any_cat))
        e = _run_cocoeval(coco_gt, dt, iou_type, ids, use_cats=False, max_dets=max_dets)
        recall = e.eval["recall"]  # [T, K=1, A, M]
        for m, k in enumerate(max_dets):
            r = recall[:, 0, 0, m]
            metrics[f"proposals/{iou_type}/AR@{k}"] = float(r.mean()) if (r > -1).all() else float("nan")
        for a, suffix in enumerate(AREA_SUFFIX[1:], start=1):
            r = recall[:, 0, a, -1]
            metrics[f"proposals/{iou_type}/AR{suffix}@{top}"] = float(r.mean()) if (r > -1).all() else float("nan")
        ar_curve = proposal_recall_curve(e).mean(axis=1)  # [A, D]: AR at counts 1..K
        for a, suffix in enumerate(AREA_SUFFIX):
            metrics[f"proposals/{iou_type}/AUC{suffix}"] = float(ar_curve[a].mean())
    return metrics
