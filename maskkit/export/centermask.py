"""The ONNX graph of a :class:`maskkit.models.centermask.model.CenterMask`: the model's own
static inference (:meth:`CenterMask.detect_and_segment`) on its inference modules
(:func:`maskkit.export.fuse.inference_modules`), traced for one preprocessed image.

Backbone, FPN, FCOS head, the decode (per-level top-k, class-wise NMS as ONNX
``NonMaxSuppression``, the best ``detections_per_image``), the Eq. 2 level of each box, RoIAlign
(ONNX ``RoiAlign``, opset 16 ``half_pixel`` = torchvision ``aligned=True``), the SAG-Mask head and
the MaskIoU head — one graph. Inputs: ``image`` float ``[1, 3, H_pad, W_pad]`` (normalised,
zero-padded, any size) and ``size`` int64 ``[2]`` (the resized, unpadded ``h, w``). Outputs:
``boxes [N, 4]`` (resized-image pixels), ``scores [N]``, ``labels [N]`` int64 (1..K),
``mask_probs [N, 28, 28]``, ``mask_scores [N]``. The resize, normalisation, padding, box scaling
and mask paste are the NumPy runner's (:mod:`maskkit.export.runtime`), after
:meth:`CenterMask.finish` and the model's post-processing convention.

ONNX Runtime 1.32's CPU ``RoiAlign`` equals torchvision's ``roi_align(aligned=True,
sampling_ratio=0)`` bit for bit on CenterMask-like features and boxes
(``benchmarks/roialign_ort_vs_torchvision.py``, ``benchmarks/onnx_export.md``), so the op is used.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from maskkit.export.fuse import inference_modules
from maskkit.export.onnx import OnnxGraph

__all__ = ["CenterMaskGraph", "centermask_graph", "centermask_runtime_spec", "example_input"]

OUTPUTS = ["boxes", "scores", "labels", "mask_probs", "mask_scores"]


class CenterMaskGraph(nn.Module):
    """``(image [1, 3, H, W], size [2]) -> boxes, scores, labels, mask_probs, mask_scores``: the
    model's :meth:`detect_and_segment` on its inference modules (same weights, same numbers as
    ``model.inference`` on one preprocessed image, to float rounding)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = inference_modules(model)

    def forward(self, image: Tensor, size: Tensor):
        dets, probs, mask_scores = self.model.detect_and_segment(image, size[None])
        d = dets[0]
        return d["boxes"], d["scores"], d["labels"], probs, mask_scores


def centermask_runtime_spec(model: nn.Module) -> dict:
    """What the NumPy runner needs besides the graph (pre- and post-processing settings)."""
    cfg, conv = model.cfg, model.input_convention
    return {
        "pipeline": "detections",
        "min_size_test": int(cfg.min_size_test),
        "max_size_test": int(cfg.max_size_test),
        "size_divisibility": int(cfg.size_divisibility),
        "input_format": str(conv.format),
        "pixel_mean": [float(v) for v in conv.pixel_mean],
        "pixel_std": [float(v) for v in conv.pixel_std],
        "postprocess": str(cfg.postprocess),
        "mask_threshold": float(cfg.mask_threshold),
    }


def example_input(model: nn.Module) -> tuple[Tensor, Tensor]:
    """A traced example: a deterministic pattern (not zeros: a constant image would let the
    tracer see an empty detection set) at a size divisible by the model's divisibility."""
    d = max(int(model.cfg.size_divisibility), 32)
    h, w = 4 * d, 5 * d
    g = torch.Generator().manual_seed(0)
    return torch.randn(1, 3, h, w, generator=g), torch.tensor([h, w], dtype=torch.int64)


def centermask_graph(model: nn.Module) -> OnnxGraph:
    """The :class:`CenterMaskGraph` of ``model`` with its example input, names and dynamic axes."""
    axes = {"image": {2: "height", 3: "width"}, **{k: {0: "n"} for k in OUTPUTS}}
    return OnnxGraph(
        CenterMaskGraph(model.eval()).eval(),
        example_input(model),
        ["image", "size"],
        OUTPUTS,
        axes,
        centermask_runtime_spec(model),
    )
