"""COCO evaluation: box and mask AP (CenterMask), class-agnostic proposal AR (SharpMask).

``maskkit eval --predictions FILE`` scores a COCO results JSON; ``--weights FILE`` runs a model
first (:func:`maskkit.engine.predict.evaluate_weights`). Figures come from pycocotools'
COCOeval, the official protocol, and are returned as one flat dict of named floats in 0..1
(``bbox/AP``, ``segm/AP50``, ``proposals/segm/AR@100``, ...). A figure COCOeval cannot define
(it reports -1: no ground truth in that area range or category) is ``nan`` here and ``null``
in ``metrics.json``.

Results format (one JSON file valid for ``COCO.loadRes``): one dict per instance with
``image_id``, ``category_id`` (the dataset's own id), ``bbox`` (xywh floats), ``score`` (box
score) and, for models with masks, ``segmentation`` (RLE, counts as str) and ``segm_score``
(the mask score: MaskIoU-rescored where the model predicts it, else the box score). Box AP
ranks by ``score``; mask AP drops the ``bbox`` and ranks by ``segm_score``.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import numbers
import os
import sys
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from maskkit.atomic import atomic_write_text
from maskkit.errors import DataError, MaskkitError
from maskkit.structures import masks_to_rle

__all__ = [
    "predictions_to_coco_results",
    "evaluate_coco",
    "evaluate_proposals",
    "proposal_recall_curve",
    "check_results",
    "load_coco_gt",
    "load_results",
    "format_table",
    "write_metrics",
    "write_results",
    "configure_parser",
    "run_cli",
]

# COCOeval.summarize() order of its 12 detection statistics.
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
AREA_SUFFIX = ("", "s", "m", "l")  # COCOeval's default areaRng order: all, small, medium, large
IOU_TYPES = ("bbox", "segm")


# --------------------------------------------------------------------------- results format
def predictions_to_coco_results(
    predictions: list[dict],
    image_ids: list[int],
    label_to_cat_id: dict[int, int] | None,
    mask_threshold: float = 0.5,
) -> list[dict]:
    """Data-contract predictions -> COCO results (one dict per instance, see module doc).

    ``predictions[i]`` belongs to ``image_ids[i]``: ``boxes [N,4]`` xyxy px, ``labels [N]``,
    ``scores [N]``, optional ``masks [N,1,H,W]`` (probabilities binarised at
    ``>= mask_threshold``, or binary) and ``mask_scores [N]``. ``label_to_cat_id`` maps the
    model's contiguous labels to the dataset's category ids (``None``: labels are the ids).
    """
    if len(predictions) != len(image_ids):
        raise MaskkitError(f"predictions_to_coco_results: {len(predictions)} predictions for {len(image_ids)} image ids")
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
        mask_scores = scores if mask_scores is None else torch.as_tensor(mask_scores).detach().cpu().to(torch.float64).reshape(-1).tolist()
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
                raise MaskkitError(f"{where}: category_id {cat} is not a category of the ground truth "
                                   f"(known: {sorted(cats)[:10]}{'...' if len(cats) > 10 else ''})")
        if not _finite_number(r.get("score")):
            raise MaskkitError(f"{where}: missing or non-finite 'score'")
        if "segm_score" in r and not _finite_number(r["segm_score"]):
            raise MaskkitError(f"{where}: non-finite 'segm_score'")
        if "bbox" not in r and "segmentation" not in r:
            raise MaskkitError(f"{where}: has neither 'bbox' nor 'segmentation'")
        if "bbox" in r:
            b = r["bbox"]
            if not (isinstance(b, list) and len(b) == 4 and all(_finite_number(v) for v in b) and b[2] >= 0 and b[3] >= 0):
                raise MaskkitError(f"{where}: 'bbox' must be [x, y, w, h] finite numbers with w, h >= 0, got {b!r}")
        if "segmentation" in r:
            s = r["segmentation"]
            if not (isinstance(s, dict) and isinstance(s.get("counts"), (str, bytes)) and isinstance(s.get("size"), list)):
                raise MaskkitError(f"{where}: 'segmentation' must be a compressed RLE {{'size': [h, w], 'counts': str}}")
            img = images[image_id]
            if "height" in img and list(s["size"]) != [img["height"], img["width"]]:
                raise MaskkitError(f"{where}: RLE size {s['size']} differs from image {image_id}'s size "
                                   f"[{img['height']}, {img['width']}]")


# --------------------------------------------------------------------------- loading
def load_coco_gt(ann_file: str | os.PathLike) -> COCO:
    """Read a COCO annotation file with pycocotools (quietly); :class:`DataError` naming the
    file when it is missing, not JSON or not a COCO instances file (the data layer's check)."""
    from maskkit.data.coco import read_instances_json

    path = Path(ann_file)
    coco = COCO()
    coco.dataset = read_instances_json(path)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            coco.createIndex()
    except (KeyError, TypeError) as e:
        raise DataError(f"{path}: malformed COCO annotations (missing field {e})") from None
    return coco


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
    if not isinstance(results, list):
        raise MaskkitError(f"{path}: predictions file must hold a JSON list of COCO results, got {type(results).__name__}")
    return results


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
        dt.dataset = {"images": list(coco_gt.dataset["images"]), "categories": list(coco_gt.dataset["categories"]),
                      "annotations": []}
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


def _run_cocoeval(coco_gt: COCO, coco_dt: COCO, iou_type: str, image_ids: list[int], use_cats: bool,
                  max_dets: list[int] | None = None) -> COCOeval:
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
        for ev in e.evalImgs[a * n_img:(a + 1) * n_img]:
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


# --------------------------------------------------------------------------- output
def _fmt(v: float) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f}"


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["| " + " | ".join(h.center(w) for h, w in zip(header, widths)) + " |",
             "|" + "|".join(":" + "-" * w + ":" for w in widths) + "|"]
    lines += ["| " + " | ".join(c.center(w) for c, w in zip(r, widths)) + " |" for r in rows]
    return "\n".join(lines)


def format_table(metrics: dict[str, float]) -> str:
    """Markdown tables of ``metrics`` in percent (detectron2's layout): one row of summary
    figures per group (``bbox``, ``segm``, ``proposals/segm``, ...), then per-category AP in
    three column pairs. Undefined (nan) figures print as ``-``."""
    groups: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        group, _, name = key.rpartition("/")
        groups.setdefault(group, {})[name] = value
    blocks = []
    for group, figures in groups.items():
        summary = {k: v for k, v in figures.items() if not k.startswith("AP-")}
        per_cat = {k[3:]: v for k, v in figures.items() if k.startswith("AP-")}
        if summary:
            blocks.append(f"Evaluation results for {group or 'metrics'} (%):\n"
                          + _markdown(list(summary), [[_fmt(v) for v in summary.values()]]))
        if per_cat:
            items = [(name, _fmt(v)) for name, v in per_cat.items()]
            cols = 3
            rows = [sum((list(p) for p in items[i:i + cols]), []) for i in range(0, len(items), cols)]
            rows[-1] += ["", ""] * (cols - len(rows[-1]) // 2)
            n = min(cols, len(items))
            header = ["category", "AP"] * n
            rows = [r[:2 * n] for r in rows]
            blocks.append(f"Per-category {group} AP (%):\n" + _markdown(header, rows))
    return "\n\n".join(blocks)


def _json_value(v: Any) -> Any:
    if isinstance(v, (np.floating, np.integer)):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None  # strict JSON has no nan: undefined figures are null
    return v


def write_metrics(metrics: dict, out_dir: str | os.PathLike) -> Path:
    """``out_dir/metrics.json``: the flat dict, keys sorted, indented; nan -> null. Atomic."""
    flat = {str(k): _json_value(v) for k, v in metrics.items()}
    return atomic_write_text(Path(out_dir) / "metrics.json", json.dumps(flat, indent=2, sort_keys=True) + "\n")


def write_results(results: list[dict], path: str | os.PathLike) -> Path:
    """A COCO results JSON at ``path`` (atomic); numpy scalars are written as numbers."""
    def default(o: Any) -> Any:
        if isinstance(o, np.generic):
            return o.item()
        raise TypeError(f"write_results: {type(o).__name__} is not JSON-serialisable")

    return atomic_write_text(Path(path), json.dumps(results, default=default))


# --------------------------------------------------------------------------- CLI: maskkit eval
def configure_parser(parser: argparse.ArgumentParser) -> None:
    from maskkit.data.coco import add_data_arguments

    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--predictions", metavar="FILE", help="COCO results JSON to score (no model needed)")
    src.add_argument("--weights", metavar="FILE", help="model file: run it on the split, then score it")
    add_data_arguments(parser, split_default="val")
    parser.add_argument("--out", default="runs/eval", metavar="DIR",
                        help="folder for metrics.json (default: %(default)s)")
    parser.add_argument("--iou-types", default=None, metavar="TYPES",
                        help="with --predictions: comma-separated subset of bbox,segm (default: every type the "
                             "results carry)")
    parser.add_argument("--proposals", action="store_true",
                        help="with --predictions: class-agnostic proposal recall (AR@k, AUC; COCOeval useCats=0) "
                             "instead of AP (with --weights a SharpMask model is always scored this way)")
    parser.add_argument("--max-dets", default="10,100,1000", metavar="K,K,K",
                        help="proposal counts for AR with --proposals (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="with --weights: auto | cpu | cuda | cuda:N (default: auto)")
    parser.add_argument("--batch", type=int, default=None, metavar="N",
                        help="with --weights: images per forward pass (default: the model's eval.batch_size)")


def _parse_iou_types(text: str | None, results: list[dict]) -> list[str]:
    if text is None:
        types = [t for t, key in (("bbox", "bbox"), ("segm", "segmentation")) if results and all(key in r for r in results)]
        return types or ["bbox"]
    types = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in types if t not in IOU_TYPES]
    if bad or not types:
        raise MaskkitError(f"--iou-types: expected a comma-separated subset of bbox,segm, got {text!r}")
    return types


def run_cli(args: argparse.Namespace) -> int:
    if args.weights:
        try:
            from maskkit.engine.predict import evaluate_weights
        except ImportError as e:
            raise MaskkitError(f"evaluating a model file (--weights) needs the inference engine "
                               f"(maskkit.engine.predict), which is not available: {e}") from None
        return int(evaluate_weights(args) or 0)

    from maskkit.data.coco import resolve_data

    ann_file, _ = resolve_data(args.data, args.split, args.ann, args.images)
    coco_gt = load_coco_gt(ann_file)
    results = load_results(args.predictions)
    types = _parse_iou_types(args.iou_types, results)
    source = str(args.predictions)
    print(f"scoring {len(results)} results from {source} against {ann_file} ({len(coco_gt.imgs)} images)", file=sys.stderr)
    if args.proposals:
        try:
            max_dets = [int(k) for k in args.max_dets.split(",") if k.strip()]
        except ValueError:
            raise MaskkitError(f"--max-dets: expected comma-separated integers, got {args.max_dets!r}") from None
        metrics = evaluate_proposals(coco_gt, results, max_dets=max_dets, iou_types=types, source=source)
    else:
        metrics = evaluate_coco(coco_gt, results, iou_types=types, source=source)
    print(format_table(metrics))
    path = write_metrics(metrics, args.out)
    print(f"wrote {path}")
    return 0
