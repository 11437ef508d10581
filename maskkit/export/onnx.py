"""``maskkit export``: a model file -> one ONNX file holding the whole inference pipeline.

CenterMask: backbone, FPN, FCOS head, decoding (per-level top-k), class-wise NMS (ONNX
``NonMaxSuppression``), the best ``detections_per_image``, Eq. 2 level assignment, RoIAlign
(ONNX ``RoiAlign``, opset 16 ``half_pixel`` = torchvision ``aligned=True``), the SAG-Mask head
and the MaskIoU head — one graph. Inputs: ``image`` float ``[1, 3, H_pad, W_pad]`` (normalised,
zero-padded, any size) and ``size`` int64 ``[2]`` (the resized, unpadded ``h, w``). Outputs:
``boxes [N, 4]`` (resized-image pixels), ``scores [N]``, ``labels [N]`` int64 (1..K),
``mask_probs [N, 28, 28]``, ``mask_scores [N]``. The resize, normalisation, padding, box scaling
and mask paste are NumPy in :mod:`maskkit.export.runtime`.

Why one graph: ONNX Runtime 1.32's CPU ``RoiAlign`` equals torchvision's ``roi_align(aligned=True,
sampling_ratio=0)`` bit for bit on CenterMask-like features and boxes
(``benchmarks/roialign_ort_vs_torchvision.py``, record in ``benchmarks/onnx_export.md``), so the
long-standing half-pixel error is not present in the installed version and the op is used as is.

SharpMask / DeepMask: the trunk, heads and refinement over the paper's scale pyramid; see
:func:`export_sharpmask`.

The file's ``metadata_props`` carry the model config, class names, category ids and what the
NumPy runner needs (``maskkit_runtime``), so ``predict``/``eval``/``Predictor`` take the ``.onnx``
like a model file.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection._utils import _topk_min
from torchvision.ops import batched_nms, roi_align

from maskkit.checkpoint import load_model
from maskkit.config import config_to_json
from maskkit.errors import MaskkitError
from maskkit.export.fuse import MergedFCOSHead
from maskkit.models.centermask.fcos import level_locations
from maskkit.models.centermask.mask_head import assign_fpn_levels
from maskkit.models.centermask.model import CenterMask
from maskkit.models.sharpmask.model import SharpMask

__all__ = ["DEFAULT_OPSET", "CenterMaskGraph", "export_model", "export_file", "runtime_spec"]

DEFAULT_OPSET = 17  # RoiAlign with coordinate_transformation_mode (aligned=True) needs >= 16
EXPORT_FORMAT = "1"


def _topk_dynamic(x: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """``x.topk(min(k, len(x)))`` with the minimum taken in the graph while tracing (the length
    depends on the image size, which is dynamic in the exported file): torchvision's own helper
    for its detection models' export."""
    return x.topk(_topk_min(x, k, 0))


class CenterMaskGraph(nn.Module):
    """The exportable eval pipeline of a :class:`maskkit.models.centermask.model.CenterMask`
    (same weights, same numbers as ``model.inference`` on one preprocessed image)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.cfg = model.cfg
        # the two FCOS towers as one of twice the width (same numbers, half the nodes per level)
        self.fcos = MergedFCOSHead(model.fcos).eval()
        # the SAG-Mask deconv (2x2, stride 2) as a 1x1 conv: w1[o*4 + a*2 + b, c] = W[c, o, a, b]
        deconv = model.mask_head.deconv
        cin, cout = deconv.in_channels, deconv.out_channels
        self.register_buffer("deconv_w", deconv.weight.detach().permute(1, 2, 3, 0).reshape(cout * 4, cin, 1, 1))
        self.register_buffer("deconv_b", deconv.bias.detach().repeat_interleave(4))
        # MaskIoU's first conv sees C + 1 channels (features + pooled mask); zero channels pad the
        # input to a multiple of 16 so ONNX Runtime's NCHWc conv applies (it needs whole blocks).
        self.iou_pad = 0
        if model.maskiou is not None:
            conv0 = model.maskiou.convs[0]
            self.iou_pad = (-conv0.in_channels) % 16
            self.register_buffer("iou_w0", F.pad(conv0.weight.detach(), (0, 0, 0, 0, 0, self.iou_pad)))

    def decode(self, head, feats: list[Tensor], size: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """As :func:`maskkit.models.centermask.fcos.fcos_decode` for one image, written without
        data-dependent Python branches: per level the top ``pre_nms_topk`` of all
        (location, class) scores, then the ones above ``score_thresh`` (the same set as
        thresholding first), clip (maskkit post-processing), class-wise NMS, the best
        ``detections_per_image``. -> boxes ``[N, 4]``, scores ``[N]``, labels ``[N]``."""
        f = self.cfg.fcos
        cls_l, reg_l, ctr_l = head
        boxes_l, scores_l, labels_l, ok_l = [], [], [], []
        for cls, reg, ctr, loc, s in zip(
            cls_l, reg_l, ctr_l, level_locations(feats, self.model.strides), self.model.strides
        ):
            k = cls.shape[1]
            prob = cls[0].permute(1, 2, 0).reshape(-1, k).sigmoid()  # [HW, K]
            score = prob * ctr[0].reshape(-1, 1).sigmoid()
            if f.scoring == "sqrt":
                score = score.sqrt()
            cand = (prob > f.score_thresh).reshape(-1)
            score = torch.where(cand, score.reshape(-1), torch.full_like(score.reshape(-1), -1.0))
            top, idx = _topk_dynamic(score, f.pre_nms_topk)
            loc_idx, cls_idx = idx // k, idx % k
            d = reg[0].permute(1, 2, 0).reshape(-1, 4)[loc_idx] * s
            p = loc[loc_idx]
            boxes_l.append(torch.cat([p - d[:, :2], p + d[:, 2:]], dim=1))
            scores_l.append(top)
            labels_l.append(cls_idx + 1)
            ok_l.append(cand[idx])
        keep = torch.cat(ok_l).nonzero()[:, 0]
        boxes, scores, labels = torch.cat(boxes_l)[keep], torch.cat(scores_l)[keep], torch.cat(labels_l)[keep]
        if self.cfg.postprocess != "centermask2":  # centermask2 clips after the mask branch (runner)
            hw = size.to(boxes.dtype)
            lim = torch.stack([hw[1], hw[0], hw[1], hw[0]])
            boxes = torch.minimum(torch.clamp(boxes, min=0.0), lim)
            nonempty = ((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])).nonzero()[:, 0]
            boxes, scores, labels = boxes[nonempty], scores[nonempty], labels[nonempty]
        keep = batched_nms(boxes, scores, labels, f.nms_thresh)[: f.detections_per_image]
        return boxes[keep], scores[keep], labels[keep]

    def roi_features(self, feats: list[Tensor], boxes: Tensor, size: Tensor) -> Tensor:
        """Eq. 2 level of each box, RoIAlign on every level of P_kmin..P_kmax, each RoI's own
        level selected (``where``; no scatter, so zero boxes export too) -> ``[N, C, 14, 14]``.
        On each level the other levels' RoIs are replaced by an empty box, for which RoIAlign's
        adaptive sampling (``sampling_ratio=0``) takes no samples (ONNX Runtime, torchvision),
        so no RoI is sampled three times. (Their rows are then discarded by the ``where``, not
        added as zeros: OpenVINO's ROIAlign returns non-zero values for empty boxes.)"""
        m = self.cfg.mask
        area = (size[0] * size[1]).to(boxes.dtype)
        levels = assign_fpn_levels(boxes, area, m.k_min, m.k_max, m.assignment)  # [N]
        rois = torch.cat([torch.zeros_like(boxes[:, :1]), boxes], dim=1)
        out = None
        for i in range(m.k_max - m.k_min + 1):  # feats are P_kmin..P_kmax
            on = (levels == m.k_min + i)[:, None]
            r = roi_align(
                feats[i],
                torch.where(on, rois, torch.zeros_like(rois)),
                m.pooler_resolution,
                spatial_scale=1.0 / self.model.mask_strides[i],
                sampling_ratio=0,
                aligned=True,
            )
            sel = on[:, :, None, None]
            out = torch.where(sel, r, torch.zeros_like(r)) if out is None else torch.where(sel, r, out)
        return out

    def forward(self, image: Tensor, size: Tensor):
        """image ``[1, 3, H_pad, W_pad]`` normalised, size int64 ``[2]`` -> boxes, scores, labels,
        mask_probs ``[N, 28, 28]``, mask_scores (``CenterMask.segment`` before the paste)."""
        model = self.model
        feats, mask_feats = model.features(image)
        boxes, scores, labels = self.decode(self.fcos(feats), feats, size)
        roi_feats = self.roi_features(mask_feats, boxes, size)
        probs = self.mask_logits(roi_feats, labels).sigmoid()  # [N, 28, 28]
        if model.maskiou is None:
            return boxes, scores, labels, probs, scores.clone()
        n = torch.arange(labels.shape[0], device=labels.device)
        iou = self.maskiou(roi_feats, probs[:, None])[n, labels - 1]
        # CenterMask.segment: maskkit clamps the predicted IoU to [1e-3, 1]; centermask2 does not.
        mask_scores = scores * (iou if self.cfg.postprocess == "centermask2" else iou.clamp(min=1e-3, max=1.0))
        return boxes, scores, labels, probs, mask_scores

    def mask_logits(self, roi_feats: Tensor, labels: Tensor) -> Tensor:
        """``model.mask_head`` + ``select_class``: ``[N, C, 14, 14]`` -> the label's mask logits
        ``[N, 28, 28]``, without the ``[N, K, 28, 28]`` of every class. The 2x2 stride-2 deconv is
        the 1x1 convolution to ``4C`` channels it is (``o*4 + a*2 + b`` = output channel ``o`` at
        offset ``(a, b)``; ONNX Runtime runs it in its NCHWc layout, its ConvTranspose ~6x
        slower), ReLU, then only the label's predictor row is applied (one ``[C] x [C, 4*14*14]``
        product per RoI) and the four offsets are interleaved on the small result."""
        head = self.model.mask_head
        x = head.sam(head.convs(roi_feats))  # [N, C, h, w]
        n, h, w = x.shape[0], x.shape[2], x.shape[3]
        y = F.relu(F.conv2d(x, self.deconv_w, self.deconv_b))  # [N, 4C, h, w]
        pred = head.predictor
        row = labels - 1 if pred.out_channels > 1 else torch.zeros_like(labels)
        z = torch.matmul(
            pred.weight[row].flatten(1)[:, None, :], y.reshape(n, pred.in_channels, 4 * h * w)
        )  # [N, 1, 4hw]
        z = z.reshape(n, 2, 2, h, w).permute(0, 3, 1, 4, 2).reshape(n, 2 * h, 2 * w)
        return z + pred.bias[row][:, None, None]

    def maskiou(self, roi_feats: Tensor, probs: Tensor) -> Tensor:
        """``model.maskiou`` (MaskIoUHead.forward) with its first conv's input zero-padded to whole
        16-channel blocks: ``[N, C, 14, 14]``, ``[N, 1, 28, 28]`` -> ``[N, K]``."""
        head = self.model.maskiou
        x = torch.cat([roi_feats, F.max_pool2d(probs, kernel_size=2, stride=2)], dim=1)
        conv0 = head.convs[0]
        if self.iou_pad:
            x = F.pad(x, (0, 0, 0, 0, 0, self.iou_pad))
        x = F.relu(F.conv2d(x, self.iou_w0, conv0.bias, conv0.stride, conv0.padding))
        x = head.convs[2:](x).flatten(1)  # convs = [conv, ReLU, conv, ReLU, ...]
        return head.predictor(F.relu(head.fc2(F.relu(head.fc1(x)))))


def runtime_spec(model: nn.Module) -> dict:
    """What the NumPy runner needs besides the graph (pre- and post-processing settings)."""
    cfg = model.cfg
    return {
        "pipeline": "detections",
        "min_size_test": int(cfg.min_size_test),
        "max_size_test": int(cfg.max_size_test),
        "size_divisibility": int(cfg.size_divisibility),
        "input_format": str(cfg.input_format),
        "pixel_mean": [float(v) for v in cfg.pixel_mean],
        "pixel_std": [float(v) for v in cfg.pixel_std],
        "postprocess": str(cfg.postprocess),
        "mask_threshold": float(cfg.mask_threshold),
    }


def _example_input(model: nn.Module) -> tuple[Tensor, Tensor]:
    """A traced example: a deterministic pattern (not zeros: a constant image would let the
    tracer see an empty detection set) at a size divisible by the model's divisibility."""
    d = max(int(model.cfg.size_divisibility), 32)
    h, w = 4 * d, 5 * d
    g = torch.Generator().manual_seed(0)
    return torch.randn(1, 3, h, w, generator=g), torch.tensor([h, w], dtype=torch.int64)


def export_model(model: nn.Module, out: str | Path, opset: int = DEFAULT_OPSET) -> Path:
    """Write ``model`` (a maskkit model in eval mode, with ``model.info``) as ONNX to ``out``."""
    if opset < 16:
        raise MaskkitError(f"--opset {opset}: RoiAlign with half-pixel (aligned) coordinates needs opset >= 16")
    if getattr(model, "info", None) is None:
        raise MaskkitError(f"export: a {type(model).__name__} without model.info was not built by maskkit")
    # dispatch on the network's own class (what is traced), not on a system name
    if isinstance(model, SharpMask):
        return _export_sharpmask(model, out, opset)
    if not isinstance(model, CenterMask):
        raise MaskkitError(
            f"export: no ONNX graph for {type(model).__name__}; export takes CenterMask and "
            "DeepMask/SharpMask model files"
        )
    graph = CenterMaskGraph(model.eval()).eval()
    image, size = _example_input(model)
    outputs = ["boxes", "scores", "labels", "mask_probs", "mask_scores"]
    axes = {"image": {2: "height", 3: "width"}, **{k: {0: "n"} for k in outputs}}
    data = _trace(graph, (image, size), ["image", "size"], outputs, axes, opset)
    return _write_with_metadata(data, out, model, runtime_spec(model))


def _trace(graph: nn.Module, args: tuple, inputs: list[str], outputs: list[str], axes: dict, opset: int) -> bytes:
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        # TracerWarnings about shape-derived Python ints (the parity tests check two sizes)
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph,
            args,
            buf,
            opset_version=opset,
            dynamo=False,
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=axes,
        )
    return buf.getvalue()


def _export_sharpmask(model: nn.Module, out: str | Path, opset: int) -> Path:
    """DeepMask / SharpMask proposals (:mod:`maskkit.export.sharpmask`); the example
    canvases come from the runner's own pre-processing of a 240x320 pattern."""
    import numpy as np

    from maskkit.export.runtime import sharpmask_canvases
    from maskkit.export.sharpmask import SharpMaskGraph, sharpmask_runtime_spec

    spec = sharpmask_runtime_spec(model)
    image = np.random.default_rng(0).random((3, 240, 320), dtype=np.float32)
    canvases = [torch.from_numpy(c) for c in sharpmask_canvases(image, spec)]
    names = [f"scale_{i}" for i in range(len(canvases))]
    outputs = ["scores", "scale_index", "cells", "masks"]
    axes = {**{n: {2: f"height_{i}", 3: f"width_{i}"} for i, n in enumerate(names)}, **{k: {0: "n"} for k in outputs}}
    data = _trace(SharpMaskGraph(model.eval()).eval(), tuple(canvases), names, outputs, axes, opset)
    return _write_with_metadata(data, out, model, spec)


def _write_with_metadata(data: bytes, out: str | Path, model: nn.Module, runtime: dict) -> Path:
    import onnx  # the [export] extra

    from maskkit.atomic import atomic_write

    proto = onnx.load_from_string(data)
    info = model.info
    meta = {
        "maskkit_export_format": EXPORT_FORMAT,
        "maskkit_config": config_to_json(info.config),
        "class_names": json.dumps(list(info.class_names)),
        "cat_ids": json.dumps([int(c) for c in info.cat_ids]),
        "maskkit_runtime": json.dumps(runtime),
    }
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    proto.producer_name = "maskkit"
    payload = proto.SerializeToString()
    return atomic_write(out, lambda tmp: Path(tmp).write_bytes(payload))


def export_file(weights: str | Path, out: str | Path | None = None, opset: int = DEFAULT_OPSET) -> Path:
    """``maskkit export --weights FILE``: the model file's pipeline -> ``out`` (default:
    ``FILE`` with suffix ``.onnx``)."""
    weights = Path(weights)
    model = load_model(weights)
    out = Path(out) if out is not None else weights.with_suffix(".onnx")
    if out.resolve() == weights.resolve():
        raise MaskkitError(f"{out}: the export would overwrite the model file; choose another --out")
    return export_model(model, out, opset)
