"""The model behind ``maskkit serve``: one loaded model, its description, cached analyses.

No web framework here (the app in :mod:`maskkit.serve.app` is a thin layer over this), so
everything the page shows is testable as plain Python::

    session = ServeSession("model_best.safetensors")
    analysis = session.analyze(image)                  # image: float [3, H, W] in 0..1
    session.coco_results(analysis, score_thr=0.3)      # COCO results (list of dicts)
    session.overlay_png(analysis, score_thr=0.3)       # PNG bytes of the overlay
    session.detections(analysis)                       # table rows, best first

Inference goes through the public :class:`maskkit.Predictor`; overlays through
:func:`maskkit.viz.draw_instances`; COCO results through the evaluator's
:func:`maskkit.evaluation.predictions_to_coco_results` (the same format ``maskkit
predict`` writes). An analysis keeps every detection the model returned (its masks compact:
28x28 probabilities over each box, pasted one at a time when drawn or written), so moving the
score or top-N slider only re-draws, it never re-runs the model.
"""

from __future__ import annotations

import hashlib
import io
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from maskkit.data.synthetic import image_rng, render_image
from maskkit.engine.inference.predictor import Predictor
from maskkit.engine.systems import system_of
from maskkit.errors import MaskkitError
from maskkit.evaluation import predictions_to_coco_results
from maskkit.export.onnx_model import load_any
from maskkit.masks import is_compact, mask_areas
from maskkit.viz import draw_instances

__all__ = ["Analysis", "ServedModel", "ServeSession", "synthetic_examples"]

DEFAULT_MAX_PROPOSALS = 100  # SharpMask: proposals computed per image (the top-N slider's maximum)


@dataclass
class ServedModel:
    """What the page states about the model."""

    name: str  # the preset name stored in the model file
    system: str  # "centermask" | "sharpmask"
    weights: str  # the model file's name
    classes: list[str]  # label k is classes[k - 1]; ["object"] for SharpMask proposals
    class_agnostic: bool  # SharpMask: class-agnostic proposals (labels all 1)
    input_size: str  # how the model sizes its input, in words
    max_detections: int  # the most instances one image can give (top-N slider's maximum)
    precision: str = "fp32"  # what runs (fp32 / bf16 / int8 on its runtime) and why

    def as_json(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Analysis:
    """One image and every prediction the model made for it (scores descending).

    ``image`` uint8 ``[3, H, W]``; ``boxes [N, 4]`` xyxy px; ``labels [N]`` (1..K);
    ``scores [N]``; ``masks``: the model's compact masks (:class:`maskkit.masks.BoxMasks`,
    binarised at the model's mask threshold when pasted), a bool ``[N, H, W]`` tensor for a model
    that returns dense masks, or None; ``mask_scores [N]`` or None.
    """

    id: str
    name: str
    image: torch.Tensor
    boxes: torch.Tensor
    labels: torch.Tensor
    scores: torch.Tensor
    masks: object | None
    mask_scores: torch.Tensor | None = None
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)`` in px."""
        return int(self.image.shape[-2]), int(self.image.shape[-1])


def _png(image_uint8: torch.Tensor) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image_uint8.permute(1, 2, 0).contiguous().numpy()).save(buf, format="PNG")
    return buf.getvalue()


def synthetic_examples(num: int = 3, size: int = 256, seed: int = 2020) -> list[tuple[str, bytes]]:
    """``num`` synthetic shapes scenes (:mod:`maskkit.data.synthetic`), rendered in memory as
    ``(name, PNG bytes)``: images to try a model on without uploading anything."""
    out = []
    for i in range(num):
        image, _ = render_image(image_rng(seed, "val", i), size)  # uint8 [size, size, 3]
        out.append((f"shapes-{i + 1}.png", _png(torch.from_numpy(image).permute(2, 0, 1))))
    return out


class ServeSession:
    """A loaded model file plus a small LRU cache of analyses (thread-safe).

    ``max_proposals`` caps how many proposals a SharpMask model computes per image (its
    ``top_n``; full-image masks for 1000 proposals would take gigabytes); ``cache_size`` is
    the number of analyses kept for the sliders and download buttons.
    """

    def __init__(
        self,
        weights: str | Path,
        device: str = "cpu",
        max_proposals: int = DEFAULT_MAX_PROPOSALS,
        cache_size: int = 4,
        num_examples: int = 3,
        precision: str | None = None,
        runtime: str | None = None,
    ):
        if max_proposals < 1:
            raise MaskkitError(f"max_proposals must be at least 1, got {max_proposals}")
        model = load_any(weights, device=device, precision=precision, runtime=runtime)  # also .onnx / .xml
        cfg = model.info.config.model
        system = system_of(model.info.config)
        max_det = system.limit_detections(model, max_proposals)
        self.predictor = Predictor(model, device=device)
        self.mask_threshold = self.predictor.mask_threshold
        agnostic = system.class_agnostic
        classes = list(self.predictor.class_names) or [str(k) for k in range(1, int(cfg.num_classes) + 1)]
        self.info = ServedModel(
            name=model.info.config.name or cfg.system,
            system=cfg.system,
            weights=Path(weights).name,
            classes=["object"] if agnostic else classes,
            class_agnostic=agnostic,
            input_size=system.describe_input(cfg),
            max_detections=max_det,
            precision=f"{self.predictor.precision.reason} on {self.predictor.precision.runtime}",
        )
        self.label_to_cat_id = None if agnostic else (self.predictor.label_to_cat_id or None)
        self.examples = synthetic_examples(num_examples) if num_examples > 0 else []
        self._lock = threading.Lock()  # one forward pass at a time (torch uses all cores anyway)
        self._cache: OrderedDict[str, Analysis] = OrderedDict()
        self._cache_size = max(1, int(cache_size))

    # -- inference

    def analyze(self, image: torch.Tensor, name: str = "image") -> Analysis:
        """Run the model on ``image`` (float ``[3, H, W]`` in 0..1) -> a cached :class:`Analysis`
        (an identical image is answered from the cache)."""
        image_u8 = (image.clamp(0, 1) * 255).round().to(torch.uint8)
        key = hashlib.sha256(image_u8.numpy().tobytes() + str(tuple(image_u8.shape)).encode()).hexdigest()[:20]
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            t0 = time.perf_counter()
            pred = self.predictor(image)
            seconds = time.perf_counter() - t0
        order = torch.argsort(pred["scores"], descending=True)
        masks = pred.get("masks")
        if is_compact(masks):
            masks = masks[order]
        elif masks is not None:
            masks = masks[order]
            masks = masks[:, 0] if masks.dim() == 4 else masks
            masks = masks if masks.dtype == torch.bool else masks >= self.mask_threshold  # [N, H, W]
        ms = pred.get("mask_scores")
        analysis = Analysis(
            id=key,
            name=name,
            image=image_u8,
            boxes=pred["boxes"][order].float(),
            labels=pred["labels"][order],
            scores=pred["scores"][order].float(),
            masks=masks,
            mask_scores=ms[order] if ms is not None else None,
            seconds=seconds,
        )
        with self._lock:
            self._cache[key] = analysis
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return analysis

    def get(self, analysis_id: str) -> Analysis | None:
        """A cached analysis, or None once it has been evicted (the page then re-uploads)."""
        with self._lock:
            return self._cache.get(analysis_id)

    # -- views of an analysis

    def selection(self, analysis: Analysis, score_thr: float = 0.0, top_n: int | None = None) -> torch.Tensor:
        """Indices of the kept instances: score >= ``score_thr``, then the best ``top_n``."""
        keep = (analysis.scores.double() >= float(score_thr)).nonzero().flatten()  # float64, as the page compares
        if top_n is not None:
            keep = keep[: max(0, int(top_n))]
        return keep

    def _subset(self, analysis: Analysis, keep: torch.Tensor) -> dict:
        """The kept instances in the data contract (masks compact, or dense ``[n, 1, H, W]`` bool)."""
        pred = {"boxes": analysis.boxes[keep], "labels": analysis.labels[keep], "scores": analysis.scores[keep]}
        if is_compact(analysis.masks):
            pred["masks"] = analysis.masks[keep]
        elif analysis.masks is not None:
            pred["masks"] = analysis.masks[keep][:, None]
        if analysis.mask_scores is not None:
            pred["mask_scores"] = analysis.mask_scores[keep]
        return pred

    def coco_results(
        self, analysis: Analysis, score_thr: float = 0.0, top_n: int | None = None, image_id: int = 1
    ) -> list[dict]:
        """COCO results of the kept instances (``image_id``, ``category_id``, ``bbox`` xywh,
        ``score``, RLE ``segmentation``, ``segm_score``), as ``maskkit predict`` writes them."""
        pred = self._subset(analysis, self.selection(analysis, score_thr, top_n))
        return predictions_to_coco_results([pred], [int(image_id)], self.label_to_cat_id, self.mask_threshold)

    def overlay_png(self, analysis: Analysis, score_thr: float = 0.0, top_n: int | None = None) -> bytes:
        """PNG bytes of the image with the kept instances drawn (masks, boxes, names, scores)."""
        pred = self._subset(analysis, self.selection(analysis, score_thr, top_n))
        return _png(draw_instances(analysis.image, pred, self.info.classes))

    def detections(self, analysis: Analysis) -> list[dict]:
        """Every instance as a table row, best first: ``rank``, ``label``, ``class_name``,
        ``category_id``, ``score``, ``bbox`` (xywh px, rounded), ``area`` (mask px)."""
        rows = []
        areas = mask_areas(analysis.masks).tolist() if analysis.masks is not None else None
        for i in range(analysis.scores.numel()):
            label = int(analysis.labels[i])
            x0, y0, x1, y1 = analysis.boxes[i].tolist()
            name = self.info.classes[label - 1] if 0 < label <= len(self.info.classes) else str(label)
            cat = (self.label_to_cat_id or {}).get(label, label)
            rows.append(
                {
                    "rank": i + 1,
                    "label": label,
                    "class_name": name,
                    "category_id": int(cat),
                    "score": float(analysis.scores[i]),
                    "bbox": [round(x0, 1), round(y0, 1), round(x1 - x0, 1), round(y1 - y0, 1)],
                    "area": int(areas[i]) if areas is not None else None,
                }
            )
        return rows
