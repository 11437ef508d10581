"""Evaluation: run a model on a dataset split through the one inference path
(:func:`maskkit.engine.inference.predictor.infer_batches`), then score what it produced with
:mod:`maskkit.evaluation` (run apart from score, as detectron2's ``inference_on_dataset`` +
evaluator); the system object (:mod:`maskkit.engine.systems`) says which scorer applies."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from maskkit.config import EvalConfig
from maskkit.data.coco import open_split, resolve_data
from maskkit.engine.distributed import all_gather_objects, dist_info, resolve_device
from maskkit.engine.inference.predictor import infer_batches, mask_threshold_of
from maskkit.engine.systems import system_of
from maskkit.errors import MaskkitError
from maskkit.evaluation import (
    IOU_TYPES,
    evaluate_coco,
    evaluate_proposals,
    load_coco_gt,
    load_results,
    predictions_to_coco_results,
    write_metrics,
    write_results,
)
from maskkit.export.onnx_model import load_any

__all__ = ["evaluate_model", "evaluate_file", "evaluate_results_file", "iou_types_of"]


def evaluate_model(
    model: nn.Module,
    dataset,
    *,
    cfg=None,
    device: str | torch.device = "cpu",
    label_to_cat_id: dict[int, int] | None = None,
    batch_size: int | None = None,
    max_images: int | None = None,
    progress: bool = True,
    results_path: str | Path | None = None,
) -> dict[str, float]:
    """Metrics of ``model`` on ``dataset`` (a CocoDataset without transforms, so predictions
    come back at the ground truth's size), scored by the config's system: CenterMask box and
    mask AP (+ per-category AP); SharpMask class-agnostic AR@max_dets.

    ``cfg`` defaults to ``model.info.config``; a module not built by maskkit (no ``info``) is
    scored as CenterMask with the default evaluation settings. Under torchrun each process
    predicts its share of the images; the COCO results are gathered and scored on rank 0
    (other ranks return ``{}``). ``dataset`` needs ``image_ids``, ``coco`` and ``load_image(i)``
    (or ``dataset[i][0]``).
    """
    info = dist_info()
    if cfg is None and getattr(model, "info", None) is not None:
        cfg = model.info.config
    system = system_of(cfg if cfg is not None else model)
    ecfg = cfg.eval if cfg is not None else EvalConfig()
    batch_size = int(batch_size or ecfg.batch_size)
    max_images = int(max_images if max_images is not None else ecfg.max_images)
    n = len(dataset) if max_images <= 0 else min(max_images, len(dataset))
    mine = list(range(info.rank, n, info.world_size))
    if label_to_cat_id is None:
        label_to_cat_id = getattr(dataset, "label_to_cat_id", None)
    mapping = system.results_mapping(label_to_cat_id)

    images = (dataset.load_image(i) if hasattr(dataset, "load_image") else dataset[i][0] for i in mine)
    preds = infer_batches(model, images, batch_size, device)
    if progress and info.main:
        preds = tqdm(preds, total=len(mine), desc="eval", unit="img", dynamic_ncols=True)
    threshold = mask_threshold_of(model)
    results: list[dict] = []
    for i, pred in zip(mine, preds):
        results += predictions_to_coco_results([pred], [dataset.image_ids[i]], mapping, threshold)
    gathered = all_gather_objects(results)
    if not info.main:
        return {}
    results = [r for part in gathered for r in part]
    if results_path is not None:
        write_results(results, results_path)
    return system.score(dataset.coco, results, cfg, [dataset.image_ids[i] for i in range(n)])


def evaluate_file(
    weights: str | Path,
    out: str | Path,
    *,
    data: str | Path | None = None,
    split: str = "val",
    ann: str | Path | None = None,
    images: str | Path | None = None,
    device: str | None = None,
    batch_size: int | None = None,
    progress: bool = True,
    precision: str | None = None,
    runtime: str | None = None,
) -> dict[str, float]:
    """``maskkit eval --weights``: run a model file on a dataset split (``data`` root + ``split``,
    or ``ann`` + ``images``) and write ``results.json`` and ``metrics.json`` to ``out``; returns
    the metrics. The model file is checked before the dataset is read. ``precision``: None
    (default) scores the file as it is, float32 (faithful AP) or int8 for an INT8 file."""
    device = resolve_device(device)
    model = load_any(weights, device=device, precision=precision, runtime=runtime)  # also .onnx / .xml
    choice = getattr(model, "precision", None)
    if choice is not None and (precision is not None or choice.precision != "fp32"):
        print(f"maskkit: {choice.reason} on {choice.runtime}", file=sys.stderr)
    dataset = open_split(data, split, ann, images)
    system_of(model.info.config).check_classes(model.info.cat_ids, dataset, weights)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"evaluating {weights} on {dataset}", file=sys.stderr)
    metrics = evaluate_model(
        model, dataset, device=device, batch_size=batch_size, progress=progress, results_path=out / "results.json"
    )
    write_metrics(metrics, out)
    return metrics


def iou_types_of(results: list[dict], requested: str | None = None) -> list[str]:
    """The IoU types to score: ``requested`` (comma-separated subset of bbox,segm), else every
    type the results carry; a results list where some entries have a ``segmentation`` and others
    not is refused (one result without a mask would silently drop mask AP)."""
    if requested is None:
        types = []
        for t, key in (("bbox", "bbox"), ("segm", "segmentation")):
            have = [isinstance(r, dict) and key in r for r in results]
            if any(have) and not all(have):
                raise MaskkitError(
                    f"result {have.index(False)} has no '{key}' while others have one: every result "
                    f"needs it for {t} AP (or choose the IoU types with --iou-types)"
                )
            if have and all(have):
                types.append(t)
        return types or ["bbox"]
    types = [t.strip() for t in requested.split(",") if t.strip()]
    bad = [t for t in types if t not in IOU_TYPES]
    if bad or not types:
        raise MaskkitError(f"--iou-types: expected a comma-separated subset of bbox,segm, got {requested!r}")
    return types


def evaluate_results_file(
    predictions: str | Path,
    out: str | Path,
    *,
    data: str | Path | None = None,
    split: str = "val",
    ann: str | Path | None = None,
    images: str | Path | None = None,
    iou_types: str | None = None,
    proposals: bool = False,
    max_dets: tuple[int, ...] = (10, 100, 1000),
) -> dict[str, float]:
    """``maskkit eval --predictions``: score a COCO results JSON against a split's ground truth
    (box/mask AP, or with ``proposals`` class-agnostic AR at ``max_dets``) and write
    ``metrics.json`` to ``out``; returns the metrics. No model runs."""
    ann_file, _ = resolve_data(data, split, ann, images)
    coco_gt = load_coco_gt(ann_file)
    results = load_results(predictions)
    types = iou_types_of(results, iou_types)
    source = str(predictions)
    print(
        f"scoring {len(results)} results from {source} against {ann_file} ({len(coco_gt.imgs)} images)", file=sys.stderr
    )
    if proposals:
        metrics = evaluate_proposals(coco_gt, results, max_dets=list(max_dets), iou_types=types, source=source)
    else:
        metrics = evaluate_coco(coco_gt, results, iou_types=types, source=source)
    write_metrics(metrics, out)
    return metrics
