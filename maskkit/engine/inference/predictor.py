"""The ONE inference path of maskkit: ``predict``, ``eval --weights``, the periodic evaluation
during training, the demo and the web page all send images through :func:`infer_batches`
(batch -> device -> ``model(images)`` under ``no_grad`` -> CPU), and all turn predictions into
COCO results with :func:`maskkit.evaluation.predictions_to_coco_results`.

Run apart from score (as detectron2's ``inference_on_dataset`` + evaluator): this module runs
models; :mod:`maskkit.evaluation` scores what they produced; the system object
(:mod:`maskkit.engine.systems`) says which scorer applies.

Python API::

    predictor = maskkit.Predictor("model_best.safetensors")
    pred = predictor(image)   # image: float [3,H,W] 0..1 | uint8 [3,H,W] | PIL | numpy HxWx3 | path
    pred["boxes"], pred["labels"], pred["scores"], pred["masks"], pred["category_ids"]
    pred["masks"].to_rle()    # masks: a compact maskkit.masks.BoxMasks; .to_dense() -> bool [N,1,H,W]

Memory: the models return each mask as 28x28 probabilities over its box
(:class:`maskkit.masks.BoxMasks`); the score threshold drops instances before anything is
pasted, and results, overlays and the web page paste one mask at a time (straight to RLE, or
a crop of the mask's box), so a 12 MP photo with 100 detections never holds 100 full-image
masks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch
from PIL import Image
from torch import nn

from maskkit.config import ModelInfo
from maskkit.data.coco import load_image, pil_to_tensor
from maskkit.errors import DataError
from maskkit.export.onnx_model import load_any, with_precision
from maskkit.export.precision import Choice
from maskkit.masks import CompactMasks
from maskkit.structures import select_instances

__all__ = ["Predictor", "infer_batches", "to_image_tensor", "mask_threshold_of"]


def to_image_tensor(image: Any) -> torch.Tensor:
    """Any common image form -> float32 ``[3, H, W]`` in 0..1 (the data contract)."""
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
    if image.shape[1] == 0 or image.shape[2] == 0:
        raise DataError(f"empty image (shape {tuple(image.shape)})")
    if image.dtype == torch.uint8:
        return image.float() / 255.0
    if image.is_floating_point() and not torch.isfinite(image).all():
        raise DataError("the image holds NaN or infinite values")
    return image.float()


def mask_threshold_of(model: nn.Module) -> float:
    """The probability at which the model's masks are binarised (0.5 for foreign modules)."""
    cfg = getattr(model, "cfg", None)  # maskkit models keep their model config as .cfg
    return float(cfg.mask_threshold) if cfg is not None and hasattr(cfg, "mask_threshold") else 0.5


@torch.no_grad()
def infer_batches(
    model: nn.Module, images: Iterable[Any], batch_size: int = 1, device: str | torch.device = "cpu"
) -> Iterator[dict]:
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
    movable = (torch.Tensor, CompactMasks)
    return [{k: (v.to("cpu") if isinstance(v, movable) else v) for k, v in p.items()} for p in preds]


def _filter(pred: dict, score_thresh: float) -> dict:
    """The instances scoring at least ``score_thresh`` (before any mask is pasted)."""
    return select_instances(pred, pred["scores"] >= score_thresh)


class Predictor:
    """Inference with a trained model: ``Predictor(path_or_model)(image) -> prediction``.

    Accepts a model file (see :mod:`maskkit.checkpoint`), an exported ``.onnx`` / OpenVINO
    ``.xml`` file (run by ONNX Runtime or OpenVINO, :mod:`maskkit.export.onnx_model`) or a loaded
    module, at ``precision`` (fp32 | bf16 | int8 | auto; None: the file's own) on ``runtime``
    (an exported file's: onnxruntime or openvino; see :mod:`maskkit.export.precision`). One image in, one
    prediction dict out; a list in, a list out (run in batches of ``batch_size``). Each
    prediction also carries ``category_ids`` (the user's ids) and ``class_names``, from
    ``model.info`` (:class:`maskkit.config.ModelInfo`; a module without it reports labels as ids).
    Instances under ``score_thresh`` are dropped before any mask is pasted; ``masks`` stay
    compact (:class:`maskkit.masks.BoxMasks`, see :mod:`maskkit.structures`).
    """

    def __init__(
        self,
        model: str | Path | nn.Module,
        device: str = "cpu",
        score_thresh: float = 0.0,
        batch_size: int = 1,
        precision: str | None = None,
        runtime: str | None = None,
    ):
        if isinstance(model, (str, Path)):  # a model file or an exported .onnx / OpenVINO .xml
            model = load_any(model, device=device, precision=precision, runtime=runtime)
        elif precision is not None:
            model = with_precision(model, precision, type(model).__name__, device)
        self.model = model.to(device).eval()
        # what runs and why (fp32 / bf16 / int8 on eager / onnxruntime / openvino)
        self.precision: Choice = getattr(model, "precision", None) or Choice("fp32", "eager", "fp32")
        self.device = torch.device(device)
        self.score_thresh, self.batch_size = float(score_thresh), int(batch_size)
        self.info: ModelInfo | None = getattr(model, "info", None)  # None: a module not built by maskkit
        self.class_names: list[str] = list(self.info.class_names) if self.info else []
        self.label_to_cat_id: dict[int, int] = self.info.label_to_cat_id if self.info else {}
        self.config = self.info.config if self.info else None
        self.mask_threshold = mask_threshold_of(self.model)

    def _finish(self, pred: dict) -> dict:
        pred = _filter(pred, self.score_thresh)
        labels = pred["labels"].tolist()
        pred["category_ids"] = torch.tensor(
            [self.label_to_cat_id.get(int(k), int(k)) for k in labels], dtype=torch.int64
        )
        pred["class_names"] = [self.class_names[k - 1] if 0 < k <= len(self.class_names) else str(k) for k in labels]
        return pred

    def predict_many(self, images: Iterable[Any]) -> Iterator[dict]:
        for pred in infer_batches(self.model, images, self.batch_size, self.device):
            yield self._finish(pred)

    def __call__(self, images: Any) -> dict | list[dict]:
        if isinstance(images, (list, tuple)):
            return list(self.predict_many(images))
        return next(self.predict_many([images]))
