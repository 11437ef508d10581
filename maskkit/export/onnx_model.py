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
from maskkit.export.fuse import AutocastModel, fuse_model
from maskkit.export.precision import Choice, choose_precision
from maskkit.export.runtime import OnnxRunner
from maskkit.masks import BoxMasks
from maskkit.models.sharpmask.model import clamp_boxes
from maskkit.models.zoo import read_config

__all__ = ["OnnxModel", "is_onnx_file", "load_any", "with_precision"]


def is_onnx_file(path: str | Path) -> bool:
    """An exported maskkit file: ``.onnx``, or OpenVINO IR (``.xml``)."""
    return Path(path).suffix.lower() in (".onnx", ".xml")


class OnnxModel(nn.Module):
    """``OnnxModel("model.onnx")(images)``: float ``[3, H, W]`` images in 0..1 -> prediction
    dicts of CPU tensors (the data contract, ``masks`` a compact :class:`BoxMasks` as the eager
    models give), computed by ONNX Runtime or OpenVINO (:class:`OnnxRunner`: ``precision`` and
    ``backend`` as there; ``model.precision`` says what runs and why)."""

    def __init__(
        self,
        path: str | Path,
        threads: int | None = None,
        backend: str | None = None,
        precision: str | None = None,
    ):
        super().__init__()
        self.runner = OnnxRunner(path, threads, backend, precision)
        self.precision: Choice = self.runner.choice
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


def with_precision(model: nn.Module, precision: str | None, what: str, device: str | torch.device = "cpu") -> nn.Module:
    """``model`` (a PyTorch module) at ``precision`` (None: float32): bf16 is PyTorch autocast on
    its fused inference modules (:class:`maskkit.export.fuse.AutocastModel`); on the CPU only
    where the CPU has native bf16 (:func:`maskkit.export.precision.choose_precision`). The
    decision is ``model.precision``."""
    dev = torch.device(device)
    if dev.type == "cuda":
        if precision == "int8":
            raise MaskkitError(f"{what}: int8 runs exported files on the CPU; use fp32 or bf16 on CUDA")
        # auto keeps float32 on GPUs: bf16 autocast was slower at batch 1 (benchmarks/gpu.md)
        bf16 = precision == "bf16"
        if bf16 and not torch.cuda.is_bf16_supported():
            raise MaskkitError("--precision bf16: this GPU has no bfloat16 support; use fp32")
        choice = Choice("bf16" if bf16 else "fp32", "eager", "bf16 (CUDA autocast)" if bf16 else "fp32")
    else:
        choice = choose_precision(precision, "fp32", "eager", what)
    if choice.precision == "bf16":
        model = AutocastModel(fuse_model(model), torch.bfloat16)
    model.precision = choice
    return model


def load_any(
    path: str | Path,
    device: str | torch.device = "cpu",
    precision: str | None = None,
    runtime: str | None = None,
    threads: int | None = None,
) -> nn.Module:
    """A model file (safetensors, :func:`maskkit.checkpoint.load_model`) or an exported file
    (``.onnx`` / OpenVINO ``.xml``, CPU only: ONNX Runtime's or OpenVINO's CPU plugin), at
    ``precision`` (None: the file's own; see :mod:`maskkit.export.precision`); ``runtime`` names
    an exported file's runtime (onnxruntime or openvino). ``model.precision`` says what runs."""
    if not is_onnx_file(path):
        if runtime not in (None, "eager"):
            raise MaskkitError(f"--runtime {runtime} runs exported files: `maskkit export --weights {path}` first")
        return with_precision(load_model(path, device=device), precision, str(path), device)
    if torch.device(device).type != "cpu":
        raise MaskkitError(f"{path}: exported files run on the CPU (ONNX Runtime, OpenVINO); use --device cpu")
    return OnnxModel(path, threads=threads, backend=None if runtime == "eager" else runtime, precision=precision)
