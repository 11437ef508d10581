"""An exported ``.onnx`` file behind the module interface the engine runs (``model(images) ->
predictions``, ``model.info``, ``model.cfg``), so ``maskkit predict/eval --weights model.onnx``
and ``Predictor("model.onnx")`` take the same path as a model file. The work is done by the
NumPy + ONNX Runtime runner (:mod:`maskkit.export.runtime`); this adapter only converts
tensors."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from maskkit.checkpoint import load_model
from maskkit.config import InputConvention, ModelInfo
from maskkit.errors import MaskkitError
from maskkit.export.runtime import OnnxRunner
from maskkit.masks import BoxMasks
from maskkit.models.sharpmask.model import clamp_boxes
from maskkit.models.zoo import read_config

__all__ = ["OnnxModel", "is_onnx_file", "load_any"]


def is_onnx_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() == ".onnx"


class OnnxModel(nn.Module):
    """``OnnxModel("model.onnx")(images)``: float ``[3, H, W]`` images in 0..1 -> prediction
    dicts of CPU tensors (the data contract, ``masks`` a compact :class:`BoxMasks` as the eager
    models give), computed by ONNX Runtime."""

    def __init__(self, path: str | Path, threads: int | None = None, backend: str = "onnxruntime"):
        super().__init__()
        self.runner = OnnxRunner(path, threads, backend)
        rt = self.runner.runtime
        convention = InputConvention(rt.get("input_format", "RGB"), tuple(rt["pixel_mean"]), tuple(rt["pixel_std"]))
        self.info = ModelInfo(
            read_config(self.runner.config_json), self.runner.class_names, self.runner.cat_ids, convention
        )
        self.cfg = self.info.config.model

    def forward(self, images: list[torch.Tensor]) -> list[dict]:
        out = []
        threshold = self.runner.mask_threshold
        for img in images:
            size = tuple(img.shape[-2:])
            pred = self.runner(img.detach().to("cpu", torch.float32).numpy(), paste=False)
            zero_outside = bool(pred.pop("zero_outside", True))
            pred = {k: torch.from_numpy(v) for k, v in pred.items()}
            probs = pred.pop("mask_probs")
            if "window_boxes" in pred:  # proposals: tight boxes of the pasted window masks
                masks = BoxMasks(probs, pred.pop("window_boxes"), size, threshold)
                pred["boxes"] = clamp_boxes(masks.tight_boxes(pred.pop("fallback")), size)
            else:
                masks = BoxMasks(probs, pred["boxes"], size, threshold, zero_outside)
            out.append({**pred, "masks": masks})
        return out


def load_any(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """A model file (safetensors, :func:`maskkit.checkpoint.load_model`) or an exported
    ``.onnx`` file (CPU only: the runner uses ONNX Runtime's CPU provider)."""
    if not is_onnx_file(path):
        return load_model(path, device=device)
    if torch.device(device).type != "cpu":
        raise MaskkitError(f"{path}: .onnx files run on the CPU with ONNX Runtime; use --device cpu")
    return OnnxModel(path)
