"""Run a model on images, folders, globs or videos -> COCO results JSON and overlays.

    maskkit predict --weights run/model_best.safetensors photo.jpg folder/ 'shots/*.png' clip.mp4

This module is the ONE inference path of maskkit: ``predict``, ``eval --weights``, the
periodic evaluation during training and the demo all send images through
:func:`infer_batches` (batch -> device -> ``model(images)`` under ``no_grad`` -> CPU), and all
turn predictions into COCO results with the evaluator's ``predictions_to_coco_results``.

Python API::

    predictor = maskkit.Predictor("model_best.safetensors")
    pred = predictor(image)   # image: float [3,H,W] 0..1 | uint8 [3,H,W] | PIL | numpy HxWx3 | path
    pred["boxes"], pred["labels"], pred["scores"], pred["masks"], pred["category_ids"]
"""
from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch
from torch import nn

from maskkit.errors import DataError, MaskkitError

__all__ = [
    "Predictor",
    "infer_batches",
    "to_image_tensor",
    "evaluate_model",
    "primary_metric",
    "evaluate_weights",
    "expand_inputs",
    "configure_parser",
    "run_cli",
]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm"}


# --------------------------------------------------------------------------- the inference path


def to_image_tensor(image: Any) -> torch.Tensor:
    """Any common image form -> float32 ``[3, H, W]`` in 0..1 (the data contract)."""
    from PIL import Image

    from maskkit.data.coco import load_image, pil_to_tensor

    if isinstance(image, (str, Path)):
        return load_image(image)
    if isinstance(image, Image.Image):  # the data layer's mode handling (16-bit, palette, alpha)
        return pil_to_tensor(image)
    if not isinstance(image, torch.Tensor):
        arr = np.asarray(image)
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=2)
        if arr.ndim != 3 or arr.shape[2] not in (3, 4):
            raise DataError(f"expected an H x W x 3 image array, got shape {arr.shape}")
        image = torch.from_numpy(np.array(arr[..., :3], copy=True)).permute(2, 0, 1)
    image = image.as_subclass(torch.Tensor)
    if image.dim() != 3 or image.shape[0] != 3:
        raise DataError(f"expected an image tensor [3, H, W], got shape {tuple(image.shape)}")
    if image.dtype == torch.uint8:
        return image.float() / 255.0
    return image.float()


def _model_system(model: nn.Module, cfg=None) -> str:
    if cfg is not None:
        return cfg.model.system
    mcfg = getattr(model, "cfg", None)
    return getattr(mcfg, "system", "centermask")


@torch.no_grad()
def infer_batches(model: nn.Module, images: Iterable[Any], batch_size: int = 1,
                  device: str | torch.device = "cpu") -> Iterator[dict]:
    """Yield one prediction per input image (in order), running ``model`` on batches of
    ``batch_size`` images. Predictions are on the CPU, in the data contract."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    try:
        batch: list[torch.Tensor] = []
        for image in images:
            batch.append(to_image_tensor(image))
            if len(batch) == batch_size:
                yield from _run(model, batch, device)
                batch = []
        if batch:
            yield from _run(model, batch, device)
    finally:
        model.train(was_training)


def _run(model: nn.Module, batch: list[torch.Tensor], device: torch.device) -> list[dict]:
    preds = model([im.to(device) for im in batch])
    return [{k: (v.to("cpu") if isinstance(v, torch.Tensor) else v) for k, v in p.items()} for p in preds]


def _filter(pred: dict, score_thresh: float) -> dict:
    keep = pred["scores"] >= score_thresh
    return {k: (v[keep] if isinstance(v, torch.Tensor) and v.shape[:1] == keep.shape else v) for k, v in pred.items()}


class Predictor:
    """Inference with a trained model: ``Predictor(path_or_model)(image) -> prediction``.

    Accepts a model file (see :mod:`maskkit.checkpoint`) or a loaded module. One image in, one
    prediction dict out; a list in, a list out (run in batches of ``batch_size``). Each
    prediction also carries ``category_ids`` (the user's ids) and ``class_names``.
    """

    def __init__(self, model: str | Path | nn.Module, device: str = "cpu", score_thresh: float = 0.0,
                 batch_size: int = 1):
        from maskkit.checkpoint import load_model

        if isinstance(model, (str, Path)):
            model = load_model(model, device=device)
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.score_thresh, self.batch_size = float(score_thresh), int(batch_size)
        self.class_names: list[str] = list(getattr(model, "class_names", []))
        self.label_to_cat_id: dict[int, int] = dict(getattr(model, "label_to_cat_id", {}) or {})
        self.config = getattr(model, "maskkit_config", None)

    def _finish(self, pred: dict) -> dict:
        pred = _filter(pred, self.score_thresh)
        labels = pred["labels"].tolist()
        pred["category_ids"] = torch.tensor([self.label_to_cat_id.get(int(k), int(k)) for k in labels], dtype=torch.int64)
        pred["class_names"] = [self.class_names[k - 1] if 0 < k <= len(self.class_names) else str(k) for k in labels]
        return pred

    def predict_many(self, images: Iterable[Any]) -> Iterator[dict]:
        for pred in infer_batches(self.model, images, self.batch_size, self.device):
            yield self._finish(pred)

    def __call__(self, images: Any) -> dict | list[dict]:
        if isinstance(images, (list, tuple)):
            return list(self.predict_many(images))
        return next(self.predict_many([images]))


# --------------------------------------------------------------------------- evaluation


def primary_metric(metrics: dict) -> tuple[str, float]:
    """The figure that decides ``model_best``: mask AP, else box AP, else proposal AR@100."""
    for key in ("segm/AP", "bbox/AP", "proposals/segm/AR@100", "proposals/bbox/AR@100"):
        v = metrics.get(key)
        if v is not None and v == v:
            return key, float(v)
    return "none", float("-inf")


def evaluate_model(model: nn.Module, dataset, *, cfg=None, device: str | torch.device = "cpu",
                   label_to_cat_id: dict[int, int] | None = None, batch_size: int | None = None,
                   max_images: int | None = None, progress: bool = True, results_path: str | Path | None = None,
                   ) -> dict[str, float]:
    """COCO metrics of ``model`` on ``dataset`` (a CocoDataset without transforms, so
    predictions come back at the ground truth's size).

    CenterMask: box and mask AP (+ per-category AP); SharpMask: class-agnostic AR@max_dets.
    Under torchrun each process predicts its share of the images; the COCO results are
    gathered and scored on rank 0 (other ranks return ``{}``).
    """
    from maskkit.engine.distributed import all_gather_objects, dist_info
    from maskkit.engine.evaluate import evaluate_coco, evaluate_proposals, predictions_to_coco_results, write_results

    info = dist_info()
    system = _model_system(model, cfg)
    ecfg = cfg.eval if cfg is not None else None
    batch_size = int(batch_size or (ecfg.batch_size if ecfg else 1))
    max_images = int(max_images if max_images is not None else (ecfg.max_images if ecfg else 0))
    n = len(dataset) if max_images <= 0 else min(max_images, len(dataset))
    mine = list(range(info.rank, n, info.world_size))
    mask_threshold = float(getattr(getattr(model, "cfg", None), "mask_threshold", 0.5))
    if label_to_cat_id is None:
        label_to_cat_id = getattr(dataset, "label_to_cat_id", None)
    if system == "sharpmask":
        label_to_cat_id = None  # class-agnostic proposals: category ids are ignored

    images = (dataset.load_image(i) if hasattr(dataset, "load_image") else dataset[i][0] for i in mine)
    preds = infer_batches(model, images, batch_size, device)
    if progress and info.main:
        from tqdm import tqdm

        preds = tqdm(preds, total=len(mine), desc="eval", unit="img", dynamic_ncols=True)
    image_ids = [dataset.image_ids[i] for i in mine]
    results: list[dict] = []
    for image_id, pred in zip(image_ids, preds):
        results += predictions_to_coco_results([pred], [image_id], label_to_cat_id, mask_threshold)
    gathered = all_gather_objects(results)
    if not info.main:
        return {}
    results = [r for part in gathered for r in part]
    all_ids = [dataset.image_ids[i] for i in range(n)]
    if results_path is not None:
        write_results(results, results_path)
    if system == "sharpmask":
        max_dets = tuple(ecfg.max_dets) if ecfg else (10, 100, 1000)
        return evaluate_proposals(dataset.coco, results, max_dets=max_dets, image_ids=all_ids)
    return evaluate_coco(dataset.coco, results, image_ids=all_ids)


def evaluate_weights(args: argparse.Namespace) -> int:
    """``maskkit eval --weights FILE --data DIR``: run the model on the split, print the COCO
    table, write ``results.json`` and ``metrics.json`` to ``--out``."""
    from maskkit.checkpoint import load_model
    from maskkit.data.coco import dataset_from_args
    from maskkit.engine.evaluate import format_table, write_metrics
    from maskkit.engine.train import resolve_device

    device = resolve_device(getattr(args, "device", None))
    model = load_model(args.weights, device=device)
    cfg = model.maskkit_config
    dataset = dataset_from_args(args, None)
    _check_classes(model, dataset, args.weights)
    out = Path(getattr(args, "out", None) or "runs/eval")
    out.mkdir(parents=True, exist_ok=True)
    print(f"evaluating {args.weights} on {dataset}", file=sys.stderr)
    metrics = evaluate_model(model, dataset, cfg=cfg, device=device, batch_size=getattr(args, "batch", None),
                             results_path=out / "results.json")
    print(format_table(metrics))
    print(f"wrote {write_metrics(metrics, out)} and {out / 'results.json'}")
    return 0


def _check_classes(model: nn.Module, dataset, weights) -> None:
    """Evaluation uses the model's label -> category mapping; the dataset must have the same
    categories (else every prediction would be scored against the wrong class)."""
    if _model_system(model, getattr(model, "maskkit_config", None)) == "sharpmask":
        return
    model_cats = list(getattr(model, "label_to_cat_id", {}).values())
    if model_cats and sorted(model_cats) != sorted(dataset.cat_ids):
        raise MaskkitError(f"{weights}: the model was trained on category ids {sorted(model_cats)[:10]}... "
                           f"but {dataset.ann_file} has {sorted(dataset.cat_ids)[:10]}...")


# --------------------------------------------------------------------------- predict verb


def expand_inputs(inputs: list[str]) -> list[Path]:
    """Files, folders (their images, sorted) and globs -> paths; DataError when nothing matches."""
    from maskkit.engine.video import is_video

    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES or is_video(q))
            if not found:
                raise DataError(f"{p}: folder holds no images")
            paths += found
        elif p.is_file():
            paths.append(p)
        elif any(c in item for c in "*?["):
            found = sorted(Path(q) for q in glob.glob(item, recursive=True) if Path(q).is_file())
            if not found:
                raise DataError(f"{item}: no file matches this pattern")
            paths += found
        else:
            raise DataError(f"{p}: no such file or folder")
    return paths


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", required=True, help="model file (model_best.safetensors / model_last.safetensors)")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="images, folders, globs or video files")
    parser.add_argument("--out", default="runs/predict", help="output folder (default: %(default)s)")
    parser.add_argument("--score-thr", type=float, default=0.3,
                        help="keep instances scoring at least this, in the JSON and the pictures (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=2, help="images per forward pass (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    parser.add_argument("--no-draw", action="store_true", help="write the JSON only, no overlay pictures/videos")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def draw_prediction(image: torch.Tensor, pred: dict, class_names: list[str], score_thresh: float,
                    mask_threshold: float = 0.5) -> torch.Tensor:
    """Overlay of one prediction: uint8 ``[3, H, W]`` (viz's drawing)."""
    from maskkit.viz import draw_instances

    return draw_instances(image, pred, class_names, score_thresh, mask_threshold)


def run_cli(args: argparse.Namespace) -> int:
    from maskkit.engine.evaluate import predictions_to_coco_results, write_results
    from maskkit.engine.train import resolve_device
    from maskkit.engine.video import is_video, predict_video

    paths = expand_inputs(args.inputs)
    device = resolve_device(args.device)
    predictor = Predictor(args.weights, device=str(device), score_thresh=args.score_thr, batch_size=max(1, args.batch))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    mask_threshold = float(getattr(predictor.model.cfg, "mask_threshold", 0.5))
    images = [p for p in paths if not is_video(p)]
    videos = [p for p in paths if is_video(p)]
    results: list[dict] = []
    index: list[dict] = []
    from tqdm import tqdm

    bar = tqdm(total=len(images), desc="predict", unit="img", dynamic_ncols=True, disable=not images or args.no_progress)
    for start in range(0, len(images), predictor.batch_size):
        chunk = images[start:start + predictor.batch_size]
        loaded = [to_image_tensor(p) for p in chunk]
        for path, image, pred in zip(chunk, loaded, predictor(loaded)):
            image_id = len(index) + 1
            rs = predictions_to_coco_results([pred], [image_id], predictor.label_to_cat_id or None, mask_threshold)
            for r in rs:
                r["file_name"] = str(path)
            results += rs
            index.append({"id": image_id, "file_name": str(path), "height": int(image.shape[1]),
                          "width": int(image.shape[2]), "num_instances": len(rs)})
            if not args.no_draw:
                from maskkit.viz import save_image

                save_image(draw_prediction(image, pred, predictor.class_names, args.score_thr, mask_threshold),
                           out / f"{path.stem}_pred.png")
            bar.update(1)
    bar.close()
    for video in videos:
        results += predict_video(predictor, video, out, draw=not args.no_draw, mask_threshold=mask_threshold,
                                 first_image_id=len(index) + 1, index=index)
    write_results(results, out / "results.json")
    (out / "images.json").write_text(json.dumps(index, indent=1))
    n_inst = len(results)
    print(f"{len(images)} image(s), {len(videos)} video(s), {n_inst} instance(s) >= {args.score_thr}: "
          f"wrote {out / 'results.json'}" + ("" if args.no_draw else f" and overlays in {out}"))
    return 0
